"""Configuration of ``survey-deblend run``: catalog, images, model, cluster and output in one object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from survey_deblend.config.catalog import CatalogConfig
from survey_deblend.config.images import ImagesConfig


@dataclass(frozen=True)
class ModelConfig:
    """The checkpoint to run and how; ``checkpoint: null`` means the one shipped in the package."""

    checkpoint: Path | None = None
    batch_size: int = 1024
    device: str | None = None  # None: cuda when the worker has one, else cpu
    bf16: bool = False
    compile: bool = False
    stamp_size_pix: int | None = None  # cutout side in source pixels; None: the model's field of view
    # Decode and measure the reconstruction with HSM (e1_recon, e2_recon); about 10 ms a galaxy on one CPU core.
    # False leaves those two columns null and runs several times faster.
    measure_recon: bool = True


@dataclass(frozen=True)
class ClusterConfig:
    """``local``, ``local-cuda``, ``slurm``, ``pbs`` or a scheduler address ``tcp://host:port``."""

    kind: str = "local"
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str = "auto"  # per worker of a local cluster
    dashboard_address: str = ":8787"
    jobqueue_config: Path | None = None  # cluster/slurm.yaml or cluster/pbs.yaml
    jobs: int = 1
    connect_timeout_s: float = 30.0
    wait_for_workers_s: float = 600.0  # a batch queue may take a while to start the first worker


@dataclass(frozen=True)
class OutputConfig:
    """Where the Parquet parts and the manifest go, and how big a partition may be."""

    out: Path = Path("sva1-shapes")
    partition_rows: int = 2000
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True)
class RunConfig:
    """Everything ``run`` needs; loaded from ``pipelines/*.yaml`` plus CLI overrides."""

    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

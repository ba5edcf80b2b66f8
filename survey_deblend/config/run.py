"""Configuration of ``survey-deblend run``: catalog, images, model, cluster and output in one object."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from survey_deblend.config.catalog import CatalogConfig
from survey_deblend.config.hashing import NOT_HASHED
from survey_deblend.config.images import ImagesConfig


@dataclass(frozen=True)
class ModelConfig:
    """The checkpoint to run and how; ``checkpoint: null`` means the one shipped in the package.

    The checkpoint enters the configuration hash by its file hash (the model id), not by its path.
    """

    checkpoint: Path | None = field(default=None, metadata=NOT_HASHED)
    batch_size: int = field(default=1024, metadata=NOT_HASHED)
    device: str | None = field(default=None, metadata=NOT_HASHED)  # None: cuda when the worker has one, else cpu
    bf16: bool = field(default=False, metadata=NOT_HASHED)
    compile: bool = field(default=False, metadata=NOT_HASHED)
    stamp_size_pix: int | None = None  # cutout side in source pixels; None: the model's field of view
    # Decode and measure the reconstruction with HSM (e1_recon, e2_recon); about 10 ms a galaxy on one CPU core.
    # False leaves those two columns null and runs several times faster.
    measure_recon: bool = True
    # Metacalibration (calibration stage): the five sheared images of each usable stamp through the network give
    # r11..r22 and e1_mcal, e2_mcal (ensemble shear <R>^-1 <e_mcal>). False leaves those columns null and the
    # other columns exactly as they are with it on; about 6x the network's work per galaxy (docs/performance.md).
    metacal: bool = True
    # Symmetrize the calibrated shape under a 90-degree turn, e_mcal = [e(noshear) - e(turned noshear)] / 2: removes
    # the network's own additive bias (c 0.006 -> 0.0001 on the paired LSST set) for one more image per galaxy.
    metacal_symmetrize: bool = True
    # Metacalibration shears a cut this much wider on every side than the model's stamp and crops the five images
    # to the model's stamp afterwards: a stamp sheared on its own pulls zeros in at its edges and loses the light
    # the shear moves in, which the network reads as shape (m1 -0.02 without a margin on the paired LSST set;
    # docs/performance.md). 2.4 arcsec: 12 LSST / 10 DES pixels.
    metacal_margin_arcsec: float = 2.4

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.stamp_size_pix is not None and self.stamp_size_pix < 3:
            raise ValueError(f"stamp_size_pix must be at least 3 pixels (or null), got {self.stamp_size_pix}")
        if not 0.0 <= self.metacal_margin_arcsec <= 30.0:
            raise ValueError(f"metacal_margin_arcsec must be between 0 and 30 arcsec, got {self.metacal_margin_arcsec}")
        if self.device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"device must be cpu, cuda, cuda:N, mps or null, got {self.device!r}")

    @property
    def fetch_margin_arcsec(self) -> float:
        """Extra cut on every side of a stamp: ``metacal_margin_arcsec`` with metacal on, else none."""
        return float(self.metacal_margin_arcsec) if self.metacal else 0.0


@dataclass(frozen=True)
class ClusterConfig:
    """``local``, ``local-cuda``, ``slurm``, ``pbs`` or a scheduler address ``tcp://host:port``."""

    kind: str = "local"
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str = "auto"  # per worker of a local cluster
    dashboard_address: str = ":8787"
    # a dask-jobqueue YAML (e.g. cluster/slurm.yaml) merged into dask.config; None: ~/.config/dask as it is
    jobqueue_config: Path | None = None
    jobs: int = 1
    connect_timeout_s: float = 30.0
    wait_for_workers_s: float = 600.0  # a batch queue may take a while to start the first worker

    def __post_init__(self) -> None:
        for name in ("n_workers", "threads_per_worker"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class OutputConfig:
    """Where the Parquet parts and the manifest go, and how big a partition may be."""

    out: Path = field(default=Path("sva1-shapes"), metadata=NOT_HASHED)
    partition_rows: int = 2000
    overwrite: bool = field(default=False, metadata=NOT_HASHED)
    progress: bool = field(default=True, metadata=NOT_HASHED)
    # shear catalogs of at least this many rows are selected by the workers into out/_staging and read back by
    # the partition tasks, so that the client stays small (``pipeline.staging``); smaller ones on the client
    stage_min_rows: int = field(default=1_000_000, metadata=NOT_HASHED)

    def __post_init__(self) -> None:
        if self.partition_rows < 1:
            raise ValueError(f"partition_rows must be at least 1, got {self.partition_rows}")


@dataclass(frozen=True)
class RunConfig:
    """Everything ``run`` needs; loaded from ``pipelines/*.yaml`` plus CLI overrides.

    Fields marked ``NOT_HASHED`` (the whole cluster section, concurrency, progress, ...) cannot change the output
    rows and stay out of the configuration hash, so a resumed run on another cluster still matches.
    """

    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig, metadata=NOT_HASHED)
    output: OutputConfig = field(default_factory=OutputConfig)

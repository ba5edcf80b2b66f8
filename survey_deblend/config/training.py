"""Configuration of ``survey-deblend train``: data, architecture, the three stages, outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SimulateStep:
    """How to make the training set when ``data.path`` holds none yet (``make_lsst_dataset`` arguments)."""

    n: int = 20000
    seed: int = 1
    kind: str = "blends"
    workers: int = 2


@dataclass(frozen=True)
class DataConfig:
    """The simulated LSST data set (contract: ``sim.dataset``) and the held-out split."""

    path: Path = Path("data/lsst-train")
    val_fraction: float = 0.1
    max_samples: int | None = None  # use only the first n samples (quick runs)
    simulate: SimulateStep | None = None  # made when ``path`` has no manifest.json


@dataclass(frozen=True)
class StageConfig:
    """Optimisation settings of one training stage."""

    epochs: int = 5
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    kl_beta: float = 1e-3  # weight of the KL term per (latent dimension-summed) KL, relative to the pixel loss
    latent_weight: float = 0.0  # deblender: weight of the loss on the latent of the training-1 encoder


@dataclass(frozen=True)
class ModelShape:
    """Architecture hyper-parameters (``models.networks.Architecture``)."""

    latent_dim: int = 32
    channels: tuple[int, int, int] = (16, 32, 64)
    hidden: int = 128
    regressor_hidden: int = 128


@dataclass(frozen=True)
class FlowStageConfig:
    """The flow head (``survey-deblend train flow``): optimisation, ``models.flow.FlowArchitecture``, files.

    It trains on the frozen deblender latents of ``checkpoint`` (None: ``output``, the trained model) and writes
    that checkpoint plus the flow to ``flow.output`` (None: back to the same file). ``data`` (None: the top-level
    ``data``) should be scenes the encoder never saw: on its own training scenes the latent is sharper than on
    new ones, and a posterior fitted there is too narrow elsewhere.
    """

    epochs: int = 20
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 0.0
    mask_draws: int = 2  # band-dropout realisations of the training latents (encoded once, then cycled)
    context_dim: int = 16
    embed_hidden: int = 64
    transforms: int = 3
    z_transforms: int = 2
    bins: int = 8
    hidden: tuple[int, ...] = (32, 32)
    samples: int = 16
    checkpoint: Path | None = None
    output: Path | None = None
    data: DataConfig | None = None


@dataclass(frozen=True)
class TrainingConfig:
    """Everything ``train`` needs; loaded from ``pipelines/train_lsst.yaml`` plus ``--set`` overrides."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelShape = field(default_factory=ModelShape)
    vae: StageConfig = field(default_factory=StageConfig)
    deblender: StageConfig = field(default_factory=lambda: StageConfig(latent_weight=0.1))
    regressor: StageConfig = field(default_factory=lambda: StageConfig(epochs=20, lr=2e-3))
    flow: FlowStageConfig = field(default_factory=FlowStageConfig)
    work_dir: Path = Path("train-work")  # per-stage state files (resume) and best weights
    output: Path = Path("survey_deblend/weights/deblender.pt")
    seed: int = 0
    device: str | None = None  # None: cuda when available, else cpu
    bf16: bool = True  # autocast on CUDA only
    num_threads: int | None = None  # torch CPU threads
    beta: float = 2.5  # Arcelin normalization
    band_dropout: float = 0.1  # probability that each band is absent in a training input
    u_dropout: float = 0.5  # extra probability that u is absent (DES has no u)
    progress: bool = True

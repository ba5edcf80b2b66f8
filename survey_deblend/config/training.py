"""Configuration of ``survey-deblend train``: data, architecture, the three stages, outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from survey_deblend.config.hashing import NOT_HASHED


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
    """Optimisation and seeding settings of one training stage.

    Epoch k of a stage draws from the seeds ``(seed, seed_stream, k)`` alone (``training.loop.epoch_rng``), so a
    resumed run continues exactly as the uninterrupted one would. Every stage needs its own ``seed_stream``;
    ``TrainingConfig``'s defaults give the VAE 1, the deblender 2, the regressor 3. ``epochs`` is not hashed: a
    finished stage may be extended and resumes from its state file.
    """

    seed_stream: int  # this stage's random stream, different for every stage
    epochs: int = field(default=5, metadata=NOT_HASHED)
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    kl_beta: float = 1e-3  # weight of the KL term per (latent dimension-summed) KL, relative to the pixel loss
    latent_weight: float = 0.0  # deblender: weight of the loss on the latent of the training-1 encoder
    grad_clip_norm: float = 10.0  # the gradients' global norm is clipped to this before every step
    # Networks this stage creates are initialised after torch.manual_seed(seed + init_seed); the deblender
    # starts from the VAE encoder's weights and creates none.
    init_seed: int = 0

    def __post_init__(self) -> None:
        if not self.grad_clip_norm > 0:
            raise ValueError(f"grad_clip_norm must be positive, got {self.grad_clip_norm}")


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

    seed_stream: int = 9  # the flow stage's random stream (training.loop.epoch_rng)
    grad_clip_norm: float = 10.0
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
    # A section given in a YAML file or by --set keeps these defaults for the keys it leaves out.
    vae: StageConfig = field(default_factory=lambda: StageConfig(seed_stream=1, init_seed=0))
    deblender: StageConfig = field(default_factory=lambda: StageConfig(seed_stream=2, latent_weight=0.1))
    regressor: StageConfig = field(
        default_factory=lambda: StageConfig(seed_stream=3, init_seed=3, epochs=20, lr=2e-3)
    )
    # the flow stage fingerprints its own section (training/flow.py); the other stages must not see it
    flow: FlowStageConfig = field(default_factory=FlowStageConfig, metadata=NOT_HASHED)
    work_dir: Path = Path("train-work")  # per-stage state files (resume) and best weights
    output: Path = field(default=Path("survey_deblend/weights/deblender.pt"), metadata=NOT_HASHED)
    seed: int = 0
    device: str | None = None  # None: cuda when available, else cpu
    bf16: bool = True  # autocast on CUDA only
    num_threads: int | None = field(default=None, metadata=NOT_HASHED)  # torch CPU threads
    beta: float = 2.5  # Arcelin normalization
    band_dropout: float = 0.1  # probability that each band is absent in a training input
    u_dropout: float = 0.5  # extra probability that u is absent (DES has no u)
    progress: bool = field(default=True, metadata=NOT_HASHED)

    def __post_init__(self) -> None:
        streams = [self.vae.seed_stream, self.deblender.seed_stream, self.regressor.seed_stream]
        if len(set(streams)) != len(streams):
            raise ValueError(f"vae, deblender and regressor need different seed_stream values, got {streams}")

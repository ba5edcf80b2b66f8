"""Configuration of the simulation stage: LSST training / ring sets and the DES-like survey field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from survey_deblend.errors import ConfigError

RING_VARIANTS = 8  # 2 orientations (0, 90 deg) x 4 applied shears (+g1, -g1, +g2, -g2) per base scene
SHEAR_KINDS = ("ring", "paired")  # sets made of RING_VARIANTS variants per base scene under one constant shear


@dataclass(frozen=True)
class LsstSimConfig:
    """An LSST stamp data set (``survey-deblend simulate lsst``); see ``survey_deblend.sim.lsst``."""

    n: int = 1000
    seed: int = 0
    kind: Literal["blends", "ring", "paired"] = "blends"
    shard_size: int = 1000
    workers: int = 1
    des_pairs: bool = False  # also render every scene as DES would see it (pixel scale, PSFs, depth, grizY)
    stamp_size: int = 45
    # Side of the square the neighbours are drawn in (pixels, centred); None: the stamp. A stamp wider than this
    # is the same scenes with a margin around them (metacalibration's paired sets, benchmarks/metacal.py).
    neighbour_field_pix: int | None = None
    psf_model: Literal["moffat", "kolmogorov"] = "moffat"
    central_mag_min: float = 20.0
    central_mag_max: float = 25.3
    neighbour_mag_min: float = 20.0
    neighbour_mag_max: float = 27.0
    neighbour_mean: float = 1.5  # Poisson mean of the number of neighbours (capped at max_neighbours)
    max_neighbours: int = 3
    min_separation_arcsec: float = 0.5
    centre_jitter_pix: float = 0.5  # the central sits within +-this of the stamp centre, in pixels
    ring_shear: float = 0.02  # the constant shear of ring and paired sets (``simulate lsst --shear``)

    def __post_init__(self) -> None:
        checks = [
            (self.n >= 1, "n", "must be at least 1"),
            (self.shard_size >= 1, "shard_size", "must be at least 1"),
            (self.workers >= 1, "workers", "must be at least 1"),
            (self.stamp_size >= 9 and self.stamp_size % 2 == 1, "stamp_size", "must be odd and at least 9"),
            (self.neighbour_field_pix is None or self.neighbour_field_pix >= 1, "neighbour_field_pix",
             "must be at least 1 (or null)"),
            (self.central_mag_min < self.central_mag_max, "central_mag_max", "must exceed central_mag_min"),
            (self.neighbour_mag_min < self.neighbour_mag_max, "neighbour_mag_max", "must exceed neighbour_mag_min"),
            (self.neighbour_mean >= 0, "neighbour_mean", "must be >= 0"),
            (self.max_neighbours >= 0, "max_neighbours", "must be >= 0"),
            (0 <= self.centre_jitter_pix <= 2, "centre_jitter_pix", "must be in [0, 2]"),
            (0 < self.ring_shear < 0.2, "ring_shear", "must be in (0, 0.2)"),
        ]
        if self.kind in SHEAR_KINDS:
            multiple = f"must be a multiple of {RING_VARIANTS} for a {self.kind} set"
            checks.append((self.n % RING_VARIANTS == 0, "n", multiple))
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(f"{key} = {getattr(self, key)!r}: {message}")


@dataclass(frozen=True)
class FieldSimConfig:
    """A DES-like survey field (``survey-deblend simulate field``); see ``survey_deblend.sim.field``."""

    n_tiles: int = 2
    tile_size_pix: int = 1000
    overlap_pix: int | None = None  # rows neighbouring tiles share, like DES tiles overlap; None: tile_size_pix // 10
    seed: int = 0
    ra_center_deg: float = 82.5
    dec_center_deg: float = -50.0
    density_per_arcmin2: float = 60.0  # galaxies to mag_max, per square arcmin
    mag_min: float = 18.0
    mag_max: float = 26.0  # i magnitude of the faintest galaxy drawn (fainter ones are not rendered)
    detection_snr: float = 5.0  # objects above this SNR_W enter the catalogs
    psf_model: Literal["moffat", "kolmogorov"] = "moffat"
    unmeasured_fraction: float = 0.03  # catalog rows im3shape "failed" on (-9999 row), beyond the faint ones
    error_flag_fraction: float = 0.03
    info_flag_fraction: float = 0.08
    shear: tuple[float, float] | None = None  # one (g1, g2) on the whole field, positions too; None: per galaxy

    def __post_init__(self) -> None:
        checks = [
            (self.n_tiles >= 1, "n_tiles", "must be at least 1"),
            (self.tile_size_pix >= 64, "tile_size_pix", "must be at least 64"),
            (0 <= self.overlap < self.tile_size_pix // 2, "overlap_pix", "must be in [0, tile_size_pix / 2)"),
            (self.density_per_arcmin2 > 0, "density_per_arcmin2", "must be positive"),
            (self.mag_min < self.mag_max, "mag_max", "must exceed mag_min"),
            (-85 < self.dec_center_deg < 85, "dec_center_deg", "must be in (-85, 85)"),
        ]
        if self.shear is not None:
            ok = len(self.shear) == 2 and float(self.shear[0]) ** 2 + float(self.shear[1]) ** 2 < 0.2**2
            checks.append((ok, "shear", "must be two numbers g1, g2 with |g| < 0.2"))
        for name in ("unmeasured_fraction", "error_flag_fraction", "info_flag_fraction"):
            checks.append((0 <= getattr(self, name) < 1, name, "must be in [0, 1)"))
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(f"{key} = {getattr(self, key)!r}: {message}")

    @property
    def overlap(self) -> int:
        """Pixel rows shared by neighbouring tiles."""
        return self.tile_size_pix // 10 if self.overlap_pix is None else self.overlap_pix


@dataclass(frozen=True)
class SimConfig:
    """``pipelines/sim_lsst.yaml``: one section per kind of simulation."""

    lsst: LsstSimConfig = field(default_factory=LsstSimConfig)
    field: FieldSimConfig = field(default_factory=FieldSimConfig)

"""Scenes: which galaxies sit where in one stamp (a central galaxy and its neighbours), before rendering.

Every scene is drawn from its own random stream (``np.random.SeedSequence([seed, index])``), so a data set
is the same whatever the number of worker processes or the shard size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from survey_deblend.config.sim import RING_VARIANTS, SHEAR_KINDS, LsstSimConfig
from survey_deblend.shapes import rotate_ellipticity
from survey_deblend.sim.population import Population, draw_population


@dataclass(frozen=True)
class Scene:
    """Galaxy 0 is the central; ``x, y`` are arcsec from the stamp centre (+x West, +y North)."""

    population: Population
    x: np.ndarray
    y: np.ndarray
    pair_id: int = -1  # ring sets: the base scene this variant was made from
    g1_applied: float = 0.0  # ring sets: the constant shear applied to the whole scene
    g2_applied: float = 0.0

    @property
    def n_neighbours(self) -> int:
        return len(self.population) - 1


def sample_rng(seed: int, *index: int) -> np.random.Generator:
    """The random stream of one sample (or sub-stream), independent of how samples are split over workers."""
    return np.random.default_rng(np.random.SeedSequence([seed, *index]))


def draw_blend_scene(rng: np.random.Generator, cfg: LsstSimConfig, pixel_scale_arcsec: float) -> Scene:
    """A central galaxy near the stamp centre plus ``min(Poisson(neighbour_mean), max_neighbours)`` neighbours.

    Neighbours are uniform over the stamp (or the central ``neighbour_field_pix`` square of it), at least
    ``min_separation_arcsec`` from the central.
    """
    n_nb = int(min(rng.poisson(cfg.neighbour_mean), cfg.max_neighbours))
    mag_min = np.array([cfg.central_mag_min] + [cfg.neighbour_mag_min] * n_nb)
    mag_max = np.array([cfg.central_mag_max] + [cfg.neighbour_mag_max] * n_nb)
    population = draw_population(rng, n_nb + 1, mag_min, mag_max)  # galaxy 0: the central
    jitter = rng.uniform(-cfg.centre_jitter_pix, cfg.centre_jitter_pix, 2) * pixel_scale_arcsec
    half = (cfg.neighbour_field_pix or cfg.stamp_size) / 2 * pixel_scale_arcsec
    offsets = rng.uniform(-half, half, (n_nb, 2))
    close = np.hypot(offsets[:, 0], offsets[:, 1]) < cfg.min_separation_arcsec
    while close.any():
        offsets[close] = rng.uniform(-half, half, (int(close.sum()), 2))
        close = np.hypot(offsets[:, 0], offsets[:, 1]) < cfg.min_separation_arcsec
    x = np.concatenate([[jitter[0]], jitter[0] + offsets[:, 0]])
    y = np.concatenate([[jitter[1]], jitter[1] + offsets[:, 1]])
    return Scene(population, x, y)


def ring_variant(base: Scene, variant: int, shear: float, pair_id: int) -> Scene:
    """Variant ``variant`` (0..7) of a base scene: rotated by 0 or 90 degrees, then sheared by one of
    (+g, 0), (-g, 0), (0, +g), (0, -g) as a whole (positions and shapes), so pairs cancel shape noise."""
    angle = (variant % 2) * np.pi / 2
    g1, g2 = [(shear, 0.0), (-shear, 0.0), (0.0, shear), (0.0, -shear)][variant // 2]
    pop = base.population
    e1, e2 = rotate_ellipticity(pop.e1_intrinsic, pop.e2_intrinsic, angle)
    c, s = np.cos(angle), np.sin(angle)
    xr, yr = c * base.x - s * base.y, s * base.x + c * base.y
    norm = 1.0 / np.sqrt(1.0 - g1**2 - g2**2)  # GalSim's shear matrix (area preserving)
    x = norm * ((1 + g1) * xr + g2 * yr)
    y = norm * (g2 * xr + (1 - g1) * yr)
    n = len(pop)
    sheared = pop.with_(e1_intrinsic=e1, e2_intrinsic=e2, g1_shear=np.full(n, g1), g2_shear=np.full(n, g2))
    return Scene(sheared, x, y, pair_id=pair_id, g1_applied=g1, g2_applied=g2)


def draw_scene(cfg: LsstSimConfig, index: int, pixel_scale_arcsec: float) -> Scene:
    """The scene of sample ``index`` of a data set with ``cfg`` (blends, or ring/paired variants of base scenes)."""
    if cfg.kind in SHEAR_KINDS:
        pair_id, variant = divmod(index, RING_VARIANTS)
        base = draw_blend_scene(sample_rng(cfg.seed, pair_id), cfg, pixel_scale_arcsec)
        return ring_variant(base, variant, cfg.ring_shear, pair_id)
    return draw_blend_scene(sample_rng(cfg.seed, index), cfg, pixel_scale_arcsec)

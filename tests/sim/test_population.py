"""The galaxy population: shape and shear distributions, magnitude limits, blending, redshift from colours."""

from __future__ import annotations

import numpy as np

from survey_deblend.config.sim import LsstSimConfig
from survey_deblend.shapes import compose_shear
from survey_deblend.sim.population import E_MAX, SHEAR_MAX, draw_population
from survey_deblend.sim.scenes import draw_scene


def test_ellipticity_and_shear_distributions():
    pop = draw_population(np.random.default_rng(2), 20000, 20.0, 25.3)
    e = np.stack([pop.e1_intrinsic, pop.e2_intrinsic])
    assert 0.22 < e.std(axis=1).min() and e.std(axis=1).max() < 0.27  # ~0.26 per component, truncated
    assert np.hypot(*e).max() < E_MAX and abs(e.mean()) < 0.01
    g = np.hypot(pop.g1_shear, pop.g2_shear)
    assert g.max() <= SHEAR_MAX and g.std() > 0.01  # a distribution, never one shear for the whole set
    np.testing.assert_allclose(pop.label, compose_shear(*e, pop.g1_shear, pop.g2_shear))
    assert pop.mag_i.min() >= 20.0 and pop.mag_i.max() <= 25.3
    assert np.median(pop.z) > 0.5 and 0.0 < pop.bulge_frac.min() and pop.bulge_frac.max() < 1.0


def test_redshift_is_learnable_from_colours():
    """A 10-nearest-neighbour regression on noiseless ugrizy colours predicts z to a few per cent."""
    pop = draw_population(np.random.default_rng(9), 6000, 20.0, 25.3)
    colours = np.diff(pop.mag_lsst, axis=1)
    train, test = slice(0, 5000), slice(5000, None)
    d2 = ((colours[test, None, :] - colours[None, train, :]) ** 2).sum(axis=-1)
    z_pred = np.median(pop.z[train][np.argsort(d2, axis=1)[:, :10]], axis=1)
    dz = (z_pred - pop.z[test]) / (1 + pop.z[test])
    assert 1.4826 * np.median(np.abs(dz - np.median(dz))) < 0.05
    assert np.corrcoef(z_pred, pop.z[test])[0, 1] > 0.9
    # ... while a single colour alone is a much worse predictor: the information is in the colour vector.
    assert abs(np.corrcoef(colours[:, 1], pop.z)[0, 1]) < 0.95


def test_scenes_blend_like_lsst():
    cfg = LsstSimConfig(n=400, seed=1)
    scenes = [draw_scene(cfg, i, 0.2) for i in range(400)]
    n_nb = np.array([s.n_neighbours for s in scenes])
    assert n_nb.max() <= 3 and 0.1 < np.mean(n_nb == 0) < 0.4 and np.mean(n_nb >= 2) > 0.2
    assert all(s.population.mag_i[0] <= 25.3 for s in scenes)
    neighbour_mags = np.concatenate([s.population.mag_i[1:] for s in scenes])
    assert neighbour_mags.max() <= 27.0 and np.mean(neighbour_mags > 25.3) > 0.4  # fainter neighbours
    centres = np.array([[s.x[0], s.y[0]] for s in scenes])
    assert np.abs(centres).max() <= 0.5 * 0.2 + 1e-12  # within half a pixel of the stamp centre


def test_blends_and_isolated_share_the_noise(blends):
    n_nb = blends.read("n_neighbours", slice(None))
    blend, iso = blends.read("blend", slice(None)), blends.read("isolated", slice(None))
    alone = n_nb == 0
    assert alone.any() and (~alone).any()
    np.testing.assert_array_equal(blend[alone], iso[alone])
    assert np.all(np.abs(blend[~alone] - iso[~alone]).max(axis=(1, 2, 3)) > 0)
    b = blends.read("blendedness", slice(None))
    assert np.all(b[alone] == 0) and np.all((b >= 0) & (b <= 1)) and b[~alone].max() > 0
    assert np.all(blends.read("snr", slice(None)) > 0)

"""PSF models (simulation and im3shape) and stamp noise levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from survey_deblend.calibration import (
    PSFModel,
    border_noise_sigma,
    im3shape_psf_model,
    sim_psf_model,
    weight_noise_sigma,
)
from survey_deblend.calibration.metacal import _grid, _kernels, _psf_terms, _table, fft_size
from survey_deblend.calibration.psf import radial_table, table_lookup
from survey_deblend.errors import InputError
from survey_deblend.sim.psf import psf_for


def test_sim_model_is_the_simulations_psf():
    model = sim_psf_model("LSST", ("g", "i"), 3)
    assert model.fwhm.shape == (3, 2) and np.all(model.g1 == 0)
    ours = model.galsim_psf(1, 1)
    theirs = psf_for("LSST", "i")
    for k in (0.5, 3.0, 8.0):
        assert ours.kValue(k, 0.0).real == pytest.approx(theirs.kValue(k, 0.0).real, abs=1e-6)


def test_radial_table_matches_galsim_and_interpolates():
    prof = PSFModel(np.ones((1, 1)), np.zeros((1, 1)), np.zeros((1, 1))).galsim_psf(0, 0)
    table = torch.as_tensor(radial_table("moffat"))
    q = torch.tensor([0.0, 0.37, 2.5, 7.1])
    expected = [prof.kValue(float(x), 0.0).real for x in q]
    np.testing.assert_allclose(table_lookup(table, q).numpy(), expected, atol=2e-6)
    assert float(table_lookup(table, torch.tensor([1e4]))) == 0.0


def test_im3shape_model_scales_bands_and_flags_bad_rows():
    fwhm_px = np.array([3.6, -9999.0, np.nan, 4.0])
    model = im3shape_psf_model(fwhm_px, np.array([0.01, 0.0, 0.0, -9999.0]), np.array([0.02, 0.0, 0.0, 0.0]))
    assert model.fwhm.shape == (4, 5)
    r = model.fwhm[0, 1]
    assert r == pytest.approx(3.6 * 0.2637)
    assert model.fwhm[0, 0] / r == pytest.approx(1.12 / 0.96)  # DES g / r (surveycodex)
    np.testing.assert_array_equal(model.usable.all(axis=1), [True, False, False, False])
    np.testing.assert_allclose(model.g1[0], 0.01)
    with pytest.raises(InputError, match="fwhm_unit"):
        im3shape_psf_model(fwhm_px, fwhm_px, fwhm_px, fwhm_unit="furlong")


@pytest.mark.parametrize("g", [(0.0, 0.0), (0.15, 0.0), (-0.08, 0.12)])
def test_target_never_amplifies_noise(g):
    """T(k) <= P(S k) for every applied shear: the deconvolve-reconvolve kernel is at most 1 before any clamp."""
    psf = PSFModel(np.array([[0.8]]), np.array([[g[0]]]), np.array([[g[1]]]))
    grid = _grid(45, fft_size(45), 0.01, 1, "cpu")
    terms = _psf_terms(psf, 0.2, 0.01, torch.device("cpu"))
    table = _table("moffat", "cpu")
    target = table_lookup(table, terms["c_target"] * grid.k_abs)
    for s in range(5):
        kxx, kxy, kyy = grid.k2[s]
        p = table_lookup(table, terms["c"] * torch.sqrt(terms["xx"] * kxx + 2 * terms["xy"] * kxy + terms["yy"] * kyy))
        assert torch.all(target <= p + 1e-6)
    kern = _kernels(grid, terms, table, flip=False)
    assert float(kern.max()) <= 1.0 + 1e-6 and float(kern[0, 0, 0, 0]) == pytest.approx(1.0)


def test_border_mad_is_robust_to_a_neighbour_on_the_border():
    rng = np.random.default_rng(2)
    images = rng.normal(0.0, 5.0, (200, 2, 45, 45)).astype(np.float32)
    images[:, 1] = 0.0
    y, x = np.indices((45, 45))
    images[:100, 0] += 400.0 * np.exp(-((x - 2) ** 2 + (y - 20) ** 2) / 8.0)  # a bright neighbour on the edge
    sigma = border_noise_sigma(images)
    assert sigma.shape == (200, 2) and np.all(sigma[:, 1] == 0)
    assert np.median(sigma[100:, 0]) == pytest.approx(5.0, rel=0.03)
    assert np.median(sigma[:100, 0]) == pytest.approx(5.0, rel=0.12)  # a plain std: x4 (below)
    assert np.std(images[:100, 0, :, :3]) > 20


def test_weight_map_noise():
    w = np.full((2, 2, 9, 9), 0.25)
    w[1, 1] = 0.0
    w[0, 1, :2] = 0.0  # masked pixels do not count
    np.testing.assert_allclose(weight_noise_sigma(w), [[2.0, 2.0], [2.0, 0.0]])


def test_seeded_noise_follows_the_galaxy_not_the_batch():
    from survey_deblend.calibration import seeded_noise

    ids = np.array([3_000_000_007, 12, 5])
    sigma = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 0.0]])
    whole = seeded_noise(ids, sigma, 35, seed=1)
    part = seeded_noise(ids[1:], sigma[1:], 35, seed=1)
    np.testing.assert_array_equal(whole[1:], part)
    assert np.all(whole[2, 1] == 0) and whole[0, 1].std() == pytest.approx(2.0, rel=0.1)
    assert not np.array_equal(seeded_noise(ids, sigma, 35, seed=2), whole)

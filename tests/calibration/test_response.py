"""The response R on cases whose answer is known, the ensemble shear and the paired-test estimator."""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from survey_deblend.calibration import (
    PSFModel,
    ensemble_shear,
    metacal_response,
    paired_shear_bias,
    response_matrix,
)
from survey_deblend.shapes import measure_hsm_batch

S, SCALE = 45, 0.2


def test_hsm_on_noiseless_gaussians_has_the_analytic_response():
    """A Gaussian galaxy through an elliptical Gaussian PSF: REGAUSS recovers the PSF-free shape exactly, so its
    response to shear is that of the shear-convention ellipticity, de/dg = 1 - e^2 (complex): R11 = 1 - Re e^2,
    R22 = 1 + Re e^2, R12 = R21 = -Im e^2."""
    rng = np.random.default_rng(3)
    n = 5
    e = rng.uniform(-0.3, 0.3, (n, 2))
    psf = PSFModel(np.full((n, 1), 0.75), rng.uniform(-0.06, 0.06, (n, 1)), rng.uniform(-0.06, 0.06, (n, 1)),
                   profile="gaussian")  # fmt: skip
    gals = [galsim.Gaussian(sigma=0.35).shear(g1=a, g2=b).withFlux(1e4) for a, b in e]
    images = np.array([galsim.Convolve(g, psf.galsim_psf(i, 0)).drawImage(nx=S, ny=S, scale=SCALE).array
                       for i, g in enumerate(gals)], dtype=np.float32)[:, None]  # fmt: skip
    targets = [psf.galsim_target(i, 0, 0.01).drawImage(nx=S, ny=S, scale=SCALE).array for i in range(n)]

    def hsm(stack: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert stack.shape == (5 * n, 1, S, S) and mask.shape == (5 * n, 1)  # one call, 5N stamps
        out = np.array([measure_hsm_batch(img[None, 0], targets[i % n], SCALE) for i, img in enumerate(stack)])
        return out[:, 0, 0], out[:, 1, 0]

    res = metacal_response(images, psf, SCALE, hsm, fixnoise=False)
    z2 = (e[:, 0] + 1j * e[:, 1]) ** 2
    np.testing.assert_allclose(res.e1, e[:, 0], atol=1e-4)
    np.testing.assert_allclose(res.e2, e[:, 1], atol=1e-4)
    np.testing.assert_allclose(res.R[:, 0, 0], 1 - z2.real, atol=1e-3)
    np.testing.assert_allclose(res.R[:, 1, 1], 1 + z2.real, atol=1e-3)
    np.testing.assert_allclose(res.R[:, 0, 1], -z2.imag, atol=1e-3)
    np.testing.assert_allclose(res.R[:, 1, 0], -z2.imag, atol=1e-3)
    assert set(res.columns) >= {"r11", "r12", "r21", "r22"}


def _gradient_shapes(stack: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An estimator that sees only the noise's correlations: anisotropy of the image gradients (central
    differences, so that an isotropic noise field has no additive e)."""
    img = stack[:, 0, 8:-8, 8:-8].astype(np.float64)
    gx, gy = (img[:, 1:-1, 2:] - img[:, 1:-1, :-2]), (img[:, 2:, 1:-1] - img[:, :-2, 1:-1])
    xx, yy, xy = (gx * gx).sum((1, 2)), (gy * gy).sum((1, 2)), (gx * gy).sum((1, 2))
    return (xx - yy) / (xx + yy), 2 * xy / (xx + yy)


def test_fixnoise_removes_the_response_and_the_psf_imprint_of_pure_noise():
    """Pure noise has no shear response. Without fixnoise the sheared noise correlations give one (R22 ~ 7 here) and
    the elliptical PSF's deconvolution an additive e; with fixnoise both vanish within the errors."""
    n = 300
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 1.0, (n, 1, S, S)).astype(np.float32)
    psf = PSFModel(np.full((n, 1), 0.7), np.full((n, 1), 0.08), np.full((n, 1), -0.05))
    sigma = np.ones((n, 1))
    raw = metacal_response(noise, psf, SCALE, _gradient_shapes, noise_sigma=sigma, fixnoise=False)
    fixed = metacal_response(noise, psf, SCALE, _gradient_shapes, noise_sigma=sigma, fixnoise=True, seed=11)
    for res, expect_zero in ((raw, False), (fixed, True)):
        r = res.R[:, [0, 1], [0, 1]]
        mean, err = r.mean(axis=0), r.std(axis=0) / np.sqrt(n)
        e0, e0_err = np.array([res.e1.mean(), res.e2.mean()]), np.array([res.e1.std(), res.e2.std()]) / np.sqrt(n)
        if expect_zero:
            assert np.all(np.abs(mean) < 4 * err + 0.02), (mean, err)
            assert np.all(np.abs(e0) < 4 * e0_err), (e0, e0_err)
        else:
            assert np.abs(mean).max() > 1 and np.all(np.abs(mean) > 4 * err), (mean, err)
            assert np.all(np.abs(e0) > 10 * e0_err), (e0, e0_err)


def test_response_matrix_and_ensemble_shear():
    rng = np.random.default_rng(0)
    n, g = 20000, np.array([0.02, -0.01])
    R = np.array([[0.8, 0.05], [-0.03, 0.7]]) + rng.normal(0, 0.3, (n, 2, 2))
    e = np.einsum("nij,j->ni", R, g) + rng.normal(0, 0.01, (n, 2))
    g_hat, r_mean = ensemble_shear(e, R)
    np.testing.assert_allclose(g_hat, g, atol=3e-4)
    assert r_mean.shape == (2, 2)
    e[0] = np.nan  # a failed row does not poison the mean
    assert np.all(np.isfinite(ensemble_shear(e, R)[0]))
    sheared = np.zeros((5, 1, 2))
    sheared[1, 0], sheared[2, 0], sheared[3, 0], sheared[4, 0] = (0.01, 0.002), (-0.01, 0.0), (0.0, 0.009), (0, -0.009)
    np.testing.assert_allclose(response_matrix(sheared, 0.01)[0], [[1.0, 0.0], [0.1, 0.9]])


def test_paired_shear_bias_recovers_m_and_c_and_their_errors():
    """Synthetic pairs: e = (1 + m) R0 g + c + shape noise shared by the two members of a pair."""
    rng = np.random.default_rng(1)
    n_pairs, g0, m_true, c_true = 4000, 0.02, -0.03, np.array([2e-3, -1e-3])
    pair_id = np.repeat(np.arange(n_pairs), 2)
    comp = pair_id % 2
    sign = np.tile([1.0, -1.0], n_pairs)
    g = np.zeros((2 * n_pairs, 2))
    g[np.arange(2 * n_pairs), comp] = sign * g0
    shape_noise = np.repeat(rng.normal(0, 0.25, (n_pairs, 2)), 2, axis=0)
    r0 = 0.8
    e = r0 * (1 + m_true) * g + r0 * c_true + shape_noise + rng.normal(0, 1e-3, (2 * n_pairs, 2))
    R = np.broadcast_to(r0 * np.eye(2), (2 * n_pairs, 2, 2)) + rng.normal(0, 0.01, (2 * n_pairs, 2, 2))
    cal = paired_shear_bias(e, g, pair_id, R)
    raw = paired_shear_bias(e, g, pair_id)
    for j in (1, 2):
        assert cal[f"m{j}"] == pytest.approx(m_true, abs=4 * cal[f"m{j}_err"] + 1e-3)
        assert cal[f"m{j}_err"] < 5e-3
        assert raw[f"m{j}"] == pytest.approx(r0 * (1 + m_true) - 1, abs=5e-3)
    # c carries the full shape noise here (no rotated partners): check it within its error
    assert cal["c1"] == pytest.approx(c_true[0], abs=4 * cal["c1_err"])
    assert cal["n_pairs"] == n_pairs
    e[5] = np.nan  # drops pair 2 whole
    assert paired_shear_bias(e, g, pair_id, R)["n_pairs"] == n_pairs - 1


def test_the_shipped_network_runs_once_on_the_five_images(tmp_path):
    """The phase-2 path in small: LSST paired stamps -> metacal -> Predictor.predict on 5N stamps -> R."""
    from survey_deblend.calibration import sim_psf_model
    from survey_deblend.inference import Predictor
    from survey_deblend.sim.dataset import open_dataset
    from survey_deblend.sim.lsst import make_lsst_dataset

    ds = open_dataset(make_lsst_dataset(tmp_path / "p", n=16, seed=2, kind="paired"))
    blend = ds.read("blend", slice(None))
    predictor = Predictor.from_checkpoint(device="cpu")
    calls = []

    def shapes(stack, mask):
        calls.append(len(stack))
        frame = predictor.predict(stack, "ugrizy", 0.2, band_mask=mask, measure_recon=False)
        return frame["e1_pred"].to_numpy(), frame["e2_pred"].to_numpy()

    res = metacal_response(blend, sim_psf_model("LSST", tuple("ugrizy"), 16), 0.2, shapes, seed=5)
    assert calls == [80] and res.R.shape == (16, 2, 2) and np.all(np.isfinite(res.R))
    assert 0.2 < np.mean(res.R[:, [0, 1], [0, 1]]) < 2.0  # the network does respond to shear
    again = metacal_response(blend, sim_psf_model("LSST", tuple("ugrizy"), 16), 0.2, shapes, seed=5)
    np.testing.assert_array_equal(again.R, res.R)  # seeded: reproducible

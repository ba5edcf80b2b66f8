"""Every statistic on synthetic inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from survey_deblend import shapes
from survey_deblend.evaluation import metrics


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def test_fit_recovers_exact_slope_and_offset(rng):
    true = rng.normal(0, 0.25, 500)
    fit = metrics.fit_m_c(1.1 * true + 0.01, true, bootstrap=50)
    assert fit["m"] == pytest.approx(0.1, abs=1e-12)
    assert fit["c"] == pytest.approx(0.01, abs=1e-12)
    assert fit["m_err"] == pytest.approx(0.0, abs=1e-10) and fit["n"] == 500


def test_fit_bootstrap_error_matches_analytic_error(rng):
    true = rng.normal(0, 0.3, 4000)
    sigma = 0.1
    pred = 0.95 * true - 0.002 + rng.normal(0, sigma, true.size)
    fit = metrics.fit_m_c(pred, true, bootstrap=200, seed=1)
    analytic_m_err = sigma / (np.std(true) * np.sqrt(true.size))
    assert fit["m_err"] == pytest.approx(analytic_m_err, rel=0.2)
    assert fit["c_err"] == pytest.approx(sigma / np.sqrt(true.size), rel=0.2)
    assert abs(fit["m"] + 0.05) < 4 * fit["m_err"] and abs(fit["c"] + 0.002) < 4 * fit["c_err"]


def test_grouped_bootstrap_agrees_with_object_bootstrap(rng):
    true = rng.normal(0, 0.3, 30_000)
    w = rng.uniform(0.5, 2.0, true.size)
    pred = 1.02 * true + 0.003 + rng.normal(0, 0.2, true.size)
    grouped = metrics.fit_m_c(pred, true, bootstrap=200, weights=w, grouped_above=10_000)
    objects = metrics.fit_m_c(pred, true, bootstrap=200, weights=w, grouped_above=10**9)
    assert grouped["m"] == objects["m"] and grouped["c"] == objects["c"]
    assert grouped["m_err"] == pytest.approx(objects["m_err"], rel=0.2)
    assert grouped["c_err"] == pytest.approx(objects["c_err"], rel=0.2)
    exact = metrics.fit_m_c(1.1 * true + 0.01, true, bootstrap=50, grouped_above=10_000)
    assert exact["m"] == pytest.approx(0.1, abs=1e-12) and exact["m_err"] == pytest.approx(0.0, abs=1e-9)


def test_fit_is_reproducible_and_ignores_nan(rng):
    true = rng.normal(0, 0.2, 300)
    pred = 1.1 * true + 0.01 + rng.normal(0, 0.05, 300)
    a = metrics.fit_m_c(pred, true, seed=3)
    assert a == metrics.fit_m_c(pred, true, seed=3)
    pred_nan = pred.copy()
    pred_nan[:10] = np.nan
    assert metrics.fit_m_c(pred_nan, true)["n"] == 290


def test_weighted_fit_ignores_zero_weight_outliers(rng):
    true = rng.normal(0, 0.2, 200)
    pred = 1.1 * true + 0.01
    pred[:20] = 5.0  # outliers carrying zero weight
    w = np.ones(200)
    w[:20] = 0.0
    fit = metrics.fit_m_c(pred, true, bootstrap=0, weights=w)
    assert fit["m"] == pytest.approx(0.1, abs=1e-12) and fit["c"] == pytest.approx(0.01, abs=1e-12)
    assert np.isnan(fit["m_err"])
    assert metrics.fit_m_c(pred, true, bootstrap=0)["m"] != pytest.approx(0.1, abs=1e-3)


def test_rmse_and_correlation_known_values():
    true = np.array([0.0, 0.1, 0.2, 0.3])
    assert metrics.rmse(true + 0.02, true) == pytest.approx(0.02)
    assert metrics.rmse(np.array([1.0, 3.0]), np.array([0.0, 0.0]), weights=np.array([1.0, 0.0])) == 1.0
    assert metrics.correlation(2 * true + 1, true) == pytest.approx(1.0)
    assert metrics.correlation(-true, true) == pytest.approx(-1.0)


def test_pure_rotation_keeps_roundness_and_kills_correlation(rng):
    e1, e2 = rng.normal(0, 0.25, (2, 5000))
    r1, r2 = shapes.rotate_ellipticity(e1, e2, np.pi / 4)  # e -> e * i: (e1, e2) -> (-e2, e1)
    assert metrics.roundness_ratio(r1, r2, e1, e2) == pytest.approx(1.0, abs=1e-12)
    s = metrics.shape_metrics(r1, r2, e1, e2, bootstrap=20)
    assert abs(s["corr1"]) < 0.05 and abs(s["corr2"]) < 0.05
    assert s["m1"] == pytest.approx(-1.0, abs=0.05) and s["m2"] == pytest.approx(-1.0, abs=0.05)
    # the residual of a 90-degree spin-2 rotation is |e| * |1 - i| = sqrt(2) |e| per galaxy
    expected = np.sqrt(np.mean(2 * (e1**2 + e2**2)) / 2)
    assert s["rmse"] == pytest.approx(expected, rel=1e-12)
    # a small rotation: slope cos(2 theta) on each component
    t1, t2 = shapes.rotate_ellipticity(e1, e2, 0.1)
    assert metrics.fit_m_c(t1, e1)["m"] == pytest.approx(np.cos(0.2) - 1, abs=0.02)


def test_roundness_ratio_of_shrunk_predictions(rng):
    e1, e2 = rng.normal(0, 0.25, (2, 1000))
    assert metrics.roundness_ratio(0.6 * e1, 0.6 * e2, e1, e2) == pytest.approx(0.6)


def test_shape_metrics_keys_and_values(rng):
    e1, e2 = rng.normal(0, 0.2, (2, 400))
    s = metrics.shape_metrics(1.1 * e1 + 0.01, 0.9 * e2 - 0.02, e1, e2, bootstrap=10)
    assert s["n"] == 400
    assert s["m1"] == pytest.approx(0.1) and s["c1"] == pytest.approx(0.01)
    assert s["m2"] == pytest.approx(-0.1) and s["c2"] == pytest.approx(-0.02)
    assert s["corr1"] == pytest.approx(1.0) and s["corr2"] == pytest.approx(1.0)
    assert set(s) >= {"rmse", "rmse1", "rmse2", "roundness", "m1_err", "c2_err"}


def test_ring_response_known_m_and_c(rng):
    g, m_true, c_true = 0.02, 0.05, 0.003
    intrinsic = rng.normal(0, 0.3, 1000)
    ring = np.concatenate([intrinsic, -intrinsic])  # 90-degree pairs cancel in the mean
    e_plus = ring + (1 + m_true) * g + c_true
    e_minus = ring - (1 + m_true) * g + c_true
    r = metrics.ring_response(e_plus, e_minus, g)
    assert r["m"] == pytest.approx(m_true, abs=1e-10) and r["c"] == pytest.approx(c_true, abs=1e-12)
    assert r["m_err"] == pytest.approx(0.0, abs=1e-10)
    unmatched = metrics.ring_response(e_plus[:-2], e_minus, g)
    assert unmatched["m"] == pytest.approx(m_true, abs=0.05) and unmatched["m_err"] > 0
    with pytest.raises(ValueError):
        metrics.ring_response(e_plus, e_minus, 0.0)


def test_ring_response_from_labels_on_composed_shears(rng):
    """GalSim-convention labels of a 4-fold ring under +-g respond with m ~ 0; a scaled estimator with m."""
    g = 0.02
    n = 2000
    e_int = rng.uniform(0.05, 0.5, n) * np.exp(1j * rng.uniform(0, np.pi, n))
    angles = np.array([0, np.pi / 4, np.pi / 2, 3 * np.pi / 4])  # rotations of the profile
    ring = (e_int[:, None] * np.exp(2j * angles[None, :])).ravel()
    pair = np.repeat(np.arange(n), 4) * 4 + np.tile(np.arange(4), n)
    e_list, g_list, pid = [], [], []
    for sign in (1, -1):
        l1, _ = shapes.compose_shear(ring.real, ring.imag, sign * g, 0.0)
        e_list.append(l1)
        g_list.append(np.full(ring.size, sign * g))
        pid.append(pair)
    e, ga, pid = np.concatenate(e_list), np.concatenate(g_list), np.concatenate(pid)
    labels = metrics.ring_response_from_labels(e, ga, pair_id=pid)
    assert abs(labels["m"]) < 2e-3 and abs(labels["c"]) < 1e-6 and labels["g"] == g
    scaled = metrics.ring_response_from_labels(0.8 * e + 0.001, ga, pair_id=pid)
    assert scaled["m"] == pytest.approx(0.8 * (1 + labels["m"]) - 1, abs=1e-10)
    assert scaled["c"] == pytest.approx(0.001, abs=1e-10)
    # pair ids naming the base scene (shared by its four orientations) give the same answer
    base = metrics.ring_response_from_labels(0.8 * e + 0.001, ga, pair_id=pid // 4)
    assert base["m"] == pytest.approx(scaled["m"], abs=1e-10) and base["n"] == n


def test_ssim_identical_and_degraded(rng):
    yy, xx = np.mgrid[:21, :21]
    blob = np.exp(-((xx - 10) ** 2 + (yy - 10) ** 2) / 8.0) * 1000.0  # far outside [0, 1]
    truth = np.stack([blob, blob * 0.5])
    noisy = truth + rng.normal(0, 100.0, truth.shape)
    s = metrics.ssim_batch(np.stack([truth[0], noisy[0]]), np.stack([truth[0], truth[0]]))
    assert s[0] == pytest.approx(1.0) and 0 < s[1] < 0.9
    multi = metrics.ssim_batch(truth[None], truth[None])  # (N, B, S, S): bands as channels
    assert multi.shape == (1,) and multi[0] == pytest.approx(1.0)
    flat = metrics.ssim_batch(np.zeros((1, 21, 21)), np.zeros((1, 21, 21)))
    assert np.isnan(flat[0])
    # an explicit data range changes the answer (the constants scale with it)
    assert metrics.ssim_batch(noisy[:1], truth[:1], data_range=1e6)[0] > s[1]


def test_cosine_similarity():
    a = np.array([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]])
    b = np.array([[[2.0, 0.0]], [[1.0, -1.0]], [[1.0, 0.0]]])
    out = metrics.cosine_similarity_batch(a, b)
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(0.0) and np.isnan(out[2])


def test_sigma_nmad_of_gaussian_scatter(rng):
    z_true = rng.uniform(0.2, 1.5, 200_000)
    sigma = 0.05
    z_pred = z_true + 0.01 + sigma * (1 + z_true) * rng.normal(size=z_true.size)
    assert metrics.sigma_nmad(z_pred, z_true) == pytest.approx(sigma, rel=0.02)
    assert metrics.sigma_nmad(z_true + 0.3, z_true) == pytest.approx(0.0, abs=1e-12)  # a pure offset


def test_outlier_fraction_counts_exactly():
    z_true = np.zeros(10)
    z_pred = np.array([0.0, 0.1, 0.16, 0.2, -0.3, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert metrics.outlier_fraction(z_pred, z_true) == pytest.approx(0.3)
    assert metrics.outlier_fraction(z_pred, z_true, threshold=0.05) == pytest.approx(0.4)


def test_nbc_ensemble_correction():
    e = np.array([0.11, 0.21, -0.09])
    c = np.array([0.01, 0.01, 0.01])
    m = np.array([-0.1, -0.2, 0.0])
    out = metrics.nbc_corrected(e, c, m)
    np.testing.assert_allclose(out, (e - 0.01) / 0.9)
    weighted = metrics.nbc_corrected(e, c, m, weights=np.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(weighted, (e - 0.01) / 0.85)

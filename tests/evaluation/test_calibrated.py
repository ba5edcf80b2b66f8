"""The calibrated shear in the run report: <R>, raw vs calibrated ensemble shear, m and c against the true shear
(a varying shear and one constant shear), the R histogram, and a metacal-off run without the section."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from survey_deblend.evaluation.calibrated import calibration_summary, summary_lines
from survey_deblend.evaluation.report import write_report
from survey_deblend.evaluation.run_eval import evaluate_run
from survey_deblend.sim.field import TRUTH_COLUMNS

R_TRUE = np.array([[0.8, 0.02], [-0.01, 0.75]])  # the response every galaxy's noshear shape has, on average


def _calibrated_rows(n: int, g: np.ndarray, seed: int = 3) -> pd.DataFrame:
    """Galaxies whose noshear shape is R_TRUE g + shape noise + 0.003 (additive), R per galaxy noisy around
    R_TRUE, e_pred = 0.85 x e_mcal (a raw estimator with m = 0.85 x 0.8 - 1 against the shear)."""
    rng = np.random.default_rng(seed)
    e_int = rng.normal(0, 0.2, (n - n // 2, 2))
    e_int = np.concatenate([e_int, -e_int])[:n]  # shape noise cancels in the mean (a ring), as a paired set
    e_mcal = g @ R_TRUE.T + e_int @ R_TRUE.T + 0.003
    R = R_TRUE + rng.normal(0, 0.3, (n, 2, 2))
    R -= R.mean(axis=0) - R_TRUE  # the sample mean is exactly R_TRUE
    return pd.DataFrame({"r11": R[:, 0, 0], "r12": R[:, 0, 1], "r21": R[:, 1, 0], "r22": R[:, 1, 1],
                         "e1_mcal": e_mcal[:, 0], "e2_mcal": e_mcal[:, 1], "e1_pred": 0.85 * e_mcal[:, 0],
                         "e2_pred": 0.85 * e_mcal[:, 1], "g1_true": g[:, 0], "g2_true": g[:, 1]})  # fmt: skip


def test_varying_shear_gives_raw_and_calibrated_m_and_c():
    n = 4000
    g = np.random.default_rng(1).uniform(-0.05, 0.05, (n // 2, 2))
    rows = _calibrated_rows(n, np.concatenate([g, g]))
    s = calibration_summary(rows, bootstrap=50)
    np.testing.assert_allclose(s["R_mean"], R_TRUE, atol=1e-12)
    cal, raw = s["vs_shear"]["calibrated"], s["vs_shear"]["raw"]
    assert cal["m1"] == pytest.approx(0.0, abs=1e-9) and cal["m2"] == pytest.approx(0.0, abs=1e-9)
    assert raw["m1"] == pytest.approx(0.85 * 0.8 - 1, abs=0.02)  # off-diagonal R mixes in a little
    expected_c = np.linalg.solve(R_TRUE, np.full(2, 0.003))
    assert [cal["c1"], cal["c2"]] == pytest.approx(expected_c, abs=1e-9)
    assert s["R11_std"] == pytest.approx(0.3, rel=0.1) and len(s["r11"]) == n


def test_constant_shear_gives_m_from_the_mean():
    n = 2000
    g = np.tile([0.02, -0.01], (n, 1))
    s = calibration_summary(_calibrated_rows(n, g))
    np.testing.assert_allclose(s["g_hat"], np.array([0.02, -0.01]) + np.linalg.solve(R_TRUE, [0.003, 0.003]),
                               atol=1e-12)  # fmt: skip
    cal = s["vs_shear"]["calibrated"]
    assert cal["m1"] == pytest.approx(s["g_hat"][0] / 0.02 - 1, abs=1e-9) and np.isnan(cal["c1"])
    text = "\n".join(summary_lines(s))
    assert "<R> = [[0.800, +0.020], [-0.010, 0.750]]" in text and "calibrated  m1" in text


def test_report_shows_the_calibrated_section_and_histogram(tmp_path, make_run):
    make_run_table, write_run_folder = make_run
    table, truth = make_run_table()
    n = len(table)
    usable = table["status"].isin(["ok", "padded"]).to_numpy()
    rng = np.random.default_rng(0)
    g = rng.uniform(-0.04, 0.04, (n, 2))
    rows = _calibrated_rows(n, g)
    for name in ("r11", "r12", "r21", "r22", "e1_mcal", "e2_mcal"):
        table[name] = np.where(usable, rows[name], np.nan)
    table.loc[np.flatnonzero(usable)[:3], "status"] = "no_psf"  # predicted, not calibrated: raw figures only
    table.loc[np.flatnonzero(usable)[:3], ["r11", "r12", "r21", "r22", "e1_mcal", "e2_mcal"]] = np.nan
    truth[TRUTH_COLUMNS["g1_true"]], truth[TRUTH_COLUMNS["g2_true"]] = g[:, 0], g[:, 1]
    out = write_run_folder(tmp_path / "run", table)
    truth_path = tmp_path / "truth.parquet"
    truth.to_parquet(truth_path)
    report = write_report(out, truth=truth_path, bootstrap=20)
    text = (report / "report.md").read_text()
    assert "## Calibrated shear (metacalibration)" in text and "response_R.png" in text
    assert (report / "response_R.png").stat().st_size > 5000
    metrics = json.loads((report / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["n"] == usable.sum() - 3 and "r11" not in cal  # the per-galaxy values stay out of the JSON
    assert metrics["n_usable"] == usable.sum()  # no_psf rows keep their raw predictions in the evaluation
    assert set(cal["vs_shear"]) == {"n", "g_true_mean", "raw", "calibrated"}
    from survey_deblend.evaluation.report import print_main_table  # what `survey-deblend evaluate` prints

    printed = print_main_table(evaluate_run(out, truth=truth_path, bootstrap=0))
    assert "calibrated shear (" in printed and "calibrated  m1" in printed

    off = table.copy()
    off[["r11", "r12", "r21", "r22", "e1_mcal", "e2_mcal"]] = np.nan
    evaluation_off = evaluate_run(write_run_folder(tmp_path / "off", off), bootstrap=0)
    assert evaluation_off.calibration is None and evaluation_off.to_dict()["calibration"] is None
    assert "calibrated shear: no metacalibration columns" in summary_lines(evaluation_off.calibration)[0]

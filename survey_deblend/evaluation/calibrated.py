"""The calibrated shear of a run (issue 12): the distribution of the metacalibration response R, the ensemble
shear ``<R>^-1 <e_mcal>`` next to the raw ``<e_pred>``, and, where a truth file gives each galaxy's true shear
(``g1_true, g2_true``: a simulated field), raw and calibrated m and c against it.

Against a shear that varies from galaxy to galaxy: ``e = (1 + m) g + c`` fitted over galaxies (``fit_m_c``, bootstrap
errors), raw with ``e_pred``, calibrated with ``<R>^-1 e_mcal`` (the ensemble response applied to every galaxy, as a
lensing user does). Against one constant shear (``simulate field --shear``): ``m_j = g_hat_j / g_j - 1`` per
component with a non-zero shear, the spread over galaxies giving the error; c is not separable from m there (the
paired test of ``benchmarks/metacal_field.py`` is). The calibration columns are owned by ``schema``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from survey_deblend.evaluation.metrics import fit_m_c
from survey_deblend.evaluation.render import Section, Table, fmt, fmt_pm
from survey_deblend.schema import RESPONSE_COLUMNS

CONSTANT_SHEAR_SPREAD = 1e-6  # a true shear that varies by less than this is one constant shear


def _matrix(df: pd.DataFrame) -> np.ndarray:
    return df[list(RESPONSE_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1, 2, 2)


def _bias_vs_shear(e: np.ndarray, g: np.ndarray, bootstrap: int, seed: int) -> dict[str, float]:
    """m, c (and errors) of ``e`` (n, 2) against the true shear ``g`` (n, 2), per component."""
    out: dict[str, float] = {}
    for k in range(2):
        if np.ptp(g[:, k]) > CONSTANT_SHEAR_SPREAD:
            fit = fit_m_c(e[:, k], g[:, k], bootstrap=bootstrap, seed=seed)
            out.update({f"m{k + 1}": fit["m"], f"m{k + 1}_err": fit["m_err"], f"c{k + 1}": fit["c"],
                        f"c{k + 1}_err": fit["c_err"]})  # fmt: skip
        else:  # one constant shear: m from the mean, c not separable (NaN)
            g0 = float(g[0, k])
            mean, err = float(e[:, k].mean()), float(e[:, k].std(ddof=1) / np.sqrt(len(e)))
            if abs(g0) > 0:
                out.update({f"m{k + 1}": mean / g0 - 1, f"m{k + 1}_err": err / abs(g0), f"c{k + 1}": np.nan,
                            f"c{k + 1}_err": np.nan})  # fmt: skip
            else:
                out.update({f"m{k + 1}": np.nan, f"m{k + 1}_err": np.nan, f"c{k + 1}": mean, f"c{k + 1}_err": err})
    return out


def calibration_summary(df: pd.DataFrame, bootstrap: int = 200, seed: int = 0) -> dict | None:
    """Figures of the calibrated rows of ``df`` (rows with finite R and noshear shapes); None when there are none
    (a run with ``model.metacal: false``)."""
    from survey_deblend.calibration.response import ensemble_shear  # torch: only when there is something to do

    if not set(RESPONSE_COLUMNS) <= set(df.columns) or "e1_mcal" not in df.columns:
        return None
    cols = [*RESPONSE_COLUMNS, "e1_mcal", "e2_mcal", "e1_pred", "e2_pred"]
    cal = df[np.isfinite(df[cols].to_numpy(dtype=np.float64)).all(axis=1)]
    if len(cal) < 2:
        return None
    R = _matrix(cal)
    e_mcal = cal[["e1_mcal", "e2_mcal"]].to_numpy(dtype=np.float64)
    e_raw = cal[["e1_pred", "e2_pred"]].to_numpy(dtype=np.float64)
    g_hat, r_mean = ensemble_shear(e_mcal, R)
    summary: dict = {
        "n": int(len(cal)),
        "R_mean": r_mean.tolist(),
        "R_err": (R.std(axis=0, ddof=1) / np.sqrt(len(R))).tolist(),
        "R11_std": float(R[:, 0, 0].std(ddof=1)),
        "R22_std": float(R[:, 1, 1].std(ddof=1)),
        "R11_median": float(np.median(R[:, 0, 0])),
        "R22_median": float(np.median(R[:, 1, 1])),
        "e_raw_mean": e_raw.mean(axis=0).tolist(),
        "e_mcal_mean": e_mcal.mean(axis=0).tolist(),
        "g_hat": g_hat.tolist(),
        "r11": R[:, 0, 0].tolist(),
        "r22": R[:, 1, 1].tolist(),
    }
    if {"g1_true", "g2_true"} <= set(cal.columns):
        g = cal[["g1_true", "g2_true"]].to_numpy(dtype=np.float64)
        keep = np.isfinite(g).all(axis=1)
        if keep.sum() >= 2:
            e_cal = e_mcal[keep] @ np.linalg.inv(r_mean).T  # <R>^-1 e per galaxy
            summary["vs_shear"] = {
                "n": int(keep.sum()),
                "g_true_mean": g[keep].mean(axis=0).tolist(),
                "raw": _bias_vs_shear(e_raw[keep], g[keep], bootstrap, seed),
                "calibrated": _bias_vs_shear(e_cal, g[keep], bootstrap, seed),
            }
    return summary


def summary_lines(summary: dict | None) -> list[str]:
    """The calibrated table as text lines (the demo prints them; the report shows the same numbers)."""
    if summary is None:
        return ["calibrated shear: no metacalibration columns (model.metacal: false)"]
    (r11, r12), (r21, r22) = summary["R_mean"]
    lines = [f"calibrated shear ({summary['n']:,} galaxies with a response)",
             f"<R> = [[{r11:.3f}, {r12:+.3f}], [{r21:+.3f}, {r22:.3f}]]  (R11 spread {summary['R11_std']:.2f}, "
             f"R22 spread {summary['R22_std']:.2f})",
             "component   raw <e_pred>   <e_mcal>   calibrated <R>^-1<e_mcal>"]  # fmt: skip
    for k in range(2):
        lines.append(f"g{k + 1}          {summary['e_raw_mean'][k]:>+12.4f}   {summary['e_mcal_mean'][k]:>+8.4f}   "
                     f"{summary['g_hat'][k]:>+26.4f}")
    shear = summary.get("vs_shear")
    if shear:
        g = shear["g_true_mean"]
        lines.append(f"true shear mean ({shear['n']:,} galaxies): g1 {g[0]:+.4f}, g2 {g[1]:+.4f}")
        for name in ("raw", "calibrated"):
            f = shear[name]
            lines.append(f"{name:<10}  m1 {f['m1']:+.3f} +- {f['m1_err']:.3f}  m2 {f['m2']:+.3f} +- {f['m2_err']:.3f}  "
                         f"c1 {f['c1']:+.4f}  c2 {f['c2']:+.4f}")
    return lines


def calibration_section(summary: dict, report_dir: Path) -> Section:
    """The report's "Calibrated shear" section: <R>, raw and calibrated ensemble shear, m and c against the true
    shear where known, and the histogram of R11, R22 (written into ``report_dir``)."""
    from survey_deblend.evaluation import plots

    (r11, r12), (r21, r22) = summary["R_mean"]
    (e11, e12), (e21, e22) = summary["R_err"]
    rows = [["<R>", fmt_pm(r11, e11, 3), fmt_pm(r12, e12, 3), fmt_pm(r21, e21, 3), fmt_pm(r22, e22, 3)]]
    table_r = Table("Mean metacalibration response", ["", "R11", "R12", "R21", "R22"], rows,
                    f"{summary['n']} galaxies with a response; per-galaxy spread of R11 {summary['R11_std']:.3f}, "
                    f"of R22 {summary['R22_std']:.3f} (errors: standard error of the mean).")
    ens = [[f"g{k + 1}", fmt(summary["e_raw_mean"][k]), fmt(summary["e_mcal_mean"][k]), fmt(summary["g_hat"][k])]
           for k in range(2)]
    table_e = Table("Ensemble shear", ["component", "raw <e_pred>", "<e_mcal>", "calibrated <R>^-1 <e_mcal>"], ens)
    tables = [table_r, table_e]
    shear = summary.get("vs_shear")
    if shear:
        cells = [[name, fmt(shear["n"]), fmt_pm(f["m1"], f["m1_err"]), fmt_pm(f["c1"], f["c1_err"]),
                  fmt_pm(f["m2"], f["m2_err"]), fmt_pm(f["c2"], f["c2_err"])]
                 for name, f in (("raw e_pred", shear["raw"]), ("calibrated <R>^-1 e_mcal", shear["calibrated"]))]
        tables.append(Table("Shear bias against the true shear (truth file)", ["estimate", "N", "m1", "c1", "m2", "c2"],
                            cells, "e = (1 + m) g_true + c over galaxies (bootstrap errors); one constant shear: "
                            "m = g_hat / g - 1, c not separable."))  # fmt: skip
    figure = plots.response_histogram(np.asarray(summary["r11"]), np.asarray(summary["r22"]),
                                      report_dir / "response_R.png")
    text = ("The calibrated shear of an ensemble is <R>^-1 <e_mcal> (metacalibration: the five sheared images of "
            "each stamp through the same network); a galaxy's own R is noisy, only means are meaningful.")
    return Section("Calibrated shear (metacalibration)", paragraphs=[text], tables=tables,
                   figures=[("metacalibration response R11, R22 per galaxy", figure)])

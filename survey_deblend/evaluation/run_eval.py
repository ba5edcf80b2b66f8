"""Figures of a run: predicted versus im3shape (and versus the truth where a truth file exists), overall and binned.

Each comparison is one row of ``shape_metrics`` (m, c with bootstrap errors, RMSE, correlation, roundness)
labelled with what was compared; binned rows add the bin. Everything here is plain data (dicts and lists), so
the report, ``metrics.json`` and the terminal table are the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from survey_deblend.evaluation.calibrated import calibration_summary
from survey_deblend.evaluation.metrics import nbc_corrected, shape_metrics
from survey_deblend.evaluation.run_data import (
    attach_truth,
    load_run,
    magnitudes_from_catalogs,
    read_truth,
    usable_rows,
)

__all__ = ["Comparison", "RunEvaluation", "binned_metrics", "evaluate_run"]

N_QUANTILE_BINS = 5
MAX_TILE_BINS = 25


@dataclass(frozen=True)
class Comparison:
    """One estimator against one reference: the column pairs, an optional weight column and labels."""

    key: str
    estimate: str
    reference: str
    est_cols: tuple[str, str]
    ref_cols: tuple[str, str]
    weight_col: str | None = None


@dataclass
class RunEvaluation:
    """Everything the report shows about a run, as plain data."""

    out_dir: Path
    manifest: dict | None
    n_rows: int
    n_usable: int
    status_counts: dict[str, int]
    comparisons: list[dict]
    binned: dict[str, list[dict]]
    truth_path: str | None = None
    truth_unmatched: int | None = None
    verdict: dict | None = None
    notes: list[str] = field(default_factory=list)
    calibration: dict | None = None  # ``evaluation.calibrated.calibration_summary`` (None: metacal off)
    data: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    parts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The machine-readable figures (``metrics.json``): no data frame, only numbers and labels."""
        return {
            "out_dir": str(self.out_dir),
            "n_rows": self.n_rows,
            "n_usable": self.n_usable,
            "status_counts": self.status_counts,
            "comparisons": self.comparisons,
            "binned": self.binned,
            "truth": None
            if self.truth_path is None
            else {"path": self.truth_path, "unmatched": self.truth_unmatched, "verdict": self.verdict},
            "n_parts": len(self.parts),
            "notes": self.notes,
            "calibration": None if self.calibration is None
            else {k: v for k, v in self.calibration.items() if k not in ("r11", "r22")},
        }


def _add_nbc_columns(df: pd.DataFrame) -> bool:
    """Add ``e1_im3shape_nbc``/``e2_im3shape_nbc`` (ensemble calibration, W-weighted); False when not possible."""
    needed = ("nbc_m", "nbc_c1", "nbc_c2")
    if not all(c in df.columns for c in needed) or not np.isfinite(df["nbc_m"]).any():
        return False
    w = df["w"].to_numpy() if "w" in df.columns and np.isfinite(df["w"]).any() else None
    c1 = np.nan_to_num(df["nbc_c1"].to_numpy(), nan=0.0)
    c2 = np.nan_to_num(df["nbc_c2"].to_numpy(), nan=0.0)
    df["e1_im3shape_nbc"] = nbc_corrected(df["e1_im3shape"].to_numpy(), c1, df["nbc_m"].to_numpy(), w)
    df["e2_im3shape_nbc"] = nbc_corrected(df["e2_im3shape"].to_numpy(), c2, df["nbc_m"].to_numpy(), w)
    return True


def _comparisons(df: pd.DataFrame, has_nbc: bool, has_truth: bool) -> list[Comparison]:
    """The comparisons that the columns present allow, the main one (pred vs im3shape) first."""
    has_w = "w" in df.columns and np.isfinite(df["w"]).any()
    has_recon = {"e1_recon", "e2_recon"} <= set(df.columns) and np.isfinite(df["e1_recon"]).any()
    pred, im3, im3n = ("e1_pred", "e2_pred"), ("e1_im3shape", "e2_im3shape"), ("e1_im3shape_nbc", "e2_im3shape_nbc")
    recon, truth = ("e1_recon", "e2_recon"), ("e1_true", "e2_true")
    out = [Comparison("pred_vs_im3shape", "predicted", "im3shape (raw)", pred, im3)]
    if has_nbc:
        out.append(Comparison("pred_vs_im3shape_nbc", "predicted", "im3shape (NBC, W)" if has_w else "im3shape (NBC)",
                              pred, im3n, "w" if has_w else None))
    if has_recon:
        out.append(Comparison("recon_vs_im3shape", "HSM on reconstruction", "im3shape (raw)", recon, im3))
    if has_truth:
        out.append(Comparison("pred_vs_truth", "predicted", "truth", pred, truth))
        out.append(Comparison("im3shape_vs_truth", "im3shape (raw)", "truth", im3, truth))
        if has_nbc:
            out.append(Comparison("im3shape_nbc_vs_truth", "im3shape (NBC)", "truth", im3n, truth))
        if has_recon:
            out.append(Comparison("recon_vs_truth", "HSM on reconstruction", "truth", recon, truth))
    return out


def _metrics(df: pd.DataFrame, comp: Comparison, bootstrap: int, seed: int) -> dict:
    w = df[comp.weight_col].to_numpy() if comp.weight_col else None
    cols = [df[c].to_numpy(dtype=np.float64) for c in (*comp.est_cols, *comp.ref_cols)]
    return shape_metrics(*cols, weights=w, bootstrap=bootstrap, seed=seed)


def _bin_labels(df: pd.DataFrame, by: str) -> pd.Series | None:
    """Bin label per row for one binning variable (quantile bins for continuous ones); None when unusable."""
    if by not in df.columns:
        return None
    values = df[by]
    if by == "tile":
        values = values.astype("string").fillna("(none)")
        top = values.value_counts().index[:MAX_TILE_BINS]
        return values.where(values.isin(top), "(other tiles)")
    numeric = pd.to_numeric(values, errors="coerce")
    if not numeric.notna().any():
        return None
    if by == "n_neighbours":
        capped = numeric.clip(upper=3)
        return capped.map(lambda v: "unknown" if pd.isna(v) else ("3+" if v >= 3 else str(int(v))))
    finite = numeric[np.isfinite(numeric)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, N_QUANTILE_BINS + 1)))
    if edges.size < 2:
        return pd.Series([f"{edges[0]:.3g}"] * len(df), index=df.index)
    idx = np.clip(np.searchsorted(edges, numeric.to_numpy(), side="right") - 1, 0, edges.size - 2)
    labels = np.array([f"[{edges[i]:.4g}, {edges[i + 1]:.4g}" + ("]" if i == edges.size - 2 else ")")
                       for i in range(edges.size - 1)])
    out = pd.Series(labels[idx], index=df.index)
    return out.where(numeric.notna(), "unknown")


def binned_metrics(df: pd.DataFrame, comp: Comparison, by: str, bootstrap: int = 100, seed: int = 0) -> list[dict]:
    """``shape_metrics`` of one comparison per bin of ``by`` (SNR_W, magnitude, tile, number of neighbours)."""
    labels = _bin_labels(df, by)
    if labels is None:
        return []
    rows = []
    order = pd.unique(labels.to_numpy()) if by == "tile" else sorted(pd.unique(labels.to_numpy()), key=_bin_key)
    for label in order:
        sub = df[(labels == label).to_numpy()]
        row = {"bin": str(label), **_metrics(sub, comp, bootstrap, seed)}
        rows.append(row)
    return rows


def _bin_key(label: str) -> tuple:
    """Sort numeric bins by their lower edge, then the rest by name."""
    text = str(label).lstrip("[")
    try:
        return (0, float(text.split(",")[0].rstrip("+")), "")
    except ValueError:
        return (1, 0.0, text)


def evaluate_run(out_dir: str | Path, truth: str | Path | None = None, bootstrap: int = 200, seed: int = 0,
                 ) -> RunEvaluation:
    """Evaluate a run folder: status counts, every comparison overall and binned, and the truth verdict."""
    run = load_run(out_dir)
    counts = run.table["status"].astype(str).value_counts().sort_index()
    df = usable_rows(run.table)
    truth_unmatched = None
    if truth is not None:
        df, truth_unmatched = attach_truth(df, read_truth(truth))
    has_truth = truth is not None and np.isfinite(df.get("e1_true", pd.Series(dtype=float))).any()
    has_nbc = _add_nbc_columns(df) if len(df) else False
    comps = _comparisons(df, has_nbc, has_truth) if len(df) else []
    rows = []
    for comp in comps:
        rows.append({"key": comp.key, "estimate": comp.estimate, "reference": comp.reference,
                     "weighted": comp.weight_col is not None, **_metrics(df, comp, bootstrap, seed)})
    mag_note = "magnitudes: i from the truth file" if "mag_true" in df.columns else ""
    if "mag_true" not in df.columns and len(df):  # the output has no magnitude: the run's catalogs do
        mags, mag_note = magnitudes_from_catalogs(run.manifest, df["coadd_objects_id"].to_numpy())
        if mags is not None:
            df["mag_true"] = df["coadd_objects_id"].astype(np.int64).map(mags).astype(np.float64)
    binned: dict[str, list[dict]] = {}
    binned_keys = {"pred_vs_im3shape", "pred_vs_truth", "im3shape_vs_truth"}
    for comp in comps:
        if comp.key not in binned_keys:
            continue
        for by in ("snr_w", "mag_true", "tile", "n_neighbours"):
            result = binned_metrics(df, comp, by, bootstrap=max(bootstrap // 2, 0), seed=seed)
            if result:
                binned[f"{comp.key}/{by}"] = result
    verdict = _verdict(rows) if has_truth else None
    return RunEvaluation(
        out_dir=run.out_dir,
        manifest=run.manifest,
        n_rows=len(run.table),
        n_usable=len(df),
        status_counts={str(k): int(v) for k, v in counts.items()},
        comparisons=rows,
        binned=binned,
        truth_path=None if truth is None else str(truth),
        truth_unmatched=truth_unmatched,
        verdict=verdict,
        notes=[mag_note] if mag_note else [],
        calibration=calibration_summary(df, bootstrap=bootstrap, seed=seed) if len(df) else None,
        data=df,
        parts=[str(p) for p in run.parts],
    )


def _verdict(rows: list[dict]) -> dict | None:
    """Which of predictions and im3shape is closer to the truth, by RMSE and by |m| averaged over components."""
    by_key = {r["key"]: r for r in rows}
    pred, im3 = by_key.get("pred_vs_truth"), by_key.get("im3shape_vs_truth")
    if not pred or not im3:
        return None

    def mean_abs_m(r: dict) -> float:
        return float((abs(r["m1"]) + abs(r["m2"])) / 2)

    closer_rmse = "predicted" if pred["rmse"] < im3["rmse"] else "im3shape"
    closer_m = "predicted" if mean_abs_m(pred) < mean_abs_m(im3) else "im3shape"
    return {
        "rmse_pred": pred["rmse"],
        "rmse_im3shape": im3["rmse"],
        "mean_abs_m_pred": mean_abs_m(pred),
        "mean_abs_m_im3shape": mean_abs_m(im3),
        "closer_by_rmse": closer_rmse,
        "closer_by_m": closer_m,
        "summary": f"closer to the truth by RMSE: {closer_rmse} ({pred['rmse']:.4f} predicted vs "
        f"{im3['rmse']:.4f} im3shape); by mean |m|: {closer_m}",
    }

"""The run report: ``OUT_DIR/_report/{report.md, report.html, metrics.json, *.png}`` from a run folder.

``write_report`` is what ``survey-deblend evaluate`` and the demo call; ``main_table`` is what the terminal shows.
The folder's name starts with ``_`` because pyarrow's dataset discovery skips such names: a ``report/`` folder
of PNGs inside the run folder would break ``pandas.read_parquet(OUT_DIR)`` (DESIGN.md, "The run").
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from survey_deblend.evaluation import plots
from survey_deblend.evaluation.calibrated import calibration_section, summary_lines
from survey_deblend.evaluation.render import Section, Table, fmt, fmt_pm, to_html, to_markdown, to_text
from survey_deblend.evaluation.run_data import USABLE_STATUSES
from survey_deblend.evaluation.run_eval import RunEvaluation, evaluate_run

__all__ = ["REPORT_DIRNAME", "build_run_report", "comparison_table", "main_table", "write_report"]

REPORT_DIRNAME = "_report"

MAIN_COLUMNS = ["comparison", "N", "m1", "c1", "m2", "c2", "RMSE", "corr e1", "corr e2", "roundness"]
BIN_COLUMNS = ["bin", "N", "m1", "c1", "m2", "c2", "RMSE", "roundness"]


def comparison_table(rows: list[dict], title: str) -> Table:
    """The main table: one row per comparison with m, c (bootstrap errors), RMSE, correlations, roundness."""
    cells = []
    for r in rows:
        name = f"{r['estimate']} vs {r['reference']}" + (" [W]" if r.get("weighted") else "")
        cells.append([name, fmt(r["n"]), fmt_pm(r["m1"], r["m1_err"]), fmt_pm(r["c1"], r["c1_err"]),
                      fmt_pm(r["m2"], r["m2_err"]), fmt_pm(r["c2"], r["c2_err"]), fmt(r["rmse"]),
                      fmt(r["corr1"]), fmt(r["corr2"]), fmt(r["roundness"])])
    note = ("Fit estimate = (1 + m) reference + c per component, errors from a bootstrap over galaxies; "
            "roundness = median |e_estimate| / median |e_reference|; [W]: weighted by im3shape's W.")
    return Table(title, MAIN_COLUMNS, cells, note)


def _binned_table(key: str, rows: list[dict]) -> Table:
    comp, by = key.split("/", 1)
    cells = [[r["bin"], fmt(r["n"]), fmt_pm(r["m1"], r["m1_err"], 3), fmt_pm(r["c1"], r["c1_err"], 3),
              fmt_pm(r["m2"], r["m2_err"], 3), fmt_pm(r["c2"], r["c2_err"], 3), fmt(r["rmse"], 3),
              fmt(r["roundness"], 3)] for r in rows]
    label = {"snr_w": "SNR_W", "mag_true": "magnitude (i)", "tile": "tile", "n_neighbours": "number of neighbours"}
    return Table(f"{comp.replace('_', ' ')} by {label.get(by, by)}", BIN_COLUMNS, cells)


def main_table(ev: RunEvaluation) -> Table:
    """The table printed by ``survey-deblend evaluate``."""
    return comparison_table(ev.comparisons, f"{ev.out_dir}: {ev.n_usable} usable of {ev.n_rows} galaxies")


def _run_figures(ev: RunEvaluation, report_dir: Path) -> list[tuple[str, Path]]:
    """The PNGs of a run: density, residuals, residuals vs SNR for each reference, and |e| distributions."""
    df = ev.data
    figs: list[tuple[str, Path]] = []
    if len(df) == 0:
        return figs
    by_key = {r["key"]: r for r in ev.comparisons}
    pairs = [("pred_vs_im3shape", "predicted", "im3shape", ("e1_pred", "e2_pred"), ("e1_im3shape", "e2_im3shape")),
             ("pred_vs_truth", "predicted", "truth", ("e1_pred", "e2_pred"), ("e1_true", "e2_true")),
             ("im3shape_vs_truth", "im3shape", "truth", ("e1_im3shape", "e2_im3shape"), ("e1_true", "e2_true"))]
    for key, est, ref, ec, rc in pairs:
        if key not in by_key:
            continue
        cols = [df[c].to_numpy(dtype=np.float64) for c in (*ec, *rc)]
        figs.append((f"{est} against {ref}: density of galaxies",
                     plots.pred_vs_ref(*cols, report_dir / f"{key}_density.png", est, ref, fits=by_key[key])))
        figs.append((f"residuals {est} - {ref}", plots.residual_hist(*cols, report_dir / f"{key}_residuals.png",
                                                                      est, ref)))
        figs.append((f"residuals {est} - {ref} against SNR_W",
                     plots.residuals_vs_snr(*cols, df["snr_w"].to_numpy(dtype=np.float64),
                                            report_dir / f"{key}_residuals_vs_snr.png", est, ref)))
    samples = {"predicted": (df["e1_pred"], df["e2_pred"]), "im3shape": (df["e1_im3shape"], df["e2_im3shape"])}
    if "e1_im3shape_nbc" in df.columns:
        samples["im3shape (NBC)"] = (df["e1_im3shape_nbc"], df["e2_im3shape_nbc"])
    if "e1_true" in df.columns:
        samples["truth"] = (df["e1_true"], df["e2_true"])
    figs.append(("|e| distributions", plots.e_distribution(samples, report_dir / "e_modulus.png")))
    return figs


def _cut_flow_table(manifest: dict) -> Table | None:
    """The cut flow from the manifest, in whichever of the usual shapes it was stored."""
    flow = manifest.get("cut_flow") or manifest.get("cutflow")
    if isinstance(flow, dict) and "steps" in flow:
        flow = flow["steps"]
    rows: list[list[str]] = []
    if isinstance(flow, dict):
        rows = [[str(k), fmt(v)] for k, v in flow.items()]
    elif isinstance(flow, list):
        for step in flow:
            if isinstance(step, (list, tuple)) and len(step) >= 2:
                rows.append([str(step[0]), fmt(step[1])])
            elif isinstance(step, dict):
                name = step.get("step", step.get("name", step.get("cut", "?")))
                count = next((step[k] for k in ("rows", "n", "remaining", "count") if k in step), None)
                rows.append([str(name), fmt(count)])
    return Table("Cut flow (from the run manifest)", ["step", "galaxies remaining"], rows) if rows else None


def _manifest_section(ev: RunEvaluation) -> Section:
    sec = Section("Run manifest")
    if ev.manifest is None:
        sec.paragraphs.append(f"No manifest.json in {ev.out_dir}.")
        return sec
    m = ev.manifest
    for label, keys in (("model", ("model", "model_id", "model_hash")), ("run id", ("run_id",)),
                        ("configuration hash", ("config_hash", "configuration_hash"))):
        value = next((m[k] for k in keys if k in m), None)
        if value is not None:
            sec.paragraphs.append(f"{label}: {value if not isinstance(value, dict) else json.dumps(value)}")
    state = m.get("state")
    if state is not None and state != "complete":
        sec.paragraphs.append(f"Warning: the run's state is '{state}', not 'complete': figures cover finished parts.")
    listed = m.get("parts")
    if isinstance(listed, list):
        missing = sorted(set(map(str, listed)) - {Path(p).name for p in ev.parts})
        if missing:
            sec.paragraphs.append(f"Warning: {len(missing)} part(s) listed in the manifest are missing, e.g. "
                                  f"{missing[0]}.")
    counts = m.get("counts")
    if isinstance(counts, dict) and {str(k): int(v) for k, v in counts.items() if isinstance(v, (int, float))} != \
            ev.status_counts:
        sec.paragraphs.append(f"Warning: the manifest's counts per status {counts} differ from the rows read "
                              f"{ev.status_counts}.")
    flow = _cut_flow_table(m)
    if flow:
        sec.tables.append(flow)
    sec.code = json.dumps(m, indent=2, sort_keys=True, default=str)
    return sec


def build_run_report(ev: RunEvaluation, report_dir: Path) -> tuple[list[Section], dict]:
    """Sections of the report and the ``metrics.json`` content; writes the PNGs into ``report_dir``."""
    sections = [Section("Summary", paragraphs=[
        f"Run folder {ev.out_dir}: {ev.n_rows} galaxies in {len(ev.parts)} Parquet part(s); "
        f"{ev.n_usable} usable (status {'/'.join(USABLE_STATUSES)} with finite predicted and im3shape "
        "ellipticities)."])]
    status_rows = [[k, fmt(v)] for k, v in sorted(ev.status_counts.items())]
    sections[0].tables.append(Table("Galaxies per status", ["status", "galaxies"], status_rows))
    if ev.comparisons:
        sections[0].tables.append(main_table(ev))
    else:
        sections[0].paragraphs.append("No usable galaxies: no ellipticity figures can be computed.")
    if ev.truth_path is not None:
        para = [f"Truth file {ev.truth_path}: {ev.truth_unmatched} usable galaxies without a truth entry."]
        if ev.verdict:
            para.append(ev.verdict["summary"])
        sections.append(Section("Against the truth", paragraphs=para))
    if ev.binned:
        tables = [_binned_table(k, v) for k, v in ev.binned.items()]
        sections.append(Section("Binned figures", paragraphs=list(ev.notes), tables=tables))
    if ev.calibration is not None:
        sections.append(calibration_section(ev.calibration, report_dir))
    figures = _run_figures(ev, report_dir)
    if figures:
        sections.append(Section("Figures", figures=figures))
    sections.append(_manifest_section(ev))
    metrics = ev.to_dict()
    metrics["figures"] = [Path(p).name for _, p in figures]
    metrics["manifest"] = ev.manifest
    return sections, metrics


def _json_safe(obj):
    """NaN/inf become null so that metrics.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def write_outputs(report_dir: Path, title: str, sections: list[Section], metrics: dict) -> Path:
    """Write report.md, report.html and metrics.json into ``report_dir``; returns ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.md").write_text(to_markdown(title, sections))
    (report_dir / "report.html").write_text(to_html(title, sections))
    (report_dir / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2, allow_nan=False,
                                                        default=str))
    return report_dir


def write_report(out_dir: str | Path, truth: str | Path | None = None, bootstrap: int = 200,
                 evaluation: RunEvaluation | None = None, report_dir: str | Path | None = None) -> Path:
    """Evaluate the run in ``out_dir`` and write the report (default ``out_dir/_report/``); returns that folder."""
    ev = evaluation if evaluation is not None else evaluate_run(out_dir, truth=truth, bootstrap=bootstrap)
    report_dir = Path(report_dir) if report_dir is not None else Path(out_dir) / REPORT_DIRNAME
    report_dir.mkdir(parents=True, exist_ok=True)
    sections, metrics = build_run_report(ev, report_dir)
    return write_outputs(report_dir, "survey-deblend evaluation report", sections, metrics)


def print_main_table(ev: RunEvaluation) -> str:
    """The terminal text of the main table (plus the truth verdict and the calibrated shear when there are)."""
    text = to_text(main_table(ev)) if ev.comparisons else f"{ev.out_dir}: no usable galaxies"
    if ev.verdict:
        text += "\n" + ev.verdict["summary"]
    if ev.calibration is not None:  # <R>, raw and calibrated ensemble shear (and m, c against a true shear)
        text += "\n" + "\n".join(summary_lines(ev.calibration))
    return text

"""Evaluation: shape and redshift metrics, HSM baselines, plots and the run report (DESIGN.md)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_report"]


def write_report(
    out_dir: str | Path, truth: str | Path | None = None, bootstrap: int = 200, report_dir: str | Path | None = None
) -> Path:
    """Evaluate a run folder and write its report (report.md, report.html, metrics.json, PNGs); returns the folder.

    The default folder is ``OUT_DIR/_report/`` (the ``_`` keeps ``pandas.read_parquet(OUT_DIR)`` working).

    Imported lazily so that ``survey_deblend.evaluation.metrics`` stays free of matplotlib.
    """
    from survey_deblend.evaluation.report import write_report as _write_report

    return _write_report(out_dir, truth=truth, bootstrap=bootstrap, report_dir=report_dir)

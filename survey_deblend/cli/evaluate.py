"""``survey-deblend evaluate OUT_DIR [--truth truth.parquet]``: figures and report of a run folder.

The report goes to ``OUT_DIR/_report/`` (or ``--report-dir``). With ``--simulated DATASET`` it evaluates a
checkpoint on a held-out simulated set instead (the model-stage figures against HSM baselines).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a run's Parquet output against im3shape (and a truth file) and write a report",
        description="Prints the main table and writes OUT_DIR/_report/{report.md,report.html,metrics.json,*.png} "
        "(the leading _ keeps pandas.read_parquet(OUT_DIR) working).",
    )
    p.add_argument("out_dir", type=Path, help="run folder: Parquet parts and the run manifest")
    p.add_argument("--truth", type=Path, default=None, help="truth table (Parquet) matched on coadd_objects_id")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the m, c errors")
    p.add_argument("--report-dir", type=Path, default=None, help="where the report goes (default OUT_DIR/_report)")
    sim = p.add_argument_group("simulated sets (instead of a run folder; the report goes to OUT_DIR/_report)")
    sim.add_argument("--simulated", type=Path, default=None, metavar="DATASET", help="held-out simulated data set")
    sim.add_argument("--ring", type=Path, default=None, metavar="DATASET", help="ring (shear-response) data set")
    sim.add_argument("--checkpoint", type=Path, default=None, help="model checkpoint (default: the shipped one)")
    sim.add_argument("--snr-min", type=float, default=20.0, help="leave out samples with truth SNR below this")
    sim.add_argument("--max-samples", type=int, default=None, help="evaluate at most this many samples")
    sim.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    sim.add_argument("--des", action="store_true", help="evaluate the data set's paired DES renders (domain shift)")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from survey_deblend.errors import SurveyDeblendError

    if args.bootstrap < 0:
        raise SurveyDeblendError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.simulated is not None:
        return _evaluate_simulated(args)
    from survey_deblend.evaluation.report import print_main_table, write_report
    from survey_deblend.evaluation.run_eval import evaluate_run

    ev = evaluate_run(args.out_dir, truth=args.truth, bootstrap=args.bootstrap)
    report_dir = write_report(args.out_dir, evaluation=ev, report_dir=args.report_dir)
    print(print_main_table(ev))
    print(f"report: {report_dir / 'report.html'}")
    if ev.n_usable == 0:
        raise SurveyDeblendError(
            f"no usable galaxies in {args.out_dir} (status ok/padded with predictions) among {ev.n_rows} rows; "
            f"report with the status counts written to {report_dir}"
        )
    return 0


def _evaluate_simulated(args: argparse.Namespace) -> int:
    from survey_deblend.evaluation.report import REPORT_DIRNAME
    from survey_deblend.evaluation.sim_report import format_simulated
    from survey_deblend.evaluation.simulated import evaluate_simulated
    from survey_deblend.inference import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    report_dir = args.report_dir or args.out_dir / REPORT_DIRNAME
    result = evaluate_simulated(
        predictor, args.simulated, ring_dataset=args.ring, snr_min=args.snr_min, max_samples=args.max_samples,
        prefix="des_" if args.des else "", bootstrap=args.bootstrap, out_dir=report_dir,
    )
    print(format_simulated(result))
    print(f"report: {Path(result['report_dir']) / 'report.html'}")
    return 0

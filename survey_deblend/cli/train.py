"""``survey-deblend train vae|deblender|regressor|all --config pipelines/train_lsst.yaml [--set k=v]``."""

from __future__ import annotations

import argparse

from survey_deblend.cli.options import add_config_options

STAGES = ("vae", "deblender", "regressor", "all", "flow", "flow-calibration")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train the VAE, the deblender, the regressor, all three, or the flow head",
        description="Train on a simulated LSST data set. Each stage keeps a state file per epoch under "
        "work_dir and resumes from it; 'all' runs the three stages and writes the final checkpoint.",
    )
    parser.add_argument("stage", choices=STAGES, help="which training to run")
    add_config_options(parser, "pipelines/train_lsst.yaml (default: built-in)", "vae.epochs=2 or data.path=data/lsst")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Load the training config and run the chosen stage(s)."""
    from survey_deblend.config import load
    from survey_deblend.config.training import TrainingConfig
    from survey_deblend.training import stages

    cfg = load(TrainingConfig, args.config, args.overrides)
    if args.stage == "all":
        results = stages.train_all(cfg)
    elif args.stage == "flow":  # the posterior head on a trained checkpoint (training/flow.py)
        from survey_deblend.training.flow import train_flow

        results = {"flow": train_flow(cfg)}
    elif args.stage == "flow-calibration":  # the e temperature of a trained flow, no retraining
        from survey_deblend.training.flow_calibration import calibrate_flow

        record = calibrate_flow(cfg)
        print(f"flow calibration: e temperature {record['e_temperature']} +- {record['e_temperature_err']} "
              f"(validation 68 %/95 % coverage {record['val_coverage_e_68']}/{record['val_coverage_e_95']})")
        print(f"checkpoint: {record['checkpoint']}")
        return 0
    else:
        results = {args.stage: getattr(stages, f"train_{args.stage}")(cfg)}
    for name, result in results.items():
        print(
            f"{name}: best held-out loss {result.best_val:.4f} at epoch {result.best_epoch} "
            f"({result.seconds:.0f} s, {result.train_images_per_s:.0f} training images/s)"
        )
    if "regressor" in results:
        print(f"checkpoint: {cfg.output}")
    if "flow" in results:
        print(f"checkpoint: {cfg.flow.output or cfg.flow.checkpoint or cfg.output}")
    return 0

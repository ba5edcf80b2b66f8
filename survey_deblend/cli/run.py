"""``survey-deblend run``: the catalog through cutouts and the model to Parquet, on a Dask cluster.

Builds one ``RunConfig`` from ``--config`` (YAML), ``--set key=value`` and the typed options (which win, as
values: a path stays a path, never YAML text), checks the run's inputs once (``pipeline.inputs.check_inputs``)
before starting anything, makes the client with ``--cluster`` and calls ``survey_deblend.pipeline.run``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from survey_deblend.cli.options import add_config_options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` sub-command."""
    p = subparsers.add_parser(
        "run",
        help="predict ellipticities for a shear catalog on a Dask cluster, writing Parquet",
        description="Select galaxies, fetch cutouts, run the deblender and write one Parquet file per partition "
        "(resumable; re-run the same command after an interruption).",
    )
    add_run_arguments(p)
    p.set_defaults(func=_run)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by ``run`` (and reused by scripts that wrap it)."""
    p.add_argument("--catalog", type=Path, help="im3shape shear catalog (FITS or Parquet)")
    p.add_argument("--gold", type=Path, help="gold catalog (ID join on COADD_OBJECTS_ID)")
    p.add_argument("--wlinfo", type=Path, help="row-matched wlinfo file (positions), instead of --gold")
    p.add_argument("--images", help="cutout source: datalab, sia:URL or tiles:DIR")
    p.add_argument("--model", type=Path, help="checkpoint file (default: the one shipped in the package)")
    p.add_argument("--cluster", help="local, local-cuda, slurm, pbs or tcp://host:port")
    p.add_argument("--workers", type=int, help="number of workers of a local cluster")
    p.add_argument("--out", type=Path, help="output folder (Parquet parts and _manifest.json)")
    add_config_options(p, "YAML configuration, e.g. pipelines/des_sva1.yaml", "output.partition_rows=500")
    p.add_argument("--overwrite", action="store_true", help="start over in an output folder of another run")
    p.add_argument("--no-progress", action="store_true", help="no progress line")


def option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The typed options that were given, by configuration key (values as parsed: Path, int, bool)."""
    values = {
        "catalog.shear": args.catalog,
        "catalog.gold": args.gold,
        "catalog.wlinfo": args.wlinfo,
        "images.source": args.images,
        "model.checkpoint": args.model,
        "cluster.kind": args.cluster,
        "cluster.n_workers": args.workers,
        "output.out": args.out,
        "output.overwrite": True if args.overwrite else None,
        "output.progress": False if args.no_progress else None,
    }
    return {key: value for key, value in values.items() if value is not None}


def build_config(args: argparse.Namespace):  # -> RunConfig
    """The RunConfig of these arguments: YAML, then ``--set``, then the typed options."""
    from survey_deblend.config import load
    from survey_deblend.config.run import RunConfig

    return load(RunConfig, args.config, args.overrides, values=option_values(args))


def run_with_cluster(config, inputs=None) -> int:  # config: RunConfig, inputs: RunInputs | None
    """Make the client of ``config.cluster``, run, close what was made."""
    from survey_deblend.cluster import open_client
    from survey_deblend.pipeline import run

    with open_client(config.cluster) as client:
        run(config, client, inputs=inputs)
    return 0


def _run(args: argparse.Namespace) -> int:
    from survey_deblend.pipeline.inputs import check_inputs

    config = build_config(args)
    return run_with_cluster(config, check_inputs(config))  # the cluster kind is checked by make_client

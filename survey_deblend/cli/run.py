"""``survey-deblend run``: the catalog through cutouts and the model to Parquet, on a Dask cluster.

Builds one ``RunConfig`` from ``--config`` (YAML), ``--set key=value`` and the explicit options (which win),
checks the arguments a user can get wrong (cluster kind, model file, output folder) before starting anything,
makes the client with ``--cluster`` and calls ``survey_deblend.pipeline.run``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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


def build_config(args: argparse.Namespace):  # -> RunConfig
    """The RunConfig of these arguments: YAML, then ``--set``, then the explicit options."""
    from survey_deblend.config import load
    from survey_deblend.config.run import RunConfig

    overrides = list(args.overrides)
    explicit = {
        "catalog.shear": args.catalog,
        "catalog.gold": args.gold,
        "catalog.wlinfo": args.wlinfo,
        "images.source": args.images,
        "model.checkpoint": args.model,
        "cluster.kind": args.cluster,
        "cluster.n_workers": args.workers,
        "output.out": args.out,
    }
    overrides += [f"{key}={value}" for key, value in explicit.items() if value is not None]
    if args.overwrite:
        overrides.append("output.overwrite=true")
    if args.no_progress:
        overrides.append("output.progress=false")
    return load(RunConfig, args.config, overrides)


def check_arguments(config) -> None:  # config: RunConfig
    """Fail fast, with one line, on what the user can get wrong before any cluster starts."""
    import os

    from survey_deblend.cluster import check_cluster_kind
    from survey_deblend.errors import ConfigError, InputError
    from survey_deblend.pipeline.manifest import check_writable

    check_cluster_kind(config.cluster.kind)
    if config.catalog.shear is None:
        raise ConfigError("catalog.shear: no shear catalog given (--catalog FILE)")
    checkpoint = config.model.checkpoint
    if checkpoint is not None and (not Path(checkpoint).is_file() or not os.access(checkpoint, os.R_OK)):
        raise InputError(f"model checkpoint {checkpoint}: not found or not readable")
    check_writable(Path(config.output.out))


def run_with_cluster(config) -> int:
    """Make the client of ``config.cluster``, run, close what was made."""
    from survey_deblend.cluster import make_client
    from survey_deblend.pipeline import run

    client, cluster = make_client(config.cluster)
    try:
        run(config, client)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return 0


def _run(args: argparse.Namespace) -> int:
    config = build_config(args)
    check_arguments(config)
    return run_with_cluster(config)

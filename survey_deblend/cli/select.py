"""``survey-deblend select``: the catalog stage on its own (cuts, position match, cut flow) -> Parquet.

The ``catalog:`` section of ``--config`` (plus ``--set`` overrides) is the base; explicit flags override it.
``--make-demo-catalog DIR`` writes synthetic catalogs in the SVA1 schema; ``--demo`` writes them under
``catalogs/demo/`` and selects from them in one go (what ``make demo`` runs until the full demo exists).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from survey_deblend.cli.options import add_config_options

DEMO_DIR = Path("catalogs/demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "select",
        help="select im3shape galaxies, match gold positions, print the cut flow",
        description="Select DES SVA1 im3shape galaxies (cuts as configured), match them to gold positions by "
        "COADD_OBJECTS_ID or on the sky, and write the selection as Parquet with its cut flow beside it.",
    )
    parser.add_argument("--catalog", type=Path, help="im3shape shear catalog (FITS or Parquet)")
    parser.add_argument("--gold", type=Path, help="gold catalog (positions; ID join or sky match)")
    parser.add_argument("--wlinfo", type=Path, help="row-matched wlinfo file (positions)")
    parser.add_argument("--match", choices=["id", "sky"], help="join on COADD_OBJECTS_ID (default) or on the sky")
    parser.add_argument("--radius-arcsec", type=float, help="sky-match radius in arcsec (default 1)")
    parser.add_argument("--chunk-rows", type=int, help="rows per streamed chunk (default 1000000)")
    add_config_options(parser, "pipelines/NAME.yaml; its catalog: section is used", "catalog.cuts.snr_w_min=15")
    parser.add_argument("--out", type=Path, help="selection Parquet file; the cut flow goes to <stem>.cutflow.json")
    parser.add_argument(
        "--make-demo-catalog",
        type=Path,
        metavar="DIR",
        help="only write synthetic im3shape/gold/wlinfo catalogs (SVA1 schema) into DIR",
    )
    parser.add_argument(
        "--demo", action="store_true", help=f"write synthetic catalogs under {DEMO_DIR}/ and select from them"
    )
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the synthetic catalogs (default 20000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic catalogs")
    parser.add_argument("--parquet", action="store_true", help="write the synthetic catalogs as Parquet")
    parser.set_defaults(func=run_select)


def _catalog_config(args: argparse.Namespace):
    from survey_deblend.config import load
    from survey_deblend.config.run import RunConfig

    flags = {
        "shear": args.catalog,
        "gold": args.gold,
        "wlinfo": args.wlinfo,
        "match": args.match,
        "match_radius_arcsec": args.radius_arcsec,
        "chunk_rows": args.chunk_rows,
    }
    values = {f"catalog.{key}": value for key, value in flags.items() if value is not None}  # typed values
    return load(RunConfig, args.config, args.overrides, values=values).catalog


def _write_demo_catalogs(out_dir: Path, args: argparse.Namespace):
    from survey_deblend.catalog.synthetic import write_catalogs
    from survey_deblend.errors import ConfigError

    if args.rows < 1:
        raise ConfigError(f"--rows: expected a positive number, got {args.rows}")
    paths = write_catalogs(out_dir, n=args.rows, seed=args.seed, fmt="parquet" if args.parquet else "fits")
    print(f"wrote synthetic catalogs ({args.rows:,} rows): {paths.im3shape}, {paths.gold}, {paths.wlinfo}")
    return paths


def run_select(args: argparse.Namespace) -> int:
    """Run the catalog stage from the command line; returns the exit code."""
    from survey_deblend.catalog.cutflow import EmptySelectionError
    from survey_deblend.catalog.select import cutflow_path, select_galaxies
    from survey_deblend.errors import ConfigError, SurveyDeblendError

    if args.make_demo_catalog is not None:
        _write_demo_catalogs(args.make_demo_catalog, args)
        return 0
    if args.demo:
        paths = _write_demo_catalogs(DEMO_DIR, args)
        args.catalog, args.gold = args.catalog or paths.im3shape, args.gold or paths.gold
        args.out = args.out or DEMO_DIR / "selected.parquet"
    if args.out is None:
        raise ConfigError("select: --out is required (the selection's Parquet file)")
    cfg = _catalog_config(args)
    try:
        selection = select_galaxies(cfg)
    except EmptySelectionError as exc:
        print(exc.cut_flow.format())
        try:
            print(f"no galaxy left; cut flow written to {exc.cut_flow.write_json(cutflow_path(args.out))}")
        except OSError as write_error:
            print(f"no galaxy left; cut flow not written ({write_error.strerror or write_error})")
        raise
    print(selection.cut_flow.format())
    try:
        table_path, flow_path = selection.write(args.out)
    except OSError as exc:
        raise SurveyDeblendError(f"{args.out}: cannot write the selection ({exc.strerror or exc})") from None
    print(f"wrote {len(selection.table):,} galaxies to {table_path} (cut flow: {flow_path})")
    return 0

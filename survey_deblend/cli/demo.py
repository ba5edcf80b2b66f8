"""``survey-deblend demo``: the offline demo (simulated DES-like field -> local SIA server -> run -> comparison)."""

from __future__ import annotations

import argparse
from pathlib import Path

from survey_deblend.cli.options import add_config_options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo",
        help="offline demo: simulate a DES-like field, serve it over SIA, run the shipped model, compare",
        description="Builds the field in WORKDIR/field the first time, serves it through the local SIA server "
        "(or reads the tiles with --images tiles), runs the same job as 'survey-deblend run' with the shipped "
        "checkpoint into WORKDIR/out, and prints the predicted-versus-im3shape comparison.",
    )
    p.add_argument("--images", choices=("sia", "tiles"), default="sia", help="how the run reads the field")
    p.add_argument("--workdir", type=Path, default=Path("demo-work"), help="work folder (default: demo-work)")
    p.add_argument("--cluster", help="local (default), local-cuda or tcp://host:port")
    p.add_argument("--workers", type=int, help="number of workers of the local cluster")
    p.add_argument("--model", type=Path, help="checkpoint (default: the shipped one)")
    p.add_argument("--n-tiles", type=int, default=2, help="tiles of the simulated field (first run only)")
    p.add_argument("--tile-size", type=int, default=1000, help="tile side in pixels (first run only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated field (first run only)")
    add_config_options(p, None, "model.measure_recon=false")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from survey_deblend.pipeline.demo import demo

    options = {"cluster.kind": args.cluster, "cluster.n_workers": args.workers, "model.checkpoint": args.model}
    values = {key: value for key, value in options.items() if value is not None}  # typed, never YAML text
    return demo(args.workdir, images=args.images, overrides=list(args.overrides), n_tiles=args.n_tiles,
                tile_size_pix=args.tile_size, seed=args.seed, values=values)

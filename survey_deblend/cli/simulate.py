"""``survey-deblend simulate``: LSST training / ring data sets, or a DES-like survey field, with GalSim."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from survey_deblend.cli.options import add_config_options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``simulate lsst`` and ``simulate field``."""
    parser = subparsers.add_parser("simulate", help="simulate LSST training stamps or a DES-like survey field")
    kinds = parser.add_subparsers(dest="target", metavar="TARGET", required=True)

    lsst = kinds.add_parser("lsst", help="LSST 45x45 ugrizy stamps (blends or ring shear-response sets)")
    lsst.add_argument("--out", type=Path, required=True, help="output folder (manifest.json + shards)")
    lsst.add_argument("--n", type=int, help="number of samples (a multiple of 8 for --kind ring)")
    lsst.add_argument("--seed", type=int, help="random seed (output depends only on it, not on --workers)")
    lsst.add_argument("--kind", choices=("blends", "ring", "paired"),
                      help="blends (training), ring or paired (+g/-g sharing galaxies and noise; shear response)")
    lsst.add_argument("--shear", type=float, dest="ring_shear", help="the constant shear of ring and paired sets")
    lsst.add_argument("--workers", type=int, help="worker processes (shards are generated in parallel)")
    lsst.add_argument("--shard-size", type=int, help="samples per shard")
    lsst.add_argument("--des-pairs", action="store_true", default=None, help="also render each scene as DES")
    _common(lsst)
    lsst.set_defaults(func=_run_lsst)

    field = kinds.add_parser("field", help="DES-like coadd tiles (grizY FITS) with SVA1-schema catalogs")
    field.add_argument("--out", type=Path, required=True, help="output folder (tiles/, *.fits, truth.parquet)")
    field.add_argument("--tiles", type=int, dest="n_tiles", help="number of tiles (stacked north-south)")
    field.add_argument("--tile-size", type=int, dest="tile_size_pix", help="tile side in pixels")
    field.add_argument("--seed", type=int, help="random seed")
    field.add_argument("--density", type=float, dest="density_per_arcmin2", help="galaxies per square arcmin")
    field.add_argument("--shear", type=_shear_pair, metavar="G1,G2",
                       help="one constant shear on the whole field (a paired test: the same seed with -G1,-G2)")
    _common(field)
    field.set_defaults(func=_run_field)


def _shear_pair(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected G1,G2 (two numbers), got {text!r}")
    return values


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser, "YAML with 'lsst:' / 'field:' sections (pipelines/sim_lsst.yaml)", "lsst.n=64")


def _load(args: argparse.Namespace, section: str, names: tuple[str, ...]):
    from survey_deblend.config import load
    from survey_deblend.config.sim import SimConfig

    values = {f"{section}.{name}": getattr(args, name, None) for name in names}  # typed, never YAML text
    values = {key: value for key, value in values.items() if value is not None}
    return getattr(load(SimConfig, args.config, args.overrides, values=values), section)


def _run_lsst(args: argparse.Namespace) -> int:
    from survey_deblend.sim.lsst import make_lsst_dataset

    cfg = _load(args, "lsst", ("n", "seed", "kind", "workers", "shard_size", "des_pairs", "ring_shear"))
    start = time.perf_counter()
    out = make_lsst_dataset(args.out, config=cfg)
    seconds = time.perf_counter() - start
    print(
        f"wrote {cfg.n} {cfg.kind} samples ({-(-cfg.n // cfg.shard_size)} shards{', with DES pairs' * cfg.des_pairs})"
        f" to {out} in {seconds:.1f} s ({1e3 * seconds * cfg.workers / cfg.n:.2f} ms per sample per worker)"
    )
    return 0


def _run_field(args: argparse.Namespace) -> int:
    import pandas as pd

    from survey_deblend.sim.field import make_des_field

    cfg = _load(args, "field", ("n_tiles", "tile_size_pix", "seed", "density_per_arcmin2", "shear"))
    start = time.perf_counter()
    paths = make_des_field(args.out, config=cfg)
    truth = pd.read_parquet(paths.truth, columns=["snr_r"])
    print(
        f"wrote {cfg.n_tiles} tiles x 5 bands ({cfg.tile_size_pix}x{cfg.tile_size_pix} px) to {paths.tiles_dir}, "
        f"{len(truth)} galaxies ({int((truth['snr_r'] >= cfg.detection_snr).sum())} in the catalogs) "
        f"in {time.perf_counter() - start:.1f} s\n  im3shape: {paths.im3shape}\n  gold: {paths.gold}\n"
        f"  wlinfo: {paths.wlinfo}\n  truth: {paths.truth}"
    )
    return 0

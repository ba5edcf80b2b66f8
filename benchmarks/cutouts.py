"""Cutout throughput: 5-band 45x45 stamps per second on a DES-like field, three ways, in one run.

(a) ``TileSource`` with rows grouped by tile (each tile-band opened once per group), (b) the naive way (open the
tile file and run astropy ``Cutout2D`` per galaxy per band), (c) ``SIASource`` against the local SIA server over
a real socket (concurrency 4, no cache). Prints one JSON line with ``tile_stamps_per_s``, ``tile_vs_naive``,
``tile_vs_sia`` and the raw rates. ``--quick`` runs a smaller field in well under a minute.

A second JSON line (``cutouts_sia_dense``) puts side by side, for a field at the SVA1 shear-catalogue density
(2.12 M galaxies over 139 deg2, Jarvis et al. 2016: ~8.1e-5 per pixel, ~8,000 per 10k x 10k tile), the two
ways ``SIASource`` reads an image: one cutout request per galaxy and band, or the whole image once, cut
locally (``whole_image_threshold``): requests, bytes served, seconds, with no added latency and with
``--latency-ms`` added by the server to every answer (a remote archive's round trip).

A third line (``cutouts_band_faults``) gives ``predicted_frac_band_faults``: the share of galaxies still usable
(hence predicted) when the server has issue 14's bad night (5 % NaN, 5 % truncated, 5 % HTML, 20 % HTTP 503),
next to the share that the former rule (any failed band loses the galaxy) would have kept.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS, FITSFixedWarning

from survey_deblend.cutouts.server import running_server
from survey_deblend.cutouts.sia import SIASource
from survey_deblend.cutouts.synthetic import Blob, tile_wcs, write_field
from survey_deblend.cutouts.tiles import TileSource
from survey_deblend.surveys import DES_BANDS, pixel_scale

BANDS = DES_BANDS
STAMP = 45


def make_field(
    out: Path, n_side: int, tile_pix: int, n_gal: int, seed: int, **tile_kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """An n_side x n_side grid of overlapping tiles with noise and galaxies; returns galaxy positions."""
    rng = np.random.default_rng(seed)
    scale = pixel_scale("DES") / 3600
    step = (tile_pix - 100) * scale  # 100 px overlap, like DES tiles
    centre = (70.0, -45.0)
    centres = [
        (centre[0] + i * step / np.cos(np.radians(centre[1] + j * step)), centre[1] + j * step)
        for j in range(n_side) for i in range(n_side)
    ]
    # galaxies uniformly over the tiled area, away from the outer border
    wcs0 = tile_wcs(*centres[0], (tile_pix, tile_pix))
    span = (n_side - 1) * (tile_pix - 100) + tile_pix - 80
    x = rng.uniform(40, 40 + span, n_gal) - (n_side - 1) * (tile_pix - 100)
    y = rng.uniform(40, 40 + span, n_gal)
    ra, dec = wcs0.all_pix2world(x, y, 0)
    blobs = [Blob(float(r), float(d), 1000.0, 0.9, 0.6) for r, d in zip(ra[:200], dec[:200], strict=True)]
    write_field(out, centres, blobs, tile_size_pix=tile_pix, bands=BANDS, noise_sigma=1.0, seed=seed, **tile_kwargs)
    return np.asarray(ra), np.asarray(dec)


def bench_tiles(source: TileSource, ra: np.ndarray, dec: np.ndarray) -> float:
    """Seconds to fetch every row, grouped by locality key as the pipeline does."""
    start = time.perf_counter()
    keys = source.locality_keys(ra, dec)
    for key in np.unique(keys):
        rows = keys == key
        source.fetch(ra[rows], dec[rows], STAMP)
    return time.perf_counter() - start


def bench_naive(source: TileSource, ra: np.ndarray, dec: np.ndarray) -> float:
    """Seconds to cut every row the naive way: per galaxy and band, open the file, read the WCS, Cutout2D."""
    keys = source.locality_keys(ra, dec)  # the naive way is even given the right tile for free
    files = {(t.tile, t.band): t.path for t in source.tiles}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        for r, d, key in zip(ra, dec, keys, strict=True):
            for band in BANDS:
                path = files.get((key, band))
                if path is None:
                    continue
                with fits.open(path, memmap=True) as hdul:
                    cutout = Cutout2D(hdul[1].data, SkyCoord(r, d, unit="deg"), STAMP, wcs=WCS(hdul[1].header),
                                      mode="partial", fill_value=0.0)
                    np.asarray(cutout.data, dtype=np.float32)
    return time.perf_counter() - start


def bench_sia(tiles_dir: Path, ra: np.ndarray, dec: np.ndarray) -> float:
    """Seconds to fetch every row through the local SIA server (real socket, concurrency 4, no cache)."""
    with running_server(tiles_dir) as url:
        source = SIASource(url, bands=BANDS, concurrency=4, timeout_s=30, retries=2, backoff_s=0.1)
        keys = source.locality_keys(ra, dec)
        start = time.perf_counter()
        for key in np.unique(keys):
            rows = keys == key
            batch = source.fetch(ra[rows], dec[rows], STAMP)
            if not batch.usable.all():
                raise RuntimeError(f"SIA benchmark rows failed: {batch.status_counts()}")
        return time.perf_counter() - start


SVA1_PER_PIXEL = 2.12e6 / (139 * 3600**2 / 0.2637**2)  # im3shape galaxies per DES pixel (DES_SVA1.md)


def bench_sia_modes(tiles_dir: Path, ra: np.ndarray, dec: np.ndarray, latency_s: float) -> dict[str, dict]:
    """Requests, bytes and seconds of one fetch of every row, per galaxy (``cutouts``) and per image (``whole``)."""
    from survey_deblend.cutouts.server import Faults

    figures = {}
    for mode, threshold in (("cutouts", 0), ("whole", 1)):
        faults = Faults(delay_s=latency_s) if latency_s > 0 else None
        with running_server(tiles_dir, faults=faults) as url, tempfile.TemporaryDirectory() as cache:
            source = SIASource(url, bands=BANDS, concurrency=4, timeout_s=60, retries=2, backoff_s=0.1,
                               whole_image_threshold=threshold, cache_dir=cache)
            start = time.perf_counter()
            choice = source.plan(ra, dec, STAMP)
            batch = source.fetch(ra, dec, STAMP, choice=choice)
            seconds = time.perf_counter() - start
            if not batch.usable.all():
                raise RuntimeError(f"SIA {mode} rows failed: {batch.status_counts()}")
            server = url.server
            figures[mode] = {
                "requests": int(sum(server.request_counts.values())), "bytes": int(sum(server.bytes_sent.values())),
                "seconds": round(seconds, 2), "images_whole": sum(m == "whole_image" for m in choice.modes().values()),
            }
    return figures


def dense_line(args: argparse.Namespace) -> dict:
    """The side-by-side figure of the two SIA modes on a field at the SVA1 density."""
    tile_pix = 1000 if args.quick else 2000
    n_side = 2
    n_gal = int(round(SVA1_PER_PIXEL * args.density_factor * (n_side * (tile_pix - 100) + 100) ** 2))
    with tempfile.TemporaryDirectory(prefix="bench-dense-") as tmp:
        tiles_dir = Path(tmp) / "tiles"
        ra, dec = make_field(tiles_dir, n_side, tile_pix, n_gal, args.seed, compress=True,
                             layout=("SCI", "MSK", "WGT"))
        fast = bench_sia_modes(tiles_dir, ra, dec, 0.0)
        slow = bench_sia_modes(tiles_dir, ra, dec, args.latency_ms / 1000.0)
    line = {"benchmark": "cutouts_sia_dense", "quick": args.quick, "tiles": n_side * n_side, "tile_pix": tile_pix,
            "galaxies": n_gal, "galaxies_per_tile": round(n_gal / n_side**2), "bands": len(BANDS),
            "latency_ms": args.latency_ms}
    for label, figures in (("", fast), ("latency_", slow)):
        for mode, values in figures.items():
            for key, value in values.items():
                if label and key in ("bytes", "images_whole"):
                    continue  # the same as without latency
                line[f"{label}{mode}_{key}"] = value
    line["requests_ratio"] = round(fast["cutouts"]["requests"] / fast["whole"]["requests"], 1)
    line["bytes_ratio"] = round(fast["cutouts"]["bytes"] / fast["whole"]["bytes"], 2)
    line["seconds_ratio"] = round(fast["cutouts"]["seconds"] / fast["whole"]["seconds"], 2)
    line["latency_seconds_ratio"] = round(slow["cutouts"]["seconds"] / slow["whole"]["seconds"], 2)
    return line


def band_faults_line(args: argparse.Namespace) -> dict:
    """Usable rows under issue 14's bad night (5 % NaN, 5 % truncated, 5 % HTML, 20 % HTTP 503 per request),
    with the configured retries (``--faults-retries``): every usable row is predicted, so this is
    ``predicted_frac_band_faults``."""
    from survey_deblend.cutouts.server import Faults

    n_gal = 100 if args.quick else 250
    faults = Faults(error_rate=0.20, html_error_rate=0.05, truncate_rate=0.05, nan_rate=0.05, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        tiles_dir = Path(tmp) / "tiles"
        ra, dec = make_field(tiles_dir, 2, 600, n_gal, args.seed)
        with running_server(tiles_dir, faults=faults) as url:
            retries = {} if args.faults_retries is None else {"retries": args.faults_retries}
            source = SIASource(url, bands=BANDS, concurrency=4, timeout_s=30, backoff_s=0.01, **retries)
            batch = source.fetch(ra, dec, STAMP)
    usable = batch.usable
    return {
        "benchmark": "cutouts_band_faults", "quick": args.quick, "galaxies": n_gal, "retries": source.http.retries,
        "predicted_frac_band_faults": round(float(usable.mean()), 4),
        "frac_with_a_failed_band": round(float((batch.failed_bands != "").mean()), 4),
        "predicted_frac_if_any_band_fatal": round(float((usable & (batch.failed_bands == "")).mean()), 4),
        "statuses": batch.status_counts(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small field, < 1 minute")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=50.0, help="added per answer in the dense comparison")
    parser.add_argument("--density-factor", type=float, default=1.0, help="galaxy density in units of SVA1's")
    parser.add_argument("--dense-only", action="store_true", help="only the dense SIA comparison")
    parser.add_argument("--faults-only", action="store_true", help="only the band-faults figure")
    parser.add_argument("--faults-retries", type=int, default=None, help="retries in the band-faults figure "
                        "(default: the configuration's)")
    args = parser.parse_args(argv)
    if args.dense_only or args.faults_only:
        print(json.dumps(dense_line(args) if args.dense_only else band_faults_line(args)))
        return
    n_side, tile_pix, n_gal, n_naive, n_sia = (2, 600, 400, 60, 100) if args.quick else (3, 1000, 5000, 300, 600)
    with tempfile.TemporaryDirectory(prefix="bench-cutouts-") as tmp:
        tiles_dir = Path(tmp) / "tiles"
        ra, dec = make_field(tiles_dir, n_side, tile_pix, n_gal, args.seed)
        source = TileSource(tiles_dir, bands=BANDS)
        t_tiles = bench_tiles(source, ra, dec)
        t_naive = bench_naive(source, ra[:n_naive], dec[:n_naive])
        t_sia = bench_sia(tiles_dir, ra[:n_sia], dec[:n_sia])
    tile_rate, naive_rate, sia_rate = n_gal / t_tiles, n_naive / t_naive, n_sia / t_sia
    print(json.dumps({
        "benchmark": "cutouts", "quick": args.quick, "bands": len(BANDS), "stamp_pix": STAMP,
        "tiles": n_side * n_side, "tile_pix": tile_pix, "n_tile": n_gal, "n_naive": n_naive, "n_sia": n_sia,
        "tile_stamps_per_s": round(tile_rate, 1), "naive_stamps_per_s": round(naive_rate, 1),
        "sia_stamps_per_s": round(sia_rate, 1), "tile_vs_naive": round(tile_rate / naive_rate, 2),
        "tile_vs_sia": round(tile_rate / sia_rate, 2),
    }))
    print(json.dumps(dense_line(args)))
    print(json.dumps(band_faults_line(args)))


if __name__ == "__main__":
    main()

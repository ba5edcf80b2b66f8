"""Simulation speed: milliseconds per LSST blend per core, side by side with plain GalSim ``drawImage``.

Prints one JSON line per measurement:

- ``simulate_lsst_blends``: ``ms_per_blend_per_core`` (one process, 6 bands, blend + isolated + clean + truth),
  ``galaxies_per_blend``, and for the same scenes ``galsim_ms_per_blend`` (a direct GalSim implementation:
  ``Convolve(Sum, PSF).drawImage`` per band for the central and for the scene) and ``speedup_vs_galsim``.
- ``simulate_lsst_blends_des_pairs``: the same with the paired DES render of every scene.
- ``simulate_lsst_dataset``: ``make_lsst_dataset`` end to end (process pool, writing shards), ``blends_per_s``.
- ``simulate_des_field``: the demo-size DES-like field (2 tiles x 1000 px + catalogs), ``seconds`` against the
  demo's budget ``goal_s`` (60 s: ``make demo`` builds it on first use), ``within_goal``, and ``usable_shapes``
  (im3shape rows passing SNR_W > 20 and both flags, what the demo can compare). Measured here rather than
  asserted in a test, where a loaded machine would fail it for the wrong reason.

``--quick`` runs the same measurements on fewer samples (well under a minute); the field stays demo size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import galsim

from survey_deblend.config.sim import LsstSimConfig
from survey_deblend.sim.field import make_des_field
from survey_deblend.sim.lsst import generate_samples, make_lsst_dataset
from survey_deblend.sim.psf import psf_for
from survey_deblend.sim.render import galsim_profile
from survey_deblend.sim.scenes import draw_scene
from survey_deblend.surveys import LSST_BANDS

DEMO_FIELD_GOAL_S = 60.0  # the demo simulates its field on first use: it must stay well under a minute


def time_generation(cfg: LsstSimConfig, n: int) -> tuple[float, float, float]:
    """CPU and wall milliseconds per sample of ``generate_samples`` in this process (after a warm-up), and
    galaxies per blend. CPU time is the per-core cost even when the shared machine is oversubscribed."""
    generate_samples(cfg, 10_000_000, 3)  # warm-up: colour table, PSF tables
    cpu, wall = time.process_time(), time.perf_counter()
    arrays = generate_samples(cfg, 0, n)
    cpu_ms, wall_ms = 1e3 * (time.process_time() - cpu) / n, 1e3 * (time.perf_counter() - wall) / n
    return cpu_ms, wall_ms, float(1 + arrays["n_neighbours"].mean())


def time_galsim(cfg: LsstSimConfig, n: int) -> float:
    """CPU milliseconds per blend drawing the same scenes with GalSim's drawImage (clean + scene, 6 bands)."""
    psfs = [psf_for("LSST", b, cfg.psf_model) for b in LSST_BANDS]
    scenes = [draw_scene(cfg, i, 0.2) for i in range(n)]
    start = time.process_time()
    for scene in scenes:
        pop = scene.population
        shapes, flux = pop.shapes(scene.x, scene.y), pop.flux("LSST", LSST_BANDS)
        for b, psf in enumerate(psfs):
            gals = [galsim_profile(shapes, i, flux[i, b]) for i in range(len(pop))]
            galsim.Convolve(gals[0], psf).drawImage(nx=45, ny=45, scale=0.2)
            if len(gals) > 1:
                galsim.Convolve(galsim.Sum(gals), psf).drawImage(nx=45, ny=45, scale=0.2)
    return 1e3 * (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (under a minute)")
    args = parser.parse_args()
    n, n_galsim, n_dataset = (300, 40, 400) if args.quick else (3000, 300, 4000)
    cfg = LsstSimConfig(n=n, seed=1)

    ms, wall_ms, galaxies = time_generation(cfg, n)
    galsim_ms = time_galsim(cfg, n_galsim)
    print(json.dumps({"benchmark": "simulate_lsst_blends", "ms_per_blend_per_core": round(ms, 3),
                      "wall_ms_per_blend": round(wall_ms, 3), "galaxies_per_blend": round(galaxies, 3),
                      "galsim_ms_per_blend": round(galsim_ms, 3), "speedup_vs_galsim": round(galsim_ms / ms, 2),
                      "n": n, "n_galsim": n_galsim, "timer": "process CPU time"}))  # fmt: skip

    ms_des, wall_des, _ = time_generation(LsstSimConfig(n=n, seed=1, des_pairs=True), n // 2)
    print(json.dumps({"benchmark": "simulate_lsst_blends_des_pairs", "ms_per_blend_per_core": round(ms_des, 3),
                      "wall_ms_per_blend": round(wall_des, 3), "galaxies_per_blend": round(galaxies, 3),
                      "n": n // 2, "timer": "process CPU time"}))  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        workers = 2
        start = time.perf_counter()
        make_lsst_dataset(Path(tmp) / "ds", n=n_dataset, seed=2, workers=workers, shard_size=n_dataset // 4)
        wall = time.perf_counter() - start
        print(json.dumps({"benchmark": "simulate_lsst_dataset", "workers": workers, "n": n_dataset,
                          "blends_per_s": round(n_dataset / wall, 1),
                          "ms_per_blend_per_core": round(1e3 * wall * workers / n_dataset, 3),
                          "note": "end to end: process start-up, shard writing, manifest"}))  # fmt: skip

        print(json.dumps(time_des_field(Path(tmp) / "field")))


def time_des_field(out: Path, n_tiles: int = 2, tile_size_pix: int = 1000) -> dict:
    """Wall time of the demo-size field against the demo's budget, and how many shapes it gives the demo."""
    import pandas as pd
    from astropy.table import Table

    start = time.perf_counter()
    paths = make_des_field(out, n_tiles=n_tiles, tile_size_pix=tile_size_pix, seed=0)
    seconds = time.perf_counter() - start
    im3 = Table.read(paths.im3shape).to_pandas()
    usable = int(((im3["SNR_W"] > 20) & (im3["ERROR_FLAG"] == 0) & (im3["INFO_FLAG"] == 0)).sum())
    return {"benchmark": "simulate_des_field", "seconds": round(seconds, 2), "goal_s": DEMO_FIELD_GOAL_S,
            "within_goal": seconds < DEMO_FIELD_GOAL_S, "tiles": n_tiles, "tile_size_pix": tile_size_pix,
            "galaxies": len(pd.read_parquet(paths.truth, columns=["ra"])), "usable_shapes": usable}  # fmt: skip


if __name__ == "__main__":
    main()

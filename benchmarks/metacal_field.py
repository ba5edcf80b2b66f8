"""Calibrated shear of the DES-like field through the real ``survey-deblend run``: a paired test, one JSON line.

Two fields are simulated with ``survey-deblend simulate field --shear G1,G2`` and ``--shear -G1,-G2`` and the same
seed (same galaxies, positions about the field centre sheared, same noise), each run through ``survey-deblend
run`` (CLI subprocess, LocalCluster, the shipped checkpoint, metacalibration on, ``measure_recon`` off), and the
two outputs matched by ``coadd_objects_id`` (the pair id; a galaxy selected in one field only, or without a
response in either, drops its pair). ``calibration.response.paired_shear_bias`` gives m and c: raw (``e_pred``,
R = 1) and calibrated (``e_mcal`` with each galaxy's R; ``<R>^-1 <e>``). Both components carry the shear, so one
pair of fields measures m1 and m2.

Keys: ``field_m_cal`` (the worse component), ``field_m_err`` (its jackknife error, the larger one), ``field_m_raw``,
``field_m_raw_err``, ``field_c_cal``, per-component ``m1_cal, m2_cal, c1_cal, c2_cal, m1_raw, m2_raw``, ``n_pairs``,
``R_mean``, the seconds of simulation and runs, ``run_galaxies_per_s`` (metacal on), the load average.

    nice -n 19 python benchmarks/metacal_field.py [--tiles 4 --tile-size 2000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def cli(*args: str) -> None:
    """``survey-deblend ARGS`` in a subprocess (this checkout's package); raises with its last line on failure."""
    proc = subprocess.run([sys.executable, "-m", "survey_deblend", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"survey-deblend {args[0]} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1]}")


def simulate(work: Path, sign: str, shear: tuple[float, float], tiles: int, size: int, seed: int) -> Path:
    """The field of one sign (kept between invocations: ``complete.txt`` marks a finished one)."""
    out = work / f"field{sign}-{tiles}x{size}-{seed}-{shear[0]}-{shear[1]}"
    if not (out / "complete.txt").is_file():
        g = [float(f"{sign}1") * v for v in shear]
        cli("simulate", "field", "--out", str(out), "--tiles", str(tiles), "--tile-size", str(size), "--seed",
            str(seed), f"--shear={g[0]},{g[1]}")  # fmt: skip (= : a negative value is not an option)
        (out / "complete.txt").write_text("done\n")
    return out


def run_field(field: Path, out: Path, workers: int, snr_min: float) -> float:
    """``survey-deblend run`` on one field (tiles source, metacal on); returns the wall seconds."""
    t0 = time.perf_counter()
    cli("run", "--catalog", str(field / "im3shape.fits"), "--gold", str(field / "gold.fits"),
        "--images", f"tiles:{field / 'tiles'}", "--out", str(out), "--workers", str(workers), "--overwrite",
        "--no-progress", "--set", "catalog.match=id", "--set", "model.measure_recon=false",
        "--set", "model.metacal=true", "--set", "cluster.dashboard_address=:0",
        "--set", f"catalog.cuts.snr_w_min={snr_min}")  # fmt: skip
    return time.perf_counter() - t0


def paired_figures(plus: pd.DataFrame, minus: pd.DataFrame, shear: tuple[float, float]) -> dict:
    """m and c, raw and calibrated, of the galaxies present in both runs (pair id = coadd_objects_id)."""
    from survey_deblend.calibration import paired_shear_bias

    both = np.intersect1d(plus["coadd_objects_id"], minus["coadd_objects_id"])
    frames = [f.set_index("coadd_objects_id").loc[both] for f in (plus, minus)]
    table = pd.concat(frames)
    pair = table.index.to_numpy()
    g = np.concatenate([np.tile(shear, (len(both), 1)), np.tile(-np.asarray(shear), (len(both), 1))])
    R = table[["r11", "r12", "r21", "r22"]].to_numpy(dtype=np.float64).reshape(-1, 2, 2)
    raw = paired_shear_bias(table[["e1_pred", "e2_pred"]].to_numpy(dtype=np.float64), g, pair)
    cal = paired_shear_bias(table[["e1_mcal", "e2_mcal"]].to_numpy(dtype=np.float64), g, pair, R)
    return {"raw": raw, "cal": cal, "n_common": int(len(both))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("work/bench-metacal-field"))
    parser.add_argument("--tiles", type=int, default=4)
    parser.add_argument("--tile-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--shear", type=float, nargs=2, default=(0.02, 0.02), metavar=("G1", "G2"))
    parser.add_argument("--snr-min", type=float, default=20.0, help="catalog.cuts.snr_w_min of both runs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one 600-pixel tile (a smoke run: m_err ~0.2)")
    args = parser.parse_args()
    tiles, size = (1, 600) if args.quick else (args.tiles, args.tile_size)
    shear = (float(args.shear[0]), float(args.shear[1]))
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    fields = {sign: simulate(args.work, sign, shear, tiles, size, args.seed) for sign in ("+", "-")}
    sim_s = time.perf_counter() - t0
    run_s, frames = {}, {}
    for sign, field in fields.items():
        out = args.work / f"out{sign}-{field.name}"
        run_s[sign] = run_field(field, out, args.workers, args.snr_min)
        frames[sign] = pd.read_parquet(out)
    fig = paired_figures(frames["+"], frames["-"], shear)
    raw, cal = fig["raw"], fig["cal"]
    worse = lambda d, k: d[f"{k}1"] if abs(d[f"{k}1"]) >= abs(d[f"{k}2"]) else d[f"{k}2"]  # noqa: E731
    n_rows = int(sum(len(f) for f in frames.values()))
    line = {
        "benchmark": "metacal_field",
        "field": f"{tiles}x{size}px", "seed": args.seed, "shear": list(shear), "snr_w_min": args.snr_min,
        "n_selected": {s: int(len(f)) for s, f in frames.items()}, "n_common": fig["n_common"],
        "n_pairs": cal["n_pairs"],
        "field_m_cal": worse(cal, "m"), "field_m_err": max(cal["m1_err"], cal["m2_err"]),
        "field_m_raw": worse(raw, "m"), "field_m_raw_err": max(raw["m1_err"], raw["m2_err"]),
        "field_c_cal": worse(cal, "c"), "field_c_err": max(cal["c1_err"], cal["c2_err"]),
        "m1_cal": cal["m1"], "m2_cal": cal["m2"], "c1_cal": cal["c1"], "c2_cal": cal["c2"],
        "m1_raw": raw["m1"], "m2_raw": raw["m2"], "c1_raw": raw["c1"], "c2_raw": raw["c2"],
        "R_mean": [[round(v, 4) for v in row] for row in cal["R_mean"]],
        "sim_seconds": round(sim_s, 1), "run_seconds": {s: round(v, 1) for s, v in run_s.items()},
        "run_galaxies_per_s": round(n_rows / sum(run_s.values()), 1),
        "workers": args.workers, "cores": os.cpu_count(),
        "load_avg_1m_before": round(load_before, 2), "load_avg_1m": round(os.getloadavg()[0], 2),
        "quick": bool(args.quick),
    }  # fmt: skip
    print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in line.items()}), flush=True)


if __name__ == "__main__":
    main()

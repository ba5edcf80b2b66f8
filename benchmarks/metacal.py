"""Metacalibration of the shipped network on paired LSST blends (central SNR > 20), one JSON line.

Keys (issue 12): ``paired_m_raw``, ``paired_m_cal``, ``paired_c_cal``, ``paired_m_err`` (the worse of the two
components; m_err of the calibrated estimate), ``mcal_galaxies_per_s`` (CPU, 2 threads: border noise, the five
images with fixnoise and ``Predictor.predict`` on the 5N stamps, the simulation's PSF), and the RMSE of the
network's e against the truth on the original stamps and on the reconvolved noshear images.

    nice python benchmarks/metacal.py [--data work/lsst-paired] [--n 48000] [--quick]

Without ``--data`` (or when it is missing) a paired set (``--kind paired --shear 0.02``) is simulated into
``--work``. A pair is kept or dropped whole, on the mean central SNR of its 8 variants (no shear-dependent
selection). The fixnoise field of a stamp is drawn per base scene and turned with it (like the set's own noise),
so the members of a +g/-g pair share it too.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

BANDS = ("u", "g", "r", "i", "z", "y")


def ensure_paired(path: Path | None, work: Path, n: int, seed: int, shear: float) -> Path:
    """An existing paired set, or one simulated now with the project's generator (2 workers)."""
    if path is not None and (path / "manifest.json").is_file():
        return path
    from survey_deblend.config.sim import LsstSimConfig
    from survey_deblend.sim.lsst import make_lsst_dataset

    out = work / f"paired-{n}-{seed}-{shear}"
    if not (out / "manifest.json").is_file():
        cfg = LsstSimConfig(n=n, seed=seed, kind="paired", workers=2, shard_size=4000, ring_shear=shear)
        make_lsst_dataset(out, config=cfg)
    return out


def selected_stamps(ds, snr_min: float) -> np.ndarray:
    """Indices of the stamps whose pair (8 variants of one base scene) has mean central SNR > ``snr_min``."""
    pair = ds.read("pair_id", slice(None))
    snr = ds.read("snr", slice(None)).astype(np.float64)
    ids, inverse = np.unique(pair, return_inverse=True)
    mean_snr = np.bincount(inverse, snr) / np.bincount(inverse)
    return np.nonzero(mean_snr[inverse] > snr_min)[0]


def pair_noise(pair_id: np.ndarray, variant_turn: np.ndarray, sigma: np.ndarray, seed: int) -> np.ndarray:
    """Fixnoise fields ``(n, B, S, S)``: one unit field per base scene, turned with the variant, times sigma."""
    out = np.empty((len(pair_id), sigma.shape[1], 45, 45), dtype=np.float32)
    for p in np.unique(pair_id):
        field = np.random.default_rng([seed, int(p)]).standard_normal((sigma.shape[1], 45, 45), dtype=np.float32)
        for i in np.nonzero(pair_id == p)[0]:
            out[i] = np.rot90(field, -int(variant_turn[i]), axes=(-2, -1))
    return out * sigma[:, :, None, None].astype(np.float32)


def throughput(predictor, images: np.ndarray, psf_kind: str) -> dict[str, float]:
    """Galaxies per second: images only, and the product path (noise levels, images, network) end to end."""
    from survey_deblend.calibration import PSFModel, border_noise_sigma, metacal_images, metacal_response
    from survey_deblend.calibration.psf import sim_psf_model

    n = len(images)
    psf = sim_psf_model("LSST", BANDS, n)
    if psf_kind == "per_galaxy":  # a DES-like case: every galaxy its own elliptical PSF (no shared kernels)
        rng = np.random.default_rng(0)
        psf = PSFModel(psf.fwhm * rng.uniform(0.9, 1.1, (n, 1)), np.repeat(rng.normal(0, 0.03, (n, 1)), 6, 1),
                       np.repeat(rng.normal(0, 0.03, (n, 1)), 6, 1))  # fmt: skip

    def shapes(stack, mask):
        frame = predictor.predict(stack, BANDS, 0.2, band_mask=mask, measure_recon=False)
        return frame["e1_pred"].to_numpy(), frame["e2_pred"].to_numpy()

    metacal_response(images[:64], psf.subset(slice(0, 64)), 0.2, shapes)  # warm-up (tables, grids, threads)
    clocks = [(time.perf_counter(), time.process_time())]
    sigma = border_noise_sigma(images)
    metacal_images(images, psf, 0.2, sigma)
    clocks.append((time.perf_counter(), time.process_time()))
    metacal_response(images, psf, 0.2, shapes)
    clocks.append((time.perf_counter(), time.process_time()))
    shapes(np.concatenate([images] * 5), np.ones((5 * n, len(BANDS)), bool))  # the network alone on 5N stamps
    clocks.append((time.perf_counter(), time.process_time()))
    wall = [b[0] - a[0] for a, b in zip(clocks[:-1], clocks[1:], strict=True)]
    cpu = [b[1] - a[1] for a, b in zip(clocks[:-1], clocks[1:], strict=True)]
    return {"images_only": n / wall[0], "end_to_end": n / wall[1], "network_only": n / wall[2],
            "images_only_cpu": n / cpu[0], "end_to_end_cpu": n / cpu[1], "network_only_cpu": n / cpu[2]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="a paired set (simulate lsst --kind paired)")
    parser.add_argument("--work", type=Path, default=Path("work/bench-metacal"))
    parser.add_argument("--n", type=int, default=48000, help="stamps to simulate (8 per base scene)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--shear", type=float, default=0.02)
    parser.add_argument("--snr-min", type=float, default=20.0)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    parser.add_argument("--timing-n", type=int, default=2048, help="galaxies in the throughput measurement")
    parser.add_argument("--chunk", type=int, default=2048, help="stamps per processing chunk (multiple of 8)")
    parser.add_argument("--quick", action="store_true", help="800 stamps, 256 timed galaxies")
    args = parser.parse_args()
    torch.set_num_threads(2)

    from survey_deblend.calibration import border_noise_sigma, metacal_response, paired_shear_bias
    from survey_deblend.calibration.psf import sim_psf_model
    from survey_deblend.inference import Predictor
    from survey_deblend.sim.dataset import open_dataset

    n_sim = 800 if args.quick else args.n
    timing_n = 256 if args.quick else args.timing_n
    start = time.perf_counter()
    data = ensure_paired(args.data, args.work, n_sim, args.seed, args.shear)
    ds = open_dataset(data)
    sim_seconds = time.perf_counter() - start
    shear = float(ds.manifest["config"]["ring_shear"])
    predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu")
    idx = selected_stamps(ds, args.snr_min)

    def shapes(stack, mask):
        frame = predictor.predict(stack, BANDS, 0.2, band_mask=mask, measure_recon=False)
        return frame["e1_pred"].to_numpy(), frame["e2_pred"].to_numpy()

    n = len(idx)
    e_raw, e_cal, R = np.empty((n, 2)), np.empty((n, 2)), np.empty((n, 2, 2))
    g = np.stack([ds.read("g1_applied", idx), ds.read("g2_applied", idx)], 1).astype(np.float64)
    truth = np.stack([ds.read("e1", idx), ds.read("e2", idx)], 1).astype(np.float64)
    pair = ds.read("pair_id", idx)
    t_proc = time.perf_counter()
    for lo in range(0, n, args.chunk):
        sl = slice(lo, min(lo + args.chunk, n))
        blend = ds.read("blend", idx[sl])
        e_raw[sl] = np.stack(shapes(blend, np.ones((len(blend), 6), bool)), 1)
        sigma = border_noise_sigma(blend)
        noise = pair_noise(pair[sl], idx[sl] % 2, sigma, args.seed)
        res = metacal_response(blend, sim_psf_model("LSST", BANDS, len(blend)), 0.2, shapes, noise_sigma=sigma,
                               noise=noise)  # fmt: skip
        e_cal[sl], R[sl] = np.stack([res.e1, res.e2], 1), res.R
    proc_seconds = time.perf_counter() - t_proc
    raw = paired_shear_bias(e_raw, g, pair)
    cal = paired_shear_bias(e_cal, g, pair, R)
    worse = lambda d, k: d[f"{k}1"] if abs(d[f"{k}1"]) >= abs(d[f"{k}2"]) else d[f"{k}2"]  # noqa: E731
    rmse = lambda e: float(np.sqrt(np.mean((e - truth) ** 2)))  # noqa: E731
    timing = throughput(predictor, ds.read("blend", idx[:timing_n]), "sim")
    timing_pg = throughput(predictor, ds.read("blend", idx[: timing_n // 2]), "per_galaxy")
    line = {
        "benchmark": "metacal",
        "model": predictor.model_id,
        "n_stamps": n,
        "n_pairs": cal["n_pairs"],
        "shear": shear,
        "paired_m_raw": worse(raw, "m"),
        "paired_m_raw_err": max(raw["m1_err"], raw["m2_err"]),
        "paired_m_cal": worse(cal, "m"),
        "paired_m_err": max(cal["m1_err"], cal["m2_err"]),
        "paired_c_raw": worse(raw, "c"),
        "paired_c_cal": worse(cal, "c"),
        "paired_c_err": max(cal["c1_err"], cal["c2_err"]),
        "m1_cal": cal["m1"], "m2_cal": cal["m2"], "c1_cal": cal["c1"], "c2_cal": cal["c2"],
        "m1_raw": raw["m1"], "m2_raw": raw["m2"], "c1_raw": raw["c1"], "c2_raw": raw["c2"],
        "R_mean": [[round(v, 4) for v in row] for row in cal["R_mean"]],
        "R_diag_std": float(np.std(R[:, [0, 1], [0, 1]])),
        "rmse_e_original": rmse(e_raw),
        "rmse_e_noshear": rmse(e_cal),
        "rmse_ratio": rmse(e_cal) / rmse(e_raw),
        "mcal_galaxies_per_s": timing["end_to_end"],
        "mcal_images_only_galaxies_per_s": timing["images_only"],
        "mcal_galaxies_per_s_per_galaxy_psf": timing_pg["end_to_end"],
        "mcal_images_only_per_galaxy_psf": timing_pg["images_only"],
        "network_only_galaxies_per_s": timing["network_only"],
        "cpu_s_per_galaxy": {k: 1.0 / v for k, v in timing.items() if k.endswith("_cpu")},
        "cpu_s_per_galaxy_per_galaxy_psf": {k: 1.0 / v for k, v in timing_pg.items() if k.endswith("_cpu")},
        "load_avg_1min": os.getloadavg()[0],
        "sim_seconds": round(sim_seconds, 1),
        "process_seconds": round(proc_seconds, 1),
        "quick": bool(args.quick),
    }  # fmt: skip
    print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in line.items()}))


if __name__ == "__main__":
    main()

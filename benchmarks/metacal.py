"""Metacalibration of the shipped network on paired LSST blends (central SNR > 20), streamed over shards.

Keys (issue 12): ``paired_m_raw``, ``paired_m_cal``, ``paired_c_cal``, ``paired_m_err`` (the worse of the two
components; m_err of the calibrated estimate), ``mcal_galaxies_per_s`` (wall clock at ``--threads``: border
noise, the five images with fixnoise and ``Predictor.predict`` on the 5N stamps, the simulation's PSF; with
``wall_ms``/``cpu_ms`` per galaxy and step, best of 3, and ``mcal_galaxies_per_s_cpu_bound_2_cores`` = two
cores each running the path at its process-CPU cost), and the RMSE of the network's e against the truth on
the original stamps and on the reconvolved noshear images. The calibrated keys are given for the plain metacal
estimator and for the 90-degree-symmetrized one (``_sym``: the noshear image symmetrized,
``calibration.response``), side by side on the same stamps.

    nice -n 19 python benchmarks/metacal.py --n 8000 --shards 60 --threads 1 --no-throughput [--quick]
    python benchmarks/metacal.py --throughput-only [--threads 1]

Shard ``i`` is a paired set (``simulate lsst --kind paired --shear 0.02``, seed ``--seed + i``) simulated into
``--work``, measured, kept as a small ``.npz`` and deleted (``metacal_shards``); a shard whose ``.npz`` exists
is skipped, so a stopped run resumes. A JSON line with the running figures follows each shard; the last line
has every key. A pair is kept or dropped whole, on the mean central SNR of its 8 variants (no shear-dependent
selection). The fixnoise field of a stamp is drawn per base scene and turned with it (like the set's own noise),
so the members of a +g/-g pair share it too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

BANDS = ("u", "g", "r", "i", "z", "y")


def throughput(predictor, images: np.ndarray, repeats: int = 3, margin: int = 0) -> dict[str, dict[str, float]]:
    """Per step, best of ``repeats``: wall and process-CPU milliseconds per galaxy (noise levels, the five images
    with the simulation's PSF and with a per-galaxy elliptical PSF, the network on the 5N images, and the product
    path end to end, plain and symmetrized), at the current torch thread count. ``images`` are cut ``margin``
    pixels wider than the model's stamp (the run's metacal margin): the images are made wide, the network reads
    the model's stamp."""
    from survey_deblend.calibration import PSFModel, border_noise_sigma, metacal_images, metacal_response
    from survey_deblend.calibration.psf import sim_psf_model
    from survey_deblend.cutouts.base import crop_margin

    n = len(images)
    psf = sim_psf_model("LSST", BANDS, n)
    rng = np.random.default_rng(0)  # a DES-like case: every galaxy its own elliptical PSF (no shared kernels)
    per_galaxy = PSFModel(psf.fwhm * rng.uniform(0.9, 1.1, (n, 1)), np.repeat(rng.normal(0, 0.03, (n, 1)), 6, 1),
                          np.repeat(rng.normal(0, 0.03, (n, 1)), 6, 1))  # fmt: skip

    def shapes(stack, mask):
        frame = predictor.predict(stack, BANDS, 0.2, band_mask=mask, measure_recon=False)
        return frame["e1_pred"].to_numpy(), frame["e2_pred"].to_numpy()

    sigma = border_noise_sigma(images)
    five = np.ascontiguousarray(np.concatenate([crop_margin(images, margin)] * 5))
    steps = {
        "noise_sigma": lambda: border_noise_sigma(images),
        "images_sim_psf": lambda: metacal_images(images, psf, 0.2, sigma, order=2),
        "images_per_galaxy_psf": lambda: metacal_images(images, per_galaxy, 0.2, sigma, order=2),
        "network_5_images": lambda: shapes(five, np.ones((len(five), len(BANDS)), bool)),
        "end_to_end": lambda: metacal_response(images, psf, 0.2, shapes, margin=margin),
        "end_to_end_sym": lambda: metacal_response(images, psf, 0.2, shapes, symmetrize=True, margin=margin),
    }
    metacal_response(images[:64], psf.subset(slice(0, 64)), 0.2, shapes, margin=margin)  # warm-up: tables, grids
    best: dict[str, dict[str, float]] = {"wall_ms": {}, "cpu_ms": {}}
    for _ in range(repeats):  # interleaved, so that a burst of load on the shared machine hits every step alike
        for name, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            for key, spent in (("wall_ms", time.perf_counter() - wall), ("cpu_ms", time.process_time() - cpu)):
                best[key][name] = min(best[key].get(name, np.inf), 1e3 * spent / n)
    return best


def summary(fig: dict, model_id: str, shear: float) -> dict[str, object]:
    """The issue's keys from ``metacal_shards.figures``: calibrated = plain metacal, ``_sym`` = symmetrized."""
    cal, sym = fig["cal"], fig["sym_noshear"]
    raw = fig.get("raw") or dict.fromkeys(("m", "m_err", "c", "rmse_e"), float("nan"))  # no shard measured it yet
    line = {"benchmark": "metacal", "model": model_id, "shear": shear, "n_shards": fig["n_shards"],
            "n_stamps": fig["n_stamps"], "n_pairs": cal["n_pairs"],
            "paired_m_raw": raw["m"], "paired_m_raw_err": raw["m_err"], "paired_c_raw": raw["c"],
            "paired_m_cal": cal["m"], "paired_m_err": cal["m_err"], "paired_c_cal": cal["c"],
            "paired_c_err": cal["c_err"], "paired_m_cal_sym": sym["m"], "paired_m_err_sym": sym["m_err"],
            "paired_c_cal_sym": sym["c"], "paired_c_err_sym": sym["c_err"],
            "rmse_e_original": raw["rmse_e"], "rmse_e_noshear": cal["rmse_e"], "rmse_e_noshear_sym": sym["rmse_e"],
            "rmse_ratio": cal["rmse_e"] / raw["rmse_e"]}  # fmt: skip
    first = fig.get("crop_first")
    if first:  # the same stamps metacalibrated without the margin (the model's stamp cut first)
        diff = first["margin_minus_crop_first"]
        line.update({"crop_first_m1": first["m1"], "crop_first_m2": first["m2"], "crop_first_m_err": max(
            first["m1_err"], first["m2_err"]), "crop_first_n_pairs": first["n_pairs"], "margin_minus_crop_first_dm1":
            diff["dm1"], "margin_minus_crop_first_dm1_err": diff["dm1_err"], "margin_minus_crop_first_dm2":
            diff["dm2"], "margin_minus_crop_first_dm2_err": diff["dm2_err"]})  # fmt: skip
    return {**line, "detail": fig}


def run_margin_pixels() -> int:
    """The run's metacal margin (``model.metacal_margin_arcsec``) in LSST pixels (0.2 arcsec)."""
    from survey_deblend.config.run import ModelConfig
    from survey_deblend.pipeline.tasks import margin_pixels

    return margin_pixels(ModelConfig().metacal_margin_arcsec, 0.2)


def rounded(value):
    """Floats to 5 significant decimals, recursively (JSON lines stay readable)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("work/bench-metacal"))
    parser.add_argument("--n", type=int, default=24000, help="stamps simulated per shard (8 per base scene)")
    parser.add_argument("--shards", type=int, default=1, help="shards (seeds --seed .. --seed + shards - 1)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--shear", type=float, default=0.02)
    parser.add_argument("--snr-min", type=float, default=20.0)
    parser.add_argument("--turn-all-shards", type=int, default=1,
                        help="the first k shards also turn the four sheared images (the 'all' symmetrization)")
    parser.add_argument("--raw-shards", type=int, default=10**6,
                        help="the first k shards also run the network on the original stamps (paired_m_raw)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    parser.add_argument("--timing-n", type=int, default=512, help="galaxies in the throughput measurement")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput measurement")
    parser.add_argument("--throughput-only", action="store_true", help="only the throughput (one small shard)")
    parser.add_argument("--chunk", type=int, default=2048, help="stamps per processing chunk (multiple of 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 is the most CPU-efficient on a "
                        "machine shared with other work; the throughput keys are measured with 2)")
    parser.add_argument("--estimator", choices=("network", "moments"), default="network",
                        help="moments: Gaussian-weighted i-band moments, a smooth reference for the images' own bias")
    parser.add_argument("--quick", action="store_true", help="one shard of 800 stamps, 256 timed galaxies")
    parser.add_argument("--crop-first-shards", type=int, default=4,
                        help="the first k shards also metacalibrate without the margin (the model's stamp cut first)")
    parser.add_argument("--margin", type=int, default=None, help="pixels simulated around the model's stamp and "
                        "sheared with it (default: the run's model.metacal_margin_arcsec at 0.2 arcsec; 0: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import metacal_shards as ms

    from survey_deblend.inference import Predictor
    from survey_deblend.sim.dataset import open_dataset

    n, shards = (800, 1) if args.quick else (args.n, args.shards)
    margin = run_margin_pixels() if args.margin is None else args.margin
    timing_n = 256 if args.quick else args.timing_n
    predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu")

    def shapes(stack, mask):
        if args.estimator == "moments":
            return ms.weighted_moments(stack, mask)
        frame = predictor.predict(stack, BANDS, 0.2, band_mask=mask, measure_recon=False)
        return frame["e1_pred"].to_numpy(), frame["e2_pred"].to_numpy()

    if not args.throughput_only:
        seeds = list(range(args.seed, args.seed + shards))
        for seed, times in ms.stream(args.work, n, seeds, args.shear, args.snr_min, shapes, args.chunk,
                                     args.turn_all_shards, args.raw_shards, margin,
                                     args.crop_first_shards):  # fmt: skip
            line = summary(ms.figures(ms.load_results(ms.finished(args.work, n, args.shear, margin))),
                           predictor.model_id if args.estimator == "network" else "moments", args.shear)  # fmt: skip
            line.pop("detail")
            print(json.dumps(rounded({"shard_seed": seed, **times, **line, "load_avg_1min": os.getloadavg()[0]})),
                  flush=True)  # fmt: skip
    done = ms.finished(args.work, n, args.shear, margin)
    model = predictor.model_id if args.estimator == "network" else "moments"
    line = summary(ms.figures(ms.load_results(done)), model, args.shear) if done else {}
    if not args.no_throughput:
        data = ms.simulate(args.work, max(8 * ((timing_n + 7) // 8), 8), args.seed, args.shear, margin=margin)
        ms_per = throughput(predictor, open_dataset(data).read("blend", np.arange(timing_n)), margin=margin)
        line.update({
            "mcal_galaxies_per_s": 1e3 / ms_per["wall_ms"]["end_to_end"],
            "mcal_galaxies_per_s_sym": 1e3 / ms_per["wall_ms"]["end_to_end_sym"],
            "mcal_galaxies_per_s_cpu_bound_2_cores": 2e3 / ms_per["cpu_ms"]["end_to_end"],
            "threads": args.threads,
            "timing_galaxies": timing_n,
            **ms_per,
        })  # fmt: skip
    line.update({"model": model, "margin_pix": margin, "load_avg_1min": os.getloadavg()[0], "quick": bool(args.quick)})
    print(json.dumps(rounded(line)))


if __name__ == "__main__":
    main()

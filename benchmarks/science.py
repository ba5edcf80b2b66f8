"""Held-out science figures of a checkpoint on simulated LSST sets (central SNR > 20), one JSON line.

Keys (issue 5): ``rmse_e``, ``rmse_hsm_isolated``, ``rmse_hsm_blended``, ``fit_m``, ``fit_c``, ``ring_m``,
``ring_c``, ``roundness``, ``ssim``, ``z_sigma_nmad``, ``z_outliers``; fit and ring figures are the worse of the
two components. The figures come from ``survey_deblend.evaluation.simulated.evaluate_simulated`` (the same
code the evaluation stage reports with).

With a flow head in the checkpoint (issue 13; ``"head": "flow"``), ``rmse_e``, ``z_sigma_nmad`` and ``z_outliers``
are the flow's (posterior mean, posterior median), the Gaussian regressor's move to ``*_gaussian``, and
``roundness_sample``, ``coverage_e_68``, ``coverage_e_95``, ``coverage_z_68``, ``flow_images_per_s`` (encoder plus
flow with its sampling, on normalized stamps, CPU, 2 threads) are added; without one they are null. Beside it:
``gaussian_images_per_s`` (encoder + Gaussian head), ``flow_head_images_per_s`` (the flow alone), ``load_1min``.
``--speed`` prints only those and a profile of the flow over K (draws of the mean) and batch size, with the
mean's error against K = 1024 (``"benchmark": "flow_speed"`` lines).

    python benchmarks/science.py --data work/lsst-heldout --ring work/lsst-ring [--checkpoint PATH] [--quick]

Without ``--data``/``--ring`` (or when they are missing) small held-out sets are simulated into ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def _worse(a: float, b: float) -> float:
    return a if abs(a) >= abs(b) or not np.isfinite(b) else b


def ensure(path: Path | None, work: Path, name: str, n: int, seed: int, kind: str) -> Path:
    """An existing data set folder, or one simulated now with the project's generator."""
    if path is not None and (path / "manifest.json").is_file():
        return path
    from survey_deblend.sim.lsst import make_lsst_dataset

    out = work / name
    if not (out / "manifest.json").is_file():
        make_lsst_dataset(out, n=n, seed=seed, kind=kind, workers=2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    parser.add_argument("--data", type=Path, default=Path("work/lsst-heldout"))
    parser.add_argument("--ring", type=Path, default=Path("work/lsst-ring"))
    parser.add_argument("--work", type=Path, default=Path("work/bench-science"))
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--snr-min", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="at most 200 galaxies and 400 ring stamps")
    parser.add_argument("--speed", action="store_true", help="only the throughput figures and the flow's K profile")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.speed:
        from survey_deblend.inference import Predictor

        data = ensure(args.data, args.work, "heldout", 400 if args.quick else 2000, 2, "blends")
        predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu")
        for line in speed_profile(predictor, data, 1024 if args.quick else 8192):
            print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in line.items()}))
        return

    from survey_deblend.evaluation.simulated import evaluate_simulated
    from survey_deblend.inference import Predictor

    max_samples = 200 if args.quick else args.max_samples
    data = ensure(args.data, args.work, "heldout", 400 if args.quick else 2000, 2, "blends")
    ring = ensure(args.ring, args.work, "ring", 400 if args.quick else 2000, 3, "ring")
    predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu")
    start = time.perf_counter()
    result = evaluate_simulated(predictor, data, ring, snr_min=args.snr_min, max_samples=max_samples, bootstrap=50)
    rows = {row["estimator"]: row for row in result["table"]}
    model, ring_model = rows["model"], result["ring"]["model"]
    line = {
        "benchmark": "science",
        "model": predictor.model_id,
        "n": int(model["n"]),
        "rmse_e": model["rmse"],
        "rmse_hsm_isolated": rows["HSM on isolated"]["rmse"],
        "rmse_hsm_blended": rows["HSM on blend"]["rmse"],
        "rmse_hsm_recon": rows["HSM on reconstruction"]["rmse"],
        "fit_m": _worse(model["m1"], model["m2"]),
        "fit_c": _worse(model["c1"], model["c2"]),
        "ring_m": _worse(ring_model["m1"], ring_model["m2"]),
        "ring_c": _worse(ring_model["c1"], ring_model["c2"]),
        "ring_m_err": max(ring_model["m1_err"], ring_model["m2_err"]),
        "roundness": model["roundness"],
        "ssim": result["reconstruction"]["ssim_recon"],
        "cosine": result["reconstruction"]["cosine_recon"],
        "z_sigma_nmad": result["redshift"]["sigma_nmad"],
        "z_outliers": result["redshift"]["outlier_fraction"],
        "seconds": round(time.perf_counter() - start, 1),
        "quick": bool(args.quick),
    }
    line.update(flow_keys(result, predictor, data, args.quick))
    print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in line.items()}))


FLOW_KEYS = ("roundness_sample", "coverage_e_68", "coverage_e_95", "coverage_z_68", "coverage_z_95", "e_pull_rms",
             "e_temperature")


def flow_keys(result: dict, predictor, data: Path, quick: bool) -> dict:
    """The issue-13 keys: the flow's figures (regressor's kept as ``*_gaussian``) and its throughput."""
    post = result.get("posterior")
    if post is None:
        return {"head": "gaussian", **{k: None for k in (*FLOW_KEYS, "flow_images_per_s", "gaussian_images_per_s",
                                                          "flow_head_images_per_s", "load_1min")}}
    rows = {row["estimator"]: row for row in result["table"]}
    mean_row = rows["flow: posterior mean"]
    out = {"head": "flow", **gaussian_figures(predictor, data, result["snr_min"], 200 if quick else None),
           "rmse_e": post["rmse_e"], "roundness": post["roundness"], "z_sigma_nmad": post["z_sigma_nmad"],
           "z_outliers": post["z_outliers"], "fit_m": _worse(mean_row["m1"], mean_row["m2"]),
           "fit_c": _worse(mean_row["c1"], mean_row["c2"])}
    if post.get("ring"):
        ring = post["ring"]["flow: posterior mean"]
        out.update({"ring_m": _worse(ring["m1"], ring["m2"]), "ring_c": _worse(ring["c1"], ring["c2"]),
                    "ring_m_err": max(ring["m1_err"], ring["m2_err"])})
    out.update({k: post[k] for k in FLOW_KEYS})
    out.update(speed_figures(predictor, data, 1024 if quick else 8192))
    return out


def gaussian_figures(predictor, data: Path, snr_min: float, max_samples: int | None) -> dict:
    """The Gaussian regressor's figures on the same galaxies (with a flow the Predictor's e1_pred is the flow's)."""
    from survey_deblend.evaluation import metrics
    from survey_deblend.evaluation.simulated import select_indices
    from survey_deblend.sim.dataset import open_dataset

    ds = open_dataset(data)
    idx = select_indices(ds, snr_min, max_samples=max_samples)
    normed, mask = predictor.prepare(ds.read("blend", idx), tuple(ds.manifest["bands"]),
                                     float(ds.manifest["pixel_scale_arcsec"]))
    out = predictor.encode_normalized(normed, mask)[1].astype(np.float64)
    row = metrics.shape_metrics(out[:, 0], out[:, 1], ds.read("e1", idx), ds.read("e2", idx), bootstrap=0)
    z_true = ds.read("z", idx).astype(np.float64)
    return {"rmse_e_gaussian": row["rmse"], "roundness_gaussian": row["roundness"],
            "z_sigma_nmad_gaussian": metrics.sigma_nmad(out[:, 3], z_true),
            "z_outliers_gaussian": metrics.outlier_fraction(out[:, 3], z_true)}


def _stamps(predictor, data: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` normalized held-out stamps and band masks (the set repeated when smaller)."""
    from survey_deblend.sim.dataset import open_dataset

    ds = open_dataset(data)
    idx = np.arange(min(n, len(ds)))
    normed, mask = predictor.prepare(ds.read("blend", idx), tuple(ds.manifest["bands"]),
                                     float(ds.manifest["pixel_scale_arcsec"]))
    reps = -(-n // len(idx))
    return np.concatenate([normed] * reps)[:n], np.concatenate([mask] * reps)[:n]


def speed_figures(predictor, data: Path, n: int, repeats: int = 3) -> dict:
    """Images/s on normalized stamps, side by side, best of ``repeats`` (interleaved, so load spikes hit all):
    ``flow_images_per_s`` encoder + flow summaries (K draws, the tempered spread and the id-seeded draw, z
    quantiles); ``gaussian_images_per_s`` encoder + Gaussian regressor (the path without a flow);
    ``flow_head_images_per_s`` the flow summaries alone on the latents; ``load_1min`` the load average."""
    from survey_deblend.evaluation.posterior import flow_head

    head = flow_head(predictor)
    normed, mask = _stamps(predictor, data, n)
    ids = np.arange(n, dtype=np.int64)
    latent = predictor.encode_normalized(normed, mask)[0]
    runs = {"gaussian_images_per_s": lambda: predictor.encode_normalized(normed, mask),
            "flow_images_per_s": lambda: head.summarize(predictor.encode_normalized(normed, mask)[0], mask, ids),
            "flow_head_images_per_s": lambda: head.summarize(latent, mask, ids)}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for key, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[key] = min(best[key], time.perf_counter() - t0)
    return {**{k: n / v for k, v in best.items()}, "load_1min": round(os.getloadavg()[0], 2)}


def flow_images_per_s(predictor, data: Path, n: int, repeats: int = 3) -> float:
    """Encoder + flow summaries (K draws per galaxy and the id-seeded draw) on normalized stamps, best of repeats."""
    return speed_figures(predictor, data, n, repeats)["flow_images_per_s"]


def speed_profile(predictor, data: Path, n: int) -> list[dict]:
    """``--speed``: the throughput figures, then per K (Sobol draws of the mean) and batch size the flow head's
    images/s and the rms error of its posterior mean against K = 1024 on the same galaxies (one line each)."""
    from survey_deblend.evaluation.posterior import flow_head

    head = flow_head(predictor)
    lines = [{"benchmark": "flow_speed", "model": predictor.model_id, "n": n, "threads": torch.get_num_threads(),
              "e_temperature": float(head.arch.e_temperature), **speed_figures(predictor, data, n)}]
    normed, mask = _stamps(predictor, data, min(n, 2048))
    latent = predictor.encode_normalized(normed, mask)[0]
    ids = np.arange(len(latent))
    ref = head.summarize(latent, mask, ids, n_samples=1024)
    for k, batch in ((4, 2048), (8, 2048), (16, 2048), (32, 2048), (16, 256), (16, 1024)):
        out = head.summarize(latent, mask, ids, batch_size=batch, n_samples=k)
        t0 = time.perf_counter()
        head.summarize(latent, mask, ids, batch_size=batch, n_samples=k)
        err = np.hypot(out["e1_pred"] - ref["e1_pred"], out["e2_pred"] - ref["e2_pred"]) / np.sqrt(2)
        sig = out["e_sigma_pred"] / ref["e_sigma_pred"] - 1
        lines.append({"benchmark": "flow_speed", "samples": k, "batch_size": batch,
                      "flow_head_images_per_s": len(latent) / (time.perf_counter() - t0),
                      "mean_rms_error_vs_1024": float(np.sqrt(np.mean(err**2))),
                      "sigma_rel_rms_error_vs_1024": float(np.sqrt(np.mean(sig**2))),
                      "load_1min": round(os.getloadavg()[0], 2)})
    return lines


if __name__ == "__main__":
    main()

"""Held-out science figures of a checkpoint on simulated LSST sets (central SNR > 20), one JSON line.

Keys (issue 5): ``rmse_e``, ``rmse_hsm_isolated``, ``rmse_hsm_blended``, ``fit_m``, ``fit_c``, ``ring_m``,
``ring_c``, ``roundness``, ``ssim``, ``z_sigma_nmad``, ``z_outliers``; fit and ring figures are the worse of the
two components. The figures come from ``survey_deblend.evaluation.simulated.evaluate_simulated`` (the same
code the evaluation stage reports with).

With a flow head in the checkpoint (issue 13; ``"head": "flow"``), ``rmse_e``, ``z_sigma_nmad`` and ``z_outliers``
are the flow's (posterior mean, posterior median), the Gaussian regressor's move to ``*_gaussian``, and
``roundness_sample``, ``coverage_e_68``, ``coverage_e_95``, ``coverage_z_68``, ``flow_images_per_s`` (encoder plus
flow with its sampling, on normalized stamps, CPU, 2 threads) are added; without one they are null.

    python benchmarks/science.py --data work/lsst-heldout --ring work/lsst-ring [--checkpoint PATH] [--quick]

Without ``--data``/``--ring`` (or when they are missing) small held-out sets are simulated into ``--work``.
"""

from __future__ import annotations

import argparse
import json
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
    args = parser.parse_args()
    torch.set_num_threads(2)

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


FLOW_KEYS = ("roundness_sample", "coverage_e_68", "coverage_e_95", "coverage_z_68", "coverage_z_95", "e_pull_rms")


def flow_keys(result: dict, predictor, data: Path, quick: bool) -> dict:
    """The issue-13 keys: the flow's figures (regressor's kept as ``*_gaussian``) and its throughput."""
    post = result.get("posterior")
    if post is None:
        return {"head": "gaussian", **{k: None for k in (*FLOW_KEYS, "flow_images_per_s")}}
    rows = {row["estimator"]: row for row in result["table"]}
    mean_row = rows["flow: posterior mean"]
    out = {"head": "flow", "rmse_e_gaussian": rows["model"]["rmse"], "roundness_gaussian": rows["model"]["roundness"],
           "z_sigma_nmad_gaussian": result["redshift"]["sigma_nmad"],
           "z_outliers_gaussian": result["redshift"]["outlier_fraction"],
           "rmse_e": post["rmse_e"], "roundness": post["roundness"], "z_sigma_nmad": post["z_sigma_nmad"],
           "z_outliers": post["z_outliers"], "fit_m": _worse(mean_row["m1"], mean_row["m2"]),
           "fit_c": _worse(mean_row["c1"], mean_row["c2"])}
    if post.get("ring"):
        ring = post["ring"]["flow: posterior mean"]
        out.update({"ring_m": _worse(ring["m1"], ring["m2"]), "ring_c": _worse(ring["c1"], ring["c2"]),
                    "ring_m_err": max(ring["m1_err"], ring["m2_err"])})
    out.update({k: post[k] for k in FLOW_KEYS})
    out["flow_images_per_s"] = flow_images_per_s(predictor, data, 1024 if quick else 8192)
    return out


def flow_images_per_s(predictor, data: Path, n: int, repeats: int = 3) -> float:
    """Encoder + flow summaries (K draws per galaxy and the id-seeded draw) on normalized stamps, best of repeats."""
    from survey_deblend.evaluation.posterior import flow_head
    from survey_deblend.sim.dataset import open_dataset

    head = flow_head(predictor)
    ds = open_dataset(data)
    idx = np.arange(min(n, len(ds)))
    normed, mask = predictor.prepare(ds.read("blend", idx), tuple(ds.manifest["bands"]),
                                     float(ds.manifest["pixel_scale_arcsec"]))
    reps = -(-n // len(idx))
    normed, mask = np.concatenate([normed] * reps)[:n], np.concatenate([mask] * reps)[:n]
    ids = np.arange(n, dtype=np.int64)

    def run() -> None:
        latent, _, _ = predictor.encode_normalized(normed, mask)
        head.summarize(latent, mask, ids)

    run()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return n / best


if __name__ == "__main__":
    main()

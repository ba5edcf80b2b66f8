"""Figures of the flow posterior head (``models.flow``) on simulated sets: shapes, redshifts, calibration.

Run on the same galaxies as the other estimators of ``evaluation.simulated``. The posterior mean and one
posterior draw per galaxy (seeded by the sample's index in the data set) are compared with the truth labels;
calibration is the fraction of truths inside the 68 % / 95 % credible regions (highest-density regions of
(e1, e2) from the flow's log-prob of its draws; central intervals of z) and the rank / PIT histograms. All e
statistics but the mean are those of the tempered posterior when the checkpoint carries a calibration
temperature (``arch.e_temperature``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from survey_deblend.evaluation import metrics
from survey_deblend.models.flow import coverage_figures

__all__ = ["flow_head", "latents", "posterior_figures", "ring_posterior"]

CALIBRATION_SAMPLES = 256


def flow_head(predictor) -> Any | None:
    """The predictor's flow head when its checkpoint carries one, else None."""
    checkpoint = getattr(predictor, "checkpoint", None)
    if checkpoint is None or not getattr(checkpoint, "has_flow", False):
        return None
    return checkpoint.build("flow")


def latents(predictor, dataset, idx: np.ndarray, frame: dict, prefix: str, batch_size: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Deblender latent means and band masks of the blended scenes ``idx``, prepared as the Predictor does."""
    parts, masks = [], []
    for start in range(0, idx.size, batch_size):
        chunk = idx[start : start + batch_size]
        normed, mask = predictor.prepare(dataset.read(f"{prefix}blend", chunk), frame["bands"], frame["pixel_scale"])
        latent, _, _ = predictor.encode_normalized(normed, mask)
        parts.append(latent)
        masks.append(mask)
    if not parts:
        return np.zeros((0, int(predictor.metadata["latent_dim"])), np.float32), np.zeros((0, 6), bool)
    return np.concatenate(parts), np.concatenate(masks)


def posterior_figures(head, latent: np.ndarray, mask: np.ndarray, ids: np.ndarray, e_true: np.ndarray,
                      z_true: np.ndarray, bootstrap: int = 200) -> dict[str, Any]:
    """Shape rows of the posterior mean and draw, redshift and coverage figures, and the per-galaxy arrays."""
    summary = head.summarize(latent, mask, ids)
    e1t, e2t = e_true[:, 0], e_true[:, 1]
    mean_row = metrics.shape_metrics(summary["e1_pred"], summary["e2_pred"], e1t, e2t, bootstrap=bootstrap)
    draw_row = metrics.shape_metrics(summary["e1_sample"], summary["e2_sample"], e1t, e2t, bootstrap=bootstrap)
    finite_z = np.isfinite(z_true)
    stats = head.calibration(latent, mask, e_true, np.where(finite_z, z_true, 1.0), n_samples=CALIBRATION_SAMPLES)
    stats["z_pit"] = np.where(finite_z, stats["z_pit"], np.nan)
    coverage = coverage_figures({"e_hpd_level": stats["e_hpd_level"], "z_pit": stats["z_pit"][finite_z]})
    pull = np.concatenate([(summary["e1_pred"] - e1t), (summary["e2_pred"] - e2t)]) / np.tile(
        summary["e_sigma_pred"], 2)
    figures = {
        "rmse_e": mean_row["rmse"],
        "roundness": mean_row["roundness"],
        "roundness_sample": draw_row["roundness"],
        **coverage,
        "z_sigma_nmad": metrics.sigma_nmad(summary["z_pred"], z_true),
        "z_outliers": metrics.outlier_fraction(summary["z_pred"], z_true),
        "z_bias": metrics.weighted_mean(summary["z_pred"] - z_true),
        "e_pull_rms": float(np.sqrt(np.nanmean(pull**2))),
        "n_samples_summary": int(head.arch.samples),
        "e_temperature": float(head.arch.e_temperature),  # the calibration of the e part (training.flow_calibration)
        "n_samples_calibration": CALIBRATION_SAMPLES,
    }
    return {"figures": figures, "rows": {"flow: posterior mean": mean_row, "flow: posterior draw": draw_row},
            "summary": summary, "calibration": stats}


def ring_posterior(head, predictor, ring_dataset, idx: np.ndarray, frame: dict, batch_size: int) -> dict[str, Any]:
    """Ring-test m, c of the posterior mean and of the posterior draw (whole ring scenes, as for the others)."""
    lat, mask = latents(predictor, ring_dataset, idx, frame, "", batch_size)
    summary = head.summarize(lat, mask, idx.astype(np.int64))
    g1a, g2a = ring_dataset.read("g1_applied", idx), ring_dataset.read("g2_applied", idx)
    pid = ring_dataset.read("pair_id", idx) if "pair_id" in ring_dataset.fields else None
    out = {}
    for name, (k1, k2) in (("flow: posterior mean", ("e1_pred", "e2_pred")),
                           ("flow: posterior draw", ("e1_sample", "e2_sample"))):
        r1 = metrics.ring_response_from_labels(summary[k1], g1a, pid)
        r2 = metrics.ring_response_from_labels(summary[k2], g2a, pid)
        out[name] = {"m1": r1["m"], "m1_err": r1["m_err"], "c1": r1["c"], "c1_err": r1["c_err"],
                     "m2": r2["m"], "m2_err": r2["m_err"], "c2": r2["c"], "c2_err": r2["c_err"]}
    return out

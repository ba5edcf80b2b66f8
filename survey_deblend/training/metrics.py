"""The few held-out figures the checkpoint metadata carries, computed simply (``evaluation`` is downstream).

The full figures against HSM baselines and the ring test live in ``benchmarks/science.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from survey_deblend.models.batches import run_in_batches
from survey_deblend.preprocess import denormalize, normalize
from survey_deblend.shapes import measure_hsm_batch
from survey_deblend.sim.psf import psf_image
from survey_deblend.training.data import TrainingData


def linear_fit(true: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """``(m, c)`` of ``pred = (1 + m) true + c`` by least squares."""
    slope, intercept = np.polyfit(true, pred, 1)
    return float(slope - 1.0), float(intercept)


def sigma_nmad(dz: np.ndarray) -> float:
    """Normalized median absolute deviation, ``1.4826 * median(|dz - median(dz)|)``."""
    return float(1.4826 * np.median(np.abs(dz - np.median(dz))))


def shape_figures(e_true: np.ndarray, e_pred: np.ndarray) -> dict[str, float]:
    """RMSE (both components pooled), worse-component m and c, roundness ratio."""
    fits = [linear_fit(e_true[:, k], e_pred[:, k]) for k in range(2)]
    worst_m = max((f[0] for f in fits), key=abs)
    worst_c = max((f[1] for f in fits), key=abs)
    roundness = float(np.median(np.hypot(*e_pred.T)) / max(np.median(np.hypot(*e_true.T)), 1e-12))
    return {
        "rmse_e": float(np.sqrt(np.mean((e_pred - e_true) ** 2))),
        "fit_m": worst_m,
        "fit_c": worst_c,
        "roundness": roundness,
    }


def redshift_figures(z_true: np.ndarray, z_pred: np.ndarray) -> dict[str, float]:
    """sigma_NMAD of ``dz / (1 + z)`` and the fraction with ``|dz| / (1 + z) > 0.15``."""
    dz = (z_pred - z_true) / (1.0 + z_true)
    return {"z_sigma_nmad": sigma_nmad(dz), "z_outliers": float(np.mean(np.abs(dz) > 0.15))}


def held_out_metrics(checkpoint: Any, data: TrainingData, device: torch.device, n_hsm: int = 200) -> dict[str, Any]:
    """Figures on the held-out split: all bands, and without u (as for DES); HSM on a few reconstructions."""
    encoder, regressor = checkpoint.build("deblender").to(device), checkpoint.build("regressor").to(device)
    decoder = checkpoint.build("decoder").to(device)
    meta = checkpoint.metadata
    m_b, beta = np.asarray(meta["m_b"], dtype=np.float32), float(meta["beta"])

    def encode(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, _ = encoder(x, m)
        return mu, regressor(mu)

    def run(normed: np.ndarray, mask: np.ndarray, decode: bool = False):
        return run_in_batches(encode, normed, mask, 512, device, int(meta["latent_dim"]), decoder, decode)

    idx = data.val_idx
    normed = normalize(data.read("blend", idx), m_b, beta)
    e_true = np.stack([data.read("e1", idx), data.read("e2", idx)], axis=1).astype(np.float64)
    z_true = data.read("z", idx).astype(np.float64)
    bright = data.read("snr", idx) > 20 if "snr" in data.dataset.fields else np.ones(len(idx), bool)
    out: dict[str, Any] = {"n_held_out": int(len(idx)), "n_held_out_snr_gt_20": int(bright.sum())}
    for label, mask in (("all_bands", np.ones((len(idx), 6), bool)), ("no_u", _no_u(len(idx)))):
        _, pred, _ = run(normed * mask[:, :, None, None], mask)
        for suffix, sel in (("", slice(None)), ("_snr_gt_20", bright)):
            if not np.any(np.ones(len(idx), bool)[sel]):
                continue
            figures = {
                **shape_figures(e_true[sel], pred[sel, :2].astype(np.float64)),
                **redshift_figures(z_true[sel], pred[sel, 3].astype(np.float64)),
            }
            pull = (pred[sel, :2] - e_true[sel]) / np.exp(pred[sel, 2:3])
            figures["e_pull_rms"] = float(np.sqrt(np.mean(pull**2)))
            out[label + suffix] = {k: round(v, 5) for k, v in figures.items()}
    sub = slice(0, min(n_hsm, len(idx)))
    _, _, recon = run(normed[sub], np.ones((len(normed[sub]), 6), bool), decode=True)
    clean = normalize(data.read("clean", idx[sub]), m_b, beta)
    out["recon_mse_normalized"] = round(float(np.mean((recon - clean) ** 2)), 7)
    i_band = list(meta["bands"]).index("i")
    psf = psf_image(meta.get("survey", "LSST"), "i", int(meta["stamp_size"])).array
    e1, e2 = measure_hsm_batch(denormalize(recon, m_b, beta)[:, i_band], psf, float(meta["pixel_scale_arcsec"]))
    ok = np.isfinite(e1)
    if ok.any():
        resid = np.stack([e1, e2], 1)[ok] - e_true[sub][ok]
        out["rmse_e_recon_hsm"] = round(float(np.sqrt(np.mean(resid**2))), 5)
        out["recon_hsm_failures"] = int((~ok).sum())
    return out


def _no_u(n: int) -> np.ndarray:
    mask = np.ones((n, 6), bool)
    mask[:, 0] = False
    return mask

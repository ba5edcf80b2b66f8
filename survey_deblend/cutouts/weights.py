"""The noise level of a stamp from its weight map (inverse variance per pixel), as a source that has one gives it.

DES coadds carry a ``WGT`` plane next to ``SCI``; the Data Lab lists it as the ``wtmap`` row of each image. The
noise per pixel of a stamp is the median over the stamp of 1 / sqrt(weight) (robust to a few masked or padded
pixels, whose weight is 0), in the flux units of the weight's own image; ``CutoutBatch.noise_sigma`` holds it
in the batch's units. Torch-free, so that the cutout stage can use it (``calibration.noise`` re-exports it).
"""

from __future__ import annotations

import warnings

import numpy as np

WEIGHT_EXTNAME = "WGT"  # the weight plane of a DES coadd file


def weight_noise_sigma(weights: np.ndarray, absent: float = 0.0) -> np.ndarray:
    """Per stamp and band ``(N, B)`` from inverse-variance weight maps ``(N, B, S, S)``: 1 / sqrt(median of the
    positive weights), which is the median of 1 / sqrt(weight) over the stamp; ``absent`` (0, or NaN for
    "unknown") where a band has no positive weight."""
    w = np.asarray(weights, dtype=np.float64)
    w = np.where(w > 0, w, np.nan).reshape(*w.shape[:2], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-zero band: NaN median, handled below
        med = np.nanmedian(w, axis=-1) if w.size else np.zeros(w.shape[:2])
    good = np.isfinite(med) & (med > 0)
    return np.where(good, 1.0 / np.sqrt(np.where(good, med, 1.0)), absent)


def stamp_sigma(weight_stamps: np.ndarray, flux_factor: float) -> np.ndarray:
    """Noise per pixel ``(n,)`` of ``(n, S, S)`` weight stamps of one image, brought to the batch's flux units
    by ``flux_factor`` (the zeropoint factor its science pixels get); NaN where a stamp has no positive weight."""
    return weight_noise_sigma(np.asarray(weight_stamps)[:, None], absent=np.nan)[:, 0] * float(flux_factor)

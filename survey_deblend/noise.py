"""The noise level of a stamp from its weight map (inverse variance per pixel): a shared helper, numpy only.

Owned here, above every stage, because two stages need it and neither may import the other: the cutout sources
fill ``CutoutBatch.noise_sigma`` with it (``cutouts.weights``), and metacalibration's noise module
(``calibration.noise``) offers it next to the border estimate.
"""

from __future__ import annotations

import warnings

import numpy as np


def weight_noise_sigma(weights: np.ndarray, absent: float = 0.0) -> np.ndarray:
    """Per stamp and band ``(N, B)`` from inverse-variance weight maps ``(N, B, S, S)``: 1 / sqrt(median of the
    positive weights), which is the median of 1 / sqrt(weight) over the stamp (robust to a few masked or padded
    pixels, whose weight is 0); ``absent`` (0, or NaN for "unknown") where a band has no positive weight."""
    w = np.asarray(weights, dtype=np.float64)
    w = np.where(w > 0, w, np.nan).reshape(*w.shape[:2], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-zero band: NaN median, handled below
        med = np.nanmedian(w, axis=-1) if w.size else np.zeros(w.shape[:2])
    good = np.isfinite(med) & (med > 0)
    return np.where(good, 1.0 / np.sqrt(np.where(good, med, 1.0)), absent)

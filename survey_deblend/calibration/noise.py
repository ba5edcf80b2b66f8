"""Noise level per stamp and band, for the fixnoise field of metacalibration.

From the stamp itself: the robust spread (1.4826 x median absolute deviation) of its border pixels, where a
stamp of a sky-subtracted coadd is mostly sky; a neighbour's light on part of the border moves the median
little. From a weight map (inverse variance) where the source has one: ``1 / sqrt(median weight)``
(``weight_noise_sigma``, owned by ``survey_deblend.noise``, which the cutout sources use as well).
"""

from __future__ import annotations

import numpy as np

from survey_deblend.errors import InputError
from survey_deblend.noise import weight_noise_sigma

MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): MAD of a Gaussian in units of its sigma
BORDER_WIDTH = 3
__all__ = ["MAD_TO_SIGMA", "border_noise_sigma", "border_pixels", "seeded_noise", "weight_noise_sigma"]


def border_pixels(images: np.ndarray, width: int = BORDER_WIDTH) -> np.ndarray:
    """The outer ``width`` rows and columns of ``(..., S, S)`` stamps as ``(..., n_border)``."""
    s = images.shape[-1]
    if images.shape[-2] != s or not 0 < width < s // 2:
        raise InputError(f"stamps: expected square (..., S, S) stamps wider than 2 x {width}, got {images.shape}")
    edge = np.zeros((s, s), dtype=bool)
    edge[:width], edge[-width:], edge[:, :width], edge[:, -width:] = True, True, True, True
    return images[..., edge]


def border_noise_sigma(images: np.ndarray, width: int = BORDER_WIDTH) -> np.ndarray:
    """Per stamp and band ``(N, B)``: 1.4826 x MAD of the border pixels of ``(N, B, S, S)``; 0 for an empty band."""
    border = border_pixels(np.asarray(images, dtype=np.float32), width)
    med = np.median(border, axis=-1, keepdims=True)
    return (MAD_TO_SIGMA * np.median(np.abs(border - med), axis=-1)).astype(np.float64)


def seeded_noise(ids: np.ndarray, sigma: np.ndarray, stamp_size: int, seed: int = 0) -> np.ndarray:
    """Fixnoise fields ``(N, B, S, S)`` of level ``sigma`` (N, B), each drawn from its galaxy's own stream
    ``(seed, id)``: a galaxy gets the same field whatever batch or partition it lands in (resumable runs).
    One generator per galaxy (~50 us each); pass the result as ``noise=`` to ``metacal_response``."""
    ids = np.asarray(ids, dtype=np.int64)
    sigma = np.asarray(sigma, dtype=np.float32)
    if sigma.shape[:1] != ids.shape:
        raise InputError(f"noise_sigma: expected ({len(ids)}, B) for {len(ids)} ids, got {sigma.shape}")
    out = np.empty((*sigma.shape, stamp_size, stamp_size), dtype=np.float32)
    for i, gid in enumerate(ids):
        rng = np.random.default_rng([int(seed), int(gid) & 0xFFFFFFFFFFFFFFFF])
        out[i] = rng.standard_normal((sigma.shape[1], stamp_size, stamp_size), dtype=np.float32)
    return out * sigma[:, :, None, None]

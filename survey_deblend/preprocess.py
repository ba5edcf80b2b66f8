"""Preprocessing shared by training and inference (DESIGN.md, "Conventions"): numpy only, no torch.

Raw stamps from any survey are brought into the model's frame in four steps, all driven by checkpoint
metadata: band mapping (e.g. DES grizY into the model's ugrizy, absent bands zero with their mask bit
cleared), flux-unit conversion (each band's zeropoint from the stamps' ``PhotometricFrame`` to the model
survey's electrons over its full exposure; never guessed from band names or pixel scale),
flux-conserving resampling to the model pixel scale, and the Arcelin et al. (2020) normalization
``tanh(arcsinh(beta * x / M_b))``. An optional dynamic-range matching step maps each band's per-image
maximum statistics onto the training ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from survey_deblend.errors import InputError
from survey_deblend.surveys import LSST_BANDS, PhotometricFrame, band_facts, survey_bands

MODEL_BANDS: tuple[str, ...] = LSST_BANDS  # the model is trained on LSST stamps (the checkpoint says which)
DEFAULT_BETA = 2.5

__all__ = [
    "DEFAULT_BETA",
    "MODEL_BANDS",
    "denormalize",
    "flux_conversion_factors",
    "map_bands",
    "match_dynamic_range",
    "mean_per_image_max",
    "normalize",
    "rebin_matrix",
    "resample_flux",
    "source_stamp_size",
]


def normalize(images: np.ndarray, m_b: Sequence[float], beta: float = DEFAULT_BETA) -> np.ndarray:
    """Arcelin normalization ``tanh(arcsinh(beta * x_b / M_b))`` over axis 1 (bands) of ``(N, B, S, S)``."""
    scale = (beta / np.asarray(m_b, dtype=np.float32)).reshape(1, -1, 1, 1)
    out = np.asarray(images, dtype=np.float32) * scale  # a new array: the in-place steps below keep memory flat
    np.arcsinh(out, out=out)
    return np.tanh(out, out=out)


def denormalize(normed: np.ndarray, m_b: Sequence[float], beta: float = DEFAULT_BETA) -> np.ndarray:
    """Inverse of ``normalize`` (values clipped just inside (-1, 1) so that arctanh stays finite)."""
    scale = (np.asarray(m_b, dtype=np.float64) / beta).reshape(1, -1, 1, 1)
    clipped = np.clip(np.asarray(normed, dtype=np.float64), -0.999999, 0.999999)
    return (np.sinh(np.arctanh(clipped)) * scale).astype(np.float32)


def mean_per_image_max(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``M_b``: the mean over images of each image's maximum in band b, for ``(N, B, S, S)`` (memmaps welcome)."""
    total = np.zeros(images.shape[1], dtype=np.float64)
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float32)
        total += block.reshape(block.shape[0], block.shape[1], -1).max(axis=2).sum(axis=0)
    m_b = total / max(len(images), 1)
    # A band that is empty everywhere would divide by zero: fall back to 1 (it carries no information anyway).
    return np.where(m_b > 0, m_b, 1.0)


def map_bands(
    images: np.ndarray,
    bands: Sequence[str],
    band_mask: np.ndarray | None = None,
    model_bands: Sequence[str] = MODEL_BANDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Place ``(N, B, S, S)`` stamps in the model's band order; absent bands are zero with mask False.

    Band names match case-insensitively (DES ``Y`` is the model's ``y``). A source band the model does not
    know is an ``InputError``.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != len(bands):
        raise InputError(f"stamps: expected shape (N, {len(bands)}, S, S) for bands {list(bands)}, got {images.shape}")
    index = {b.lower(): i for i, b in enumerate(model_bands)}
    unknown = [b for b in bands if b.lower() not in index]
    if unknown:
        raise InputError(f"stamps: band '{unknown[0]}' is not one of the model bands {list(model_bands)}")
    mask_in = np.ones(images.shape[:2], dtype=bool) if band_mask is None else np.asarray(band_mask, dtype=bool)
    if mask_in.shape != images.shape[:2]:
        raise InputError(f"band_mask: expected shape {images.shape[:2]}, got {mask_in.shape}")
    if band_mask is None and tuple(b.lower() for b in bands) == tuple(b.lower() for b in model_bands):
        return images, np.ones((images.shape[0], len(model_bands)), dtype=bool)  # already in model order
    n, _, h, w = images.shape
    out = np.zeros((n, len(model_bands), h, w), dtype=np.float32)
    mask = np.zeros((n, len(model_bands)), dtype=bool)
    for src, name in enumerate(bands):
        dst = index[name.lower()]
        out[:, dst] = np.where(mask_in[:, src, None, None], images[:, src], 0.0)
        mask[:, dst] = mask_in[:, src]
    return out, mask


def flux_conversion_factors(
    frame: PhotometricFrame, target_survey: str, model_bands: Sequence[str] = MODEL_BANDS
) -> np.ndarray:
    """Per model band, the factor turning ``frame``'s pixel units into ``target_survey``'s electrons over its
    full exposure: ``t_exp * 10**(-0.4 * (zp_source_b - zp_b))`` from each band's own zeropoint (surveycodex
    facts for the target). A frame without zeropoints is native units: accepted only for the target survey.
    Model bands the frame lacks get 1 (their pixels are zero).
    """
    if frame.zeropoints is None:
        if frame.survey != target_survey:
            raise InputError(
                f"stamps: {frame.survey} pixels without zeropoints cannot be put in the model's {target_survey} "
                "units; give one AB zeropoint per band"
            )
        foreign = [b for b in frame.bands if b not in survey_bands(target_survey)]
        if foreign:
            raise InputError(f"stamps: band '{foreign[0]}' is not a {target_survey} band; give zeropoints for it")
        return np.ones(len(model_bands), dtype=np.float64)
    zeropoint = {b.lower(): z for b, z in zip(frame.bands, frame.zeropoints, strict=True)}
    return np.asarray(
        [band_facts(target_survey, b).electrons_per_unit(zeropoint.get(b.lower())) for b in model_bands],
        dtype=np.float64,
    )


def rebin_matrix(n_in: int, scale_in: float, n_out: int, scale_out: float) -> np.ndarray:
    """Overlap matrix ``W (n_out, n_in)``: the fraction of input pixel i falling in output pixel j.

    Both grids are centred on the same point (the stamp centre); ``W @ img @ W.T`` is an area-weighted
    rebinning that conserves flux for every input pixel inside the output field.
    """
    edges_in = (np.arange(n_in + 1) - n_in / 2.0) * scale_in
    edges_out = (np.arange(n_out + 1) - n_out / 2.0) * scale_out
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return (np.clip(hi - lo, 0.0, None) / scale_in).astype(np.float32)


def resample_flux(images: np.ndarray, scale_in: float, scale_out: float, size_out: int) -> np.ndarray:
    """Resample ``(..., S, S)`` stamps to ``size_out`` pixels of ``scale_out`` arcsec, conserving flux.

    Separable area-weighted rebinning (two small matrix products per stamp, vectorised over the batch).
    The centre of the stamp stays the centre, so a centred galaxy keeps its centroid.
    """
    images = np.asarray(images, dtype=np.float32)
    size_in = images.shape[-1]
    if images.shape[-2] != size_in:
        raise InputError(f"stamps: expected square stamps, got {images.shape[-2:]}")
    if size_in == size_out and math.isclose(scale_in, scale_out, rel_tol=1e-6):
        return images
    w_rows = rebin_matrix(images.shape[-2], scale_in, size_out, scale_out)
    w_cols = rebin_matrix(size_in, scale_in, size_out, scale_out)
    return np.matmul(np.matmul(w_rows, images), w_cols.T)


def source_stamp_size(pixel_scale: float, model_pixel_scale: float, model_stamp_size: int) -> int:
    """Smallest odd stamp size at ``pixel_scale`` that covers the model's field of view."""
    size = math.ceil(model_stamp_size * model_pixel_scale / pixel_scale - 1e-6)
    return size if size % 2 == 1 else size + 1


def match_dynamic_range(
    images: np.ndarray, band_mask: np.ndarray, target_median_max: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Scale each band so that the batch median of per-image maxima equals the training one.

    Returns the scaled images and the per-band factors applied (1 for bands absent from the whole batch).
    Used when a target survey's flux scale cannot be trusted; the physical unit conversion is the default.
    """
    per_image_max = images.reshape(images.shape[0], images.shape[1], -1).max(axis=2)
    factors = np.ones(images.shape[1], dtype=np.float64)
    for b in range(images.shape[1]):
        present = band_mask[:, b] & (per_image_max[:, b] > 0)
        if present.any():
            factors[b] = float(target_median_max[b]) / float(np.median(per_image_max[present, b]))
    return (images * factors.reshape(1, -1, 1, 1).astype(np.float32)), factors

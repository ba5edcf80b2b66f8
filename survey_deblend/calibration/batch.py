"""Metacalibration of a run's ``CutoutBatch`` through the Predictor: the calibration columns of the output.

For the usable rows of a batch whose PSF is usable: the per-galaxy PSF from the catalog's im3shape
``MEAN_PSF_FWHM/E1/E2`` (``im3shape_psf_model``), the noise level from the source's weight map when the batch
carries one (``batch.noise_sigma``), else from the stamp's border; the five images in the SOURCE frame (its
pixel scale, its PSF) of the whole cut, margin included (``batch.margin_pix``), cropped to the model's stamp
only after the shear (a stamp sheared on its own pulls zeros in at its edges, which the network reads as shape:
docs/performance.md), then all five through the Predictor's normal prepare -> network path (``predict_e``, the
same ``e1_pred, e2_pred`` the run publishes), ``predictor.batch_size`` stamps per pass. The fixnoise field of a
galaxy is drawn from its id, so a re-run, or the same galaxy in another partition, gets the same columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from survey_deblend.calibration.metacal import DEFAULT_DELTA, SHEAR_TYPES, metacal_images
from survey_deblend.calibration.noise import border_noise_sigma, seeded_noise
from survey_deblend.calibration.psf import im3shape_psf_model
from survey_deblend.calibration.response import response_matrix, symmetrized
from survey_deblend.schema import PSF_COLUMNS, RESPONSE_COLUMNS, names_in

CALIBRATION_COLUMNS = names_in("calibration")  # r11, r12, r21, r22, e1_mcal, e2_mcal
FIXNOISE_SEED = 0  # the fixnoise field of a galaxy is drawn from the stream (FIXNOISE_SEED, its id)
ORDER = 2  # Taylor order of the shear: order 1 moves <R> by 0.1-0.2 % (docs/performance.md), too much for m


def batch_noise_sigma(batch: Any, rows: np.ndarray) -> np.ndarray:
    """``(n, B)`` noise level of ``rows``: the source's own (``batch.noise_sigma``, from weight maps) where it has
    one and it is finite and positive, else the border MAD of the stamp; 0 for absent bands."""
    images = batch.images[rows]
    sigma = border_noise_sigma(images)
    given = getattr(batch, "noise_sigma", None)
    if given is not None:
        given = np.asarray(given, dtype=np.float64)[rows]
        sigma = np.where(np.isfinite(given) & (given > 0), given, sigma)
    return np.where(batch.band_mask[rows], sigma, 0.0)


def calibrate_batch(
    predictor: Any, batch: Any, psf: np.ndarray, ids: np.ndarray, delta: float = DEFAULT_DELTA,
    chunk: int | None = None, symmetrize: bool = True,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The ``CALIBRATION_COLUMNS`` of every row of ``batch`` (NaN where not calibrated) and ``psf_ok`` (N,).

    ``psf`` ``(N, 3)``: the rows' ``PSF_COLUMNS`` (FWHM in DES pixels); ``ids`` (N,) the galaxies' ids (they seed
    the fixnoise fields). A usable row with ``psf_ok`` False keeps its other predictions; the caller gives it
    the ``no_psf`` status. ``chunk`` galaxies per pass (default: one network batch). ``symmetrize``: ``e1_mcal,
    e2_mcal`` are ``[e(noshear) - e(noshear turned by 90 degrees)] / 2`` (``calibration.response``: a constant
    additive bias of the network cancels; R stays that of the four sheared images)."""
    n = len(batch)
    psf = np.asarray(psf, dtype=np.float64).reshape(n, len(PSF_COLUMNS))
    ids = np.asarray(ids)
    if len(ids) != n:
        raise ValueError(f"calibrate_batch: {len(ids)} ids for {n} rows")
    model = im3shape_psf_model(psf[:, 0], psf[:, 1], psf[:, 2], bands=batch.bands)
    psf_ok = np.all(model.usable, axis=1)
    columns = {name: np.full(n, np.nan) for name in CALIBRATION_COLUMNS}
    todo = np.flatnonzero(np.asarray(batch.usable) & psf_ok)
    k_types = len(SHEAR_TYPES) + int(symmetrize)  # the turned noshear image after the five
    chunk = max(1, int(chunk or predictor.batch_size // k_types))
    size = batch.stamp_size
    for start in range(0, len(todo), chunk):
        rows = todo[start : start + chunk]
        mask = batch.band_mask[rows]
        noise = seeded_noise(ids[rows], batch_noise_sigma(batch, rows), size, seed=FIXNOISE_SEED)
        images = metacal_images(
            batch.images[rows], model.subset(rows), batch.pixel_scale_arcsec, noise=noise, delta=delta,
            order=ORDER, device=predictor.device, margin=batch.margin_pix,
        )  # fmt: skip
        if symmetrize:
            images = torch.cat([images, torch.rot90(images[:1], 1, dims=(-2, -1))])
        stack = images.reshape(k_types * len(rows), *images.shape[2:]).cpu().numpy()
        e = predictor.predict_e(stack, batch.frame, np.tile(mask, (k_types, 1)), ids=np.tile(ids[rows], k_types))
        e = e.reshape(k_types, len(rows), 2)
        sheared = e[: len(SHEAR_TYPES)]
        R = response_matrix(sheared, delta)
        if symmetrize:
            turned = np.full_like(sheared, np.nan)
            turned[0] = e[-1]
            sheared = symmetrized(sheared, turned, "noshear")
        columns["e1_mcal"][rows], columns["e2_mcal"][rows] = sheared[0].T
        for name, values in zip(RESPONSE_COLUMNS, R.reshape(len(rows), 4).T, strict=True):
            columns[name][rows] = values
    return pd.DataFrame(columns), psf_ok

"""The Predictor: a checkpoint loaded once, batched prediction on one device (DESIGN.md, "inference").

Numpy in, pandas out, no Dask. ``predict_batch(CutoutBatch)`` is what a run calls; ``predict(images, bands,
pixel_scale, ...)`` is the numpy entry point for notebooks and tests; both go through the same code. Raw stamps
in the units of their ``PhotometricFrame`` go through ``preprocess`` (band mapping, unit conversion from the
frame's per-band zeropoints, resampling, normalization, all from the checkpoint metadata), the deblender encoder
and the regressor; optionally the decoder, whose reconstruction is measured with GalSim's PSF-corrected HSM (the
"VAE approach": ``e1_recon``, ``e2_recon`` in the shear convention). The columns returned are exactly
``schema.PREDICTION_COLUMNS``; the ones this model does not fill (flow head, metacalibration) are null.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from survey_deblend import preprocess
from survey_deblend.errors import InputError, SurveyDeblendError
from survey_deblend.models.batches import run_in_batches
from survey_deblend.models.checkpoint import Checkpoint, file_hash, load_checkpoint
from survey_deblend.schema import PREDICTION_COLUMNS
from survey_deblend.surveys import PhotometricFrame

if TYPE_CHECKING:
    from survey_deblend.cutouts.base import CutoutBatch

DEFAULT_BATCH_SIZE = 1024  # stamps per network pass unless the run's ``model.batch_size`` says otherwise


def default_checkpoint() -> Path:
    """The checkpoint shipped in the package, ``survey_deblend/weights/deblender.pt``."""
    path = Path(str(resources.files("survey_deblend") / "weights" / "deblender.pt"))
    if not path.is_file():
        raise SurveyDeblendError(f"{path}: the shipped checkpoint is missing (run 'survey-deblend train all')")
    return path


def _pick_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """A trained deblender and regressor on one device; ``predict`` maps raw stamps to a DataFrame."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        model_id: str,
        device: str | None = None,
        bf16: bool = False,
        compile: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.checkpoint = checkpoint
        self.metadata: dict[str, Any] = checkpoint.metadata
        self.model_id = model_id
        self.device = _pick_device(device)
        self.batch_size = int(batch_size)
        # bf16 autocast and torch.compile only where they pay: CUDA. On CPU they are quietly off.
        self.bf16 = bool(bf16) and self.device.type == "cuda"
        self.encoder = checkpoint.build("deblender").to(self.device)
        self.regressor = checkpoint.build("regressor").to(self.device)
        self.decoder = checkpoint.build("decoder").to(self.device) if "decoder" in checkpoint.state else None
        # The flow head (models.flow), when the checkpoint carries one, gives the posterior columns (mean, sigma,
        # an id-seeded draw, z median and percentiles); it beats the Gaussian regressor on the held-out figures
        # (docs/model-card.md), which then only serves checkpoints without a flow.
        self.flow = checkpoint.build("flow").to(self.device) if checkpoint.has_flow else None
        if self.device.type == "cpu":
            self.encoder = self.encoder.to(memory_format=torch.channels_last)
        self._encode = self._encode_eager
        if compile and self.device.type == "cuda":
            self._encode = torch.compile(self._encode_eager, dynamic=False)
        self.survey: str = str(self.metadata.get("survey", "LSST"))
        self.model_bands: tuple[str, ...] = tuple(self.metadata["bands"])
        self.pixel_scale: float = float(self.metadata["pixel_scale_arcsec"])
        self.stamp_size: int = int(self.metadata["stamp_size"])
        self.m_b = np.asarray(self.metadata["m_b"], dtype=np.float32)
        self.beta = float(self.metadata["beta"])
        self._psf_images: dict[str, np.ndarray] = {}

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        device: str | None = None,
        bf16: bool = False,
        compile: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Predictor:
        """Load ``path`` (None: the shipped checkpoint) once; ``model_id`` is a hash of the file."""
        path = default_checkpoint() if path is None else Path(path)
        checkpoint = load_checkpoint(path)
        return cls(checkpoint, file_hash(path), device=device, bf16=bf16, compile=compile, batch_size=batch_size)

    def source_stamp_size(self, pixel_scale: float) -> int:
        """Odd stamp size, in pixels of ``pixel_scale`` arcsec, to fetch so that it covers the model stamp."""
        return preprocess.source_stamp_size(pixel_scale, self.pixel_scale, self.stamp_size)

    def frame(
        self,
        bands: Sequence[str],
        pixel_scale: float,
        zeropoints: float | Sequence[float] | None = None,
        survey: str | None = None,
    ) -> PhotometricFrame:
        """The ``PhotometricFrame`` of numpy stamps: ``zeropoints`` one AB zeropoint per band (a number: the same
        for every band; None: the survey's native units), ``survey`` None: the model's survey."""
        bands = tuple(bands)
        if zeropoints is not None and np.ndim(zeropoints) == 0:
            zeropoints = (float(zeropoints),) * len(bands)
        try:
            return PhotometricFrame(survey or self.survey, bands, pixel_scale, zeropoints)
        except ValueError as exc:
            raise InputError(f"zeropoints: {exc}") from None

    def prepare_frame(
        self,
        images: np.ndarray,
        frame: PhotometricFrame,
        band_mask: np.ndarray | None = None,
        dynamic_range: str = "physical",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw stamps of ``frame`` to normalized model-frame stamps ``(N, 6, 45, 45)`` and the band mask.

        ``dynamic_range="physical"`` converts units with the frame's zeropoints and surveycodex facts only;
        ``"match"`` also rescales each band so that the batch's median per-image maximum equals the training one.
        """
        factors = preprocess.flux_conversion_factors(frame, self.survey, self.model_bands)
        images, mask = preprocess.map_bands(images, frame.bands, band_mask, self.model_bands)
        if not np.isfinite(np.sum(images, dtype=np.float64)):  # one pass, no boolean copy
            raise InputError("stamps: contain NaN or infinite pixels (mark the band absent in band_mask instead)")
        if not np.all(factors == 1.0):
            images = images * factors.reshape(1, -1, 1, 1).astype(np.float32)
        images = preprocess.resample_flux(images, frame.pixel_scale_arcsec, self.pixel_scale, self.stamp_size)
        if dynamic_range == "match":
            stats = self.metadata.get("train_stats", {}).get("median_max", self.metadata["m_b"])
            images, _ = preprocess.match_dynamic_range(images, mask, stats)
        elif dynamic_range != "physical":
            raise InputError(f"dynamic_range: expected 'physical' or 'match', got {dynamic_range!r}")
        return preprocess.normalize(images, self.m_b, self.beta), mask

    def prepare(
        self,
        images: np.ndarray,
        bands: Sequence[str],
        pixel_scale: float,
        band_mask: np.ndarray | None = None,
        zeropoints: float | Sequence[float] | None = None,
        survey: str | None = None,
        dynamic_range: str = "physical",
    ) -> tuple[np.ndarray, np.ndarray]:
        """``prepare_frame`` for numpy stamps (the frame from ``frame(bands, pixel_scale, zeropoints, survey)``)."""
        return self.prepare_frame(images, self.frame(bands, pixel_scale, zeropoints, survey), band_mask, dynamic_range)

    def _encode_eager(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, _ = self.encoder(x, mask)
        return mu, self.regressor(mu)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode_normalized(
        self, normed: np.ndarray, mask: np.ndarray, decode: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Run the networks on normalized stamps in batches: ``(latent, regressor output, reconstruction)``."""
        return run_in_batches(
            self._encode, normed, mask, self.batch_size, self.device, int(self.metadata["latent_dim"]),
            decoder=self.decoder, decode=decode, autocast=self._autocast(),
        )

    def reconstruct(
        self,
        images: np.ndarray,
        bands: Sequence[str],
        pixel_scale: float,
        band_mask: np.ndarray | None = None,
        zeropoints: float | Sequence[float] | None = None,
        survey: str | None = None,
    ) -> np.ndarray:
        """The deblended isolated central galaxy in the model frame and the model survey's flux units."""
        normed, mask = self.prepare(images, bands, pixel_scale, band_mask, zeropoints, survey)
        _, _, recon = self.encode_normalized(normed, mask, decode=True)
        return preprocess.denormalize(recon, self.m_b, self.beta)

    def psf_image(self, band: str = "i") -> np.ndarray:
        """The model survey's PSF in ``band`` drawn at its pixel scale (for HSM on reconstructions)."""
        if band not in self._psf_images:
            from survey_deblend.sim.psf import psf_image

            self._psf_images[band] = psf_image(self.survey, band, self.stamp_size).array
        return self._psf_images[band]

    def measure_reconstruction(self, recon_flux: np.ndarray, band: str = "i") -> tuple[np.ndarray, np.ndarray]:
        """PSF-corrected HSM shapes (shear convention) of reconstructions in flux units; failures are NaN."""
        from survey_deblend.shapes import measure_hsm_batch

        b = self.model_bands.index(band)
        return measure_hsm_batch(recon_flux[:, b], self.psf_image(band), self.pixel_scale)

    def _predict_frame(
        self,
        images: np.ndarray,
        frame: PhotometricFrame,
        band_mask: np.ndarray | None,
        measure_recon: bool,
        dynamic_range: str,
        return_latent: bool = False,
        ids: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """The one prediction path: stamps of ``frame`` to ``PREDICTION_COLUMNS`` (and latents), input order.

        With a flow head the posterior columns come from it, each draw seeded by ``ids`` (None: the row index)."""
        normed, mask = self.prepare_frame(images, frame, band_mask, dynamic_range)
        latent, out, recon = self.encode_normalized(normed, mask, decode=measure_recon)
        n = len(out)
        if measure_recon and n:
            e1_recon, e2_recon = self.measure_reconstruction(preprocess.denormalize(recon, self.m_b, self.beta))
        else:
            e1_recon = e2_recon = np.full(n, np.nan)
        filled = {
            "e1_pred": out[:, 0].astype(np.float64),
            "e2_pred": out[:, 1].astype(np.float64),
            "e_sigma_pred": np.exp(out[:, 2].astype(np.float64)),
            "z_pred": out[:, 3].astype(np.float64),
            "z_sigma_pred": np.exp(out[:, 4].astype(np.float64)),
            "e1_recon": np.asarray(e1_recon, dtype=np.float64),
            "e2_recon": np.asarray(e2_recon, dtype=np.float64),
        }
        if self.flow is not None and n:
            seeds = np.arange(n) if ids is None else np.asarray(ids)
            filled.update(self.flow.summarize(latent, mask, seeds))
        result = pd.DataFrame({name: filled.get(name, np.full(n, np.nan)) for name in PREDICTION_COLUMNS})
        if return_latent:
            latents = pd.DataFrame({f"latent_{k:02d}": latent[:, k].astype(np.float64) for k in range(latent.shape[1])})
            result = pd.concat([result, latents], axis=1)
        return result

    def predict_e(
        self, images: np.ndarray, frame: PhotometricFrame, band_mask: np.ndarray | None, ids: np.ndarray | None = None,
        dynamic_range: str = "physical",
    ) -> np.ndarray:
        """``(N, 2)``: exactly the ``e1_pred, e2_pred`` that ``_predict_frame`` writes for these stamps (the flow's
        posterior mean over its fixed Sobol points, else the regressor's), no reconstruction. Metacalibration
        (``calibration.batch``) runs it on the five sheared images, so R is the response of the published column."""
        if self.flow is None:
            out = self._predict_frame(images, frame, band_mask, False, dynamic_range, ids=ids)
            return out[["e1_pred", "e2_pred"]].to_numpy(dtype=np.float64)
        normed, mask = self.prepare_frame(images, frame, band_mask, dynamic_range)
        latent, _, _ = self.encode_normalized(normed, mask)
        return self.flow.posterior_mean_e(latent, mask) if len(latent) else np.zeros((0, 2))

    def predict_batch(
        self, batch: CutoutBatch, measure_recon: bool = True, dynamic_range: str = "physical",
        ids: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """Predictions for a ``CutoutBatch``: exactly ``PREDICTION_COLUMNS``, one row per batch row in order.

        The usable rows (status ok/padded) go through the model ``batch_size`` at a time in the batch's own
        ``frame`` (survey, bands, pixel scale, per-band zeropoints); the other rows are null. ``ids`` (one per
        row, e.g. ``coadd_objects_id``) seed each galaxy's posterior draw, so a re-run reproduces it.
        """
        usable = np.flatnonzero(batch.usable)
        ids = np.arange(len(batch)) if ids is None else np.asarray(ids)
        if len(ids) != len(batch):
            raise ValueError(f"predict_batch: {len(ids)} ids for {len(batch)} rows")
        result = pd.DataFrame({name: np.full(len(batch), np.nan) for name in PREDICTION_COLUMNS})
        for start in range(0, len(usable), self.batch_size):
            rows = usable[start : start + self.batch_size]
            predicted = self._predict_frame(
                batch.images[rows], batch.frame, batch.band_mask[rows], measure_recon, dynamic_range,
                ids=ids[rows],
            )
            result.iloc[rows] = predicted.to_numpy()
        return result

    def predict(
        self,
        images: np.ndarray,
        bands: Sequence[str],
        pixel_scale: float,
        band_mask: np.ndarray | None = None,
        return_latent: bool = False,
        measure_recon: bool = True,
        zeropoints: float | Sequence[float] | None = None,
        survey: str | None = None,
        dynamic_range: str = "physical",
        ids: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """Predict shapes and redshifts for raw stamps ``(N, B, S, S)``; one row per stamp, in input order.

        The stamps' frame is ``bands``, ``pixel_scale`` (arcsec), ``zeropoints`` (one AB zeropoint per band, or
        one for all; None: native units of ``survey``) and ``survey`` (None: the model's, e.g. LSST electrons
        over the full exposure, as BTK makes them). ``ids`` seed each galaxy's posterior draw (None: the row
        index). Columns ``PREDICTION_COLUMNS`` (``e1_recon, e2_recon`` NaN when ``measure_recon`` is False or
        HSM fails; the flow columns NaN without a flow head) and ``latent_00..`` when ``return_latent``.
        """
        frame = self.frame(bands, pixel_scale, zeropoints, survey)
        return self._predict_frame(images, frame, band_mask, measure_recon, dynamic_range, return_latent, ids)

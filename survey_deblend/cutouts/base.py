"""The cutout contract: a batch of multi-band stamps with a band mask and a status per row, and the source ABC.

Stamps are float32 ``(N, B, S, S)``, sky-subtracted, in the source's flux units, north up and west to the right
(+x = West, +y = North; DESIGN.md, "Conventions").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass

import numpy as np

from survey_deblend.cutouts import status as st
from survey_deblend.cutouts.choice import TileChoice
from survey_deblend.surveys import PhotometricFrame

STATUS_WIDTH = 24  # characters of the status array's dtype


def crop_margin(images, margin: int):
    """The central part of stamps ``(..., S, S)`` (an array or a tensor, as a view) without ``margin`` pixels on
    every side: the model's stamp of a cut made wider for metacalibration (``CutoutBatch.margin_pix``)."""
    if margin == 0:
        return images
    s = images.shape[-1]
    return images[..., margin : s - margin, margin : s - margin]


@dataclass
class CutoutBatch:
    """Stamps for N rows: ``images`` (N, B, S, S) float32, ``band_mask`` (N, B) bool, ``status`` (N,) str,
    the photometric ``frame`` of their pixels (survey, bands, pixel scale, zeropoints), and ``failed_bands``
    (N,) str: the bands whose fetch failed and why (``"r:error_http Y:error_nan"``; empty when none did), and
    ``noise_sigma`` (N, B) float: the pixel noise of each stamp and band in the batch's flux units, from the
    source's weight map (``calibration.noise.weight_noise_sigma``), NaN where unknown (no weight, a failed or
    absent band); None when the source gives no weights (metacalibration then estimates it from the border).
    ``margin_pix``: the stamps were cut this many pixels wider on every side than the model's stamp, for
    metacalibration (``core`` is the model's stamp; the statuses and the band mask are those of the whole cut)."""

    images: np.ndarray
    band_mask: np.ndarray
    status: np.ndarray
    frame: PhotometricFrame
    failed_bands: np.ndarray | None = None
    noise_sigma: np.ndarray | None = None
    margin_pix: int = 0

    def __post_init__(self) -> None:
        # wide enough for every status, so that assigning a longer one later never truncates it
        status = np.asarray(self.status, dtype=str).reshape(-1)
        self.status = status.astype(f"<U{max(STATUS_WIDTH, status.dtype.itemsize // 4)}")
        n = len(self.status)
        if self.images.ndim != 4 or self.images.shape[:2] != (n, len(self.bands)):
            raise ValueError(f"images shape {self.images.shape} does not match {n} rows x {len(self.bands)} bands")
        if self.band_mask.shape != (n, len(self.bands)):
            raise ValueError(f"band_mask shape {self.band_mask.shape} does not match images {self.images.shape}")
        width = 2 * len(self.bands) * STATUS_WIDTH
        if self.failed_bands is None:
            self.failed_bands = np.full(n, "", dtype=f"<U{width}")
        self.failed_bands = np.asarray(self.failed_bands, dtype=f"<U{width}").reshape(-1)
        if len(self.failed_bands) != n:
            raise ValueError(f"failed_bands of {len(self.failed_bands)} rows for {n} rows")
        if self.noise_sigma is not None:
            self.noise_sigma = np.asarray(self.noise_sigma, dtype=np.float64)
            if self.noise_sigma.shape != (n, len(self.bands)):
                raise ValueError(f"noise_sigma shape {self.noise_sigma.shape} does not match {n} rows x "
                                 f"{len(self.bands)} bands")
        if not 0 <= 2 * self.margin_pix < self.images.shape[-1]:
            raise ValueError(f"margin_pix {self.margin_pix} does not fit stamps of {self.images.shape[-1]} pixels")

    def core(self) -> CutoutBatch:
        """The model's stamps: the central ``stamp_size - 2 margin_pix`` pixels, every other array shared
        with this batch. Itself when there is no margin."""
        if self.margin_pix == 0:
            return self
        images = np.ascontiguousarray(crop_margin(self.images, self.margin_pix))
        return CutoutBatch(images, self.band_mask, self.status, self.frame, self.failed_bands, self.noise_sigma)

    def __len__(self) -> int:
        return len(self.status)

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names in stamp order (the frame's)."""
        return self.frame.bands

    @property
    def pixel_scale_arcsec(self) -> float:
        """Pixel scale of the stamps (the frame's)."""
        return self.frame.pixel_scale_arcsec

    @property
    def stamp_size(self) -> int:
        """Side of a stamp in pixels."""
        return int(self.images.shape[-1])

    @property
    def usable(self) -> np.ndarray:
        """Boolean (N,): rows whose stamp can go to inference (``ok`` or ``padded``)."""
        return np.isin(self.status, list(st.USABLE))

    def bands_used(self) -> np.ndarray:
        """Object array (N,): the bands whose pixels go to the model, in stamp order (``griz``); None where the
        row is not usable (DESIGN.md "Output columns": ``bands_used``)."""
        out = np.full(len(self), None, dtype=object)
        usable = self.usable
        if usable.any():
            patterns, inverse = np.unique(self.band_mask[usable], axis=0, return_inverse=True)
            names = ["".join(b for b, on in zip(self.bands, row, strict=True) if on) for row in patterns]
            out[usable] = np.asarray(names, dtype=object)[inverse.reshape(-1)]
        return out

    def status_counts(self) -> dict[str, int]:
        """How many rows ended with each status (only statuses that occur)."""
        return dict(sorted(Counter(str(s) for s in self.status).items()))

    def settle(self, band_status: np.ndarray) -> None:
        """Set the band mask, each row's status and its failed bands from the per-band statuses ``(N, B)``; the
        noise level of a band whose pixels are not used becomes NaN (unknown)."""
        self.band_mask[:] = np.isin(band_status, list(st.USABLE))
        if self.noise_sigma is not None:
            self.noise_sigma[~self.band_mask] = np.nan
        self.status[:] = [st.combine_band_statuses(list(row), self.bands) for row in band_status]
        self.failed_bands[:] = [st.failed_bands(self.bands, list(row)) for row in band_status]

    @classmethod
    def empty(cls, n: int, frame: PhotometricFrame, size_pix: int, status: str = st.NO_COVERAGE) -> CutoutBatch:
        """N zero stamps of ``frame``, every mask bit cleared, every row with ``status``."""
        return cls(
            images=np.zeros((n, len(frame.bands), size_pix, size_pix), dtype=np.float32),
            band_mask=np.zeros((n, len(frame.bands)), dtype=bool),
            status=np.full(n, status, dtype=f"<U{STATUS_WIDTH}"),
            frame=frame,
        )


class CutoutSource(ABC):
    """Where stamps come from. Implementations must pickle cheaply: they travel to Dask workers."""

    bands: tuple[str, ...]
    pixel_scale_arcsec: float

    @abstractmethod
    def locality_keys(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """A string per position; rows sharing a key are cheapest to fetch together (one read serves them)."""

    @abstractmethod
    def plan(self, ra: np.ndarray, dec: np.ndarray, size_pix: int) -> TileChoice:
        """The tile of each band for every row, chosen once (on the planner); ``TileChoice.keys`` are the
        locality keys and ``TileChoice.take(rows)`` one partition's share, cheap to ship with its task."""

    @abstractmethod
    def fetch(
        self, ra: np.ndarray, dec: np.ndarray, size_pix: int, choice: TileChoice | None = None
    ) -> CutoutBatch:
        """Stamps of ``size_pix`` pixels at the source's pixel scale, north up, west right; never raises for a row.

        ``choice`` is the planner's tile choice for these rows (None: the source chooses here)."""

"""The stand-ins of ``benchmarks/scale.py`` (only there): a source with no pixels and a predictor that returns
nulls, so that the benchmark measures the client, the scheduler and the plan, not cutting or inference.

A module of its own (not the script) so that Dask workers, which get the client's ``sys.path``, can unpickle them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from survey_deblend.cutouts.base import CutoutBatch, CutoutSource
from survey_deblend.pipeline.plugin import PredictorPlugin
from survey_deblend.schema import PREDICTION_COLUMNS
from survey_deblend.surveys import DES_BANDS, PhotometricFrame, pixel_scale


class NoPixelSource(CutoutSource):
    """Locality keys are 1-degree sky cells; ``fetch`` returns 1-pixel zero stamps marked ``ok``."""

    bands = DES_BANDS
    pixel_scale_arcsec = float(pixel_scale("DES"))
    cell_deg = 1.0

    def locality_keys(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        i = np.floor(np.mod(np.asarray(ra, dtype=float), 360.0) / self.cell_deg).astype(np.int64)
        j = np.floor((np.asarray(dec, dtype=float) + 90.0) / self.cell_deg).astype(np.int64)
        cells, inverse = np.unique(i * 1000 + j, return_inverse=True)  # names built once per cell, not per row
        return np.array([f"cell_{c // 1000}_{c % 1000}" for c in cells])[inverse.reshape(-1)]

    def plan(self, ra: np.ndarray, dec: np.ndarray, size_pix: int) -> Any:
        """No tiles to choose: None (the partitions' tasks get no choice, as ``fetch`` needs none)."""
        return None

    def fetch(self, ra: np.ndarray, dec: np.ndarray, size_pix: int, choice: Any = None) -> CutoutBatch:
        frame = PhotometricFrame("DES", self.bands, self.pixel_scale_arcsec, (30.0,) * len(self.bands))
        batch = CutoutBatch.empty(len(ra), frame, 1, status="ok")
        batch.band_mask[:] = True
        return batch


class NullPredictor:
    """``predict_batch`` returning the prediction columns, all NaN (the trivial inference of this benchmark)."""

    model_id = "null"

    def predict_batch(self, batch: Any, measure_recon: bool = False, ids: Any = None) -> pd.DataFrame:
        return pd.DataFrame({name: np.full(len(batch), np.nan) for name in PREDICTION_COLUMNS})


class NullPlugin(PredictorPlugin):
    """The worker plugin, holding a ``NullPredictor`` instead of loading a checkpoint."""

    def __init__(self) -> None:
        super().__init__(None, model_id="null")

    @property
    def predictor(self) -> Any:
        return NullPredictor()

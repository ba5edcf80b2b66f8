"""A source of locality keys only (1-degree sky cells), for tests of the staged selection: the join tasks on the
workers call ``locality_keys`` and nothing else; workers import it by the ``sys.path`` the conftest set."""

from __future__ import annotations

import numpy as np


class SkyCells:
    """``locality_keys``: ``cell_<i>_<j>`` of ``cell_deg`` cells, as ``benchmarks/scale_parts.NoPixelSource``."""

    def __init__(self, cell_deg: float = 1.0) -> None:
        self.cell_deg = cell_deg

    def locality_keys(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        i = np.floor(np.mod(np.asarray(ra, dtype=float), 360.0) / self.cell_deg).astype(np.int64)
        j = np.floor((np.asarray(dec, dtype=float) + 90.0) / self.cell_deg).astype(np.int64)
        return np.array([f"cell_{a}_{b}" for a, b in zip(i, j, strict=True)], dtype=str)

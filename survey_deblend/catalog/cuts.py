"""The im3shape selection cuts, applied to one chunk of rows at a time with per-cut counts.

Each cut is a named predicate over a chunk; cuts are cumulative in the order listed (DESIGN.md defaults), so
the count after a cut is the number of rows that passed it and every earlier one. Summing chunk counts gives
the cut flow of the whole catalog without ever holding it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from survey_deblend.catalog.schema import UNMEASURED
from survey_deblend.config.catalog import CutsConfig

SHEAR_COLUMNS = ["COADD_OBJECTS_ID", "E_1", "E_2", "NBC_M", "NBC_C1", "NBC_C2", "W", "ERROR_FLAG", "INFO_FLAG", "SNR_W",
                 "MEAN_PSF_FWHM", "MEAN_PSF_E1", "MEAN_PSF_E2"]
POSITION_COLUMNS = ["COADD_OBJECTS_ID", "RA", "DEC"]
GOLD_QUALITY_COLUMNS = ["MODEST_CLASS", "FLAGS_I"]


@dataclass(frozen=True)
class Cut:
    """A named row predicate: ``test(chunk)`` is True for the rows that pass."""

    name: str
    test: Callable[[pd.DataFrame], np.ndarray]


def _measured(chunk: pd.DataFrame) -> np.ndarray:
    e1, e2 = chunk["E_1"].to_numpy(), chunk["E_2"].to_numpy()
    return np.isfinite(e1) & np.isfinite(e2) & (e1 != UNMEASURED) & (e2 != UNMEASURED)


def _e_squared(chunk: pd.DataFrame) -> np.ndarray:
    e1, e2 = chunk["E_1"].to_numpy(), chunk["E_2"].to_numpy()
    return e1 * e1 + e2 * e2


def shear_cuts(cuts: CutsConfig) -> list[Cut]:
    """The configured cuts on the shear catalog, in the order they are applied and reported."""
    selected = [Cut("E_1/E_2 measured (finite, not -9999)", _measured)]
    e_max_sq = cuts.e_max**2
    selected.append(Cut(f"|e| < {cuts.e_max:g}", lambda c: _e_squared(c) < e_max_sq))
    if cuts.error_flag_zero:
        selected.append(Cut("ERROR_FLAG == 0", lambda c: c["ERROR_FLAG"].to_numpy() == 0))
    if cuts.info_flag_zero:
        selected.append(Cut("INFO_FLAG == 0", lambda c: c["INFO_FLAG"].to_numpy() == 0))
    snr_min = cuts.snr_w_min
    selected.append(Cut(f"SNR_W > {snr_min:g}", lambda c: c["SNR_W"].to_numpy() > snr_min))
    return selected


def gold_quality_cut(cuts: CutsConfig) -> Cut:
    """DES weak-lensing gold cuts: galaxies (MODEST_CLASS == 1) with clean i-band photometry."""
    flags_max = cuts.flags_i_max
    return Cut(
        f"gold MODEST_CLASS == 1 and FLAGS_I <= {flags_max}",
        lambda c: (c["MODEST_CLASS"].to_numpy() == 1) & (c["FLAGS_I"].to_numpy() <= flags_max),
    )


def apply_cuts(chunk: pd.DataFrame, cuts: list[Cut]) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of ``chunk`` passing every cut, and counts: rows in, then rows left after each cut."""
    keep = np.ones(len(chunk), dtype=bool)
    counts = [len(chunk)]
    for cut in cuts:
        with np.errstate(all="ignore"):  # NaN and huge values fail the comparisons, silently and correctly
            keep &= np.asarray(cut.test(chunk), dtype=bool)
        counts.append(int(keep.sum()))
    return chunk[keep], np.asarray(counts, dtype=np.int64)

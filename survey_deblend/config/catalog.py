"""Configuration of the catalog stage: input files, selection cuts, the gold match."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class CutsConfig:
    """Selection cuts; defaults as DESIGN.md (the DES SVA1 conservative im3shape selection)."""

    snr_w_min: float = 20.0
    e_max: float = 1.0
    error_flag_zero: bool = True
    info_flag_zero: bool = True
    gold_quality: bool = False  # MODEST_CLASS == 1 and FLAGS_I <= 3 (needs the gold catalog)


@dataclass(frozen=True)
class CatalogConfig:
    """Where the shear and position catalogs are and how to join them."""

    shear: Path | None = None  # im3shape catalog (FITS or Parquet)
    gold: Path | None = None  # gold catalog (ID join on COADD_OBJECTS_ID, or sky match)
    wlinfo: Path | None = None  # row-matched wlinfo file (positions), alternative to gold
    match: Literal["id", "sky"] = "id"
    match_radius_arcsec: float = 1.0
    chunk_rows: int = 1_000_000  # rows per Dask partition when streaming a FITS file
    cuts: CutsConfig = CutsConfig()

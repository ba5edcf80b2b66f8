"""Configuration of the catalog stage: input files, selection cuts, the gold match."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from survey_deblend.config.hashing import NOT_HASHED


@dataclass(frozen=True)
class CutsConfig:
    """Selection cuts; defaults as DESIGN.md (the DES SVA1 conservative im3shape selection)."""

    snr_w_min: float = 20.0
    e_max: float = 1.0
    error_flag_zero: bool = True
    info_flag_zero: bool = True
    gold_quality: bool = False  # MODEST_CLASS == 1 and FLAGS_I <= flags_i_max (needs the gold catalog)
    flags_i_max: int = 3


@dataclass(frozen=True)
class CatalogConfig:
    """Where the shear and position catalogs are and how to join them."""

    shear: Path | None = None  # im3shape catalog (FITS or Parquet)
    gold: Path | None = None  # gold catalog (ID join on COADD_OBJECTS_ID, or sky match)
    wlinfo: Path | None = None  # row-matched wlinfo file (positions), alternative to gold
    match: Literal["id", "sky"] = "id"
    match_radius_arcsec: float = 1.0
    chunk_rows: int = field(default=1_000_000, metadata=NOT_HASHED)  # rows per Dask partition when streaming FITS
    # Dask scheduler of the selection: "synchronous" (default: as fast as "threads" on 2 cores in
    # benchmarks/catalog_select.py and ~20% less memory, one chunk in flight), "threads", or "default"
    # (whatever dask would use, e.g. an active distributed client; the files must then be on its workers)
    scheduler: Literal["threads", "synchronous", "default"] = field(default="synchronous", metadata=NOT_HASHED)
    cuts: CutsConfig = CutsConfig()

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive, got {self.chunk_rows}")
        if not self.match_radius_arcsec > 0:
            raise ValueError(f"match_radius_arcsec must be positive, got {self.match_radius_arcsec}")

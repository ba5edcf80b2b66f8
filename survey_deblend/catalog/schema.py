"""The DES SVA1 catalog schemas (``../shared/DES_SVA1.md``): column names, dtypes and FITS writers.

Synthetic catalogs (tests, the demo field) are written through these writers so that they follow the real
files exactly, and the readers check inputs against the same tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

UNMEASURED = -9999.0
ERROR_FLAG_UNMEASURED = 2**30
INFO_FLAG_UNMEASURED = 2**25

IM3SHAPE_COLUMNS: dict[str, str] = {
    "COADD_OBJECTS_ID": "i8",
    "E_1": "f8",
    "E_2": "f8",
    "NBC_M": "f8",
    "NBC_C1": "f8",
    "NBC_C2": "f8",
    "W": "f8",
    "ERROR_FLAG": "i4",
    "INFO_FLAG": "i4",
    "SNR_W": "f4",
    "SNR_R": "f4",
    "FLUX_R": "f4",
    "RADIUS": "f4",
    "MEAN_RGPP_RP": "f4",
    "IS_BULGE": "i4",
    "MEAN_PSF_E1": "f8",
    "MEAN_PSF_E2": "f8",
    "MEAN_PSF_FWHM": "f4",
    "RA_SHIFT": "f4",
    "DEC_SHIFT": "f4",
    "CHI2": "f4",
    "LIKELIHOOD": "f4",
    "STAMP_SIZE": "i4",
    "N_EXPOSURE": "i4",
}

WLINFO_COLUMNS: dict[str, str] = {
    "COADD_OBJECTS_ID": "i8",
    "RA": "f8",
    "DEC": "f8",
    "MAG_AUTO_G": "f4",
    "MAG_AUTO_R": "f4",
    "MAG_AUTO_I": "f4",
    "MAG_AUTO_Z": "f4",
    "PHOTOZ_BIN": "i4",
    "MEAN_PHOTOZ": "f4",
    "SVA1_FLAG": "i4",
    "IM3SHAPE_FLAG": "i4",
    "NGMIX_FLAG": "i4",
}

GOLD_COLUMNS: dict[str, str] = {
    "COADD_OBJECTS_ID": "i8",
    "RA": "f8",
    "DEC": "f8",
    "MODEST_CLASS": "i2",
    **{f"FLAGS_{b}": "i2" for b in "GRIZ"},
    **{f"MAG_AUTO_{b}": "f4" for b in "GRIZ"},
    **{f"MAGERR_AUTO_{b}": "f4" for b in "GRIZ"},
}


def write_fits_table(path: str | Path, frame: pd.DataFrame, columns: dict[str, str]) -> Path:
    """Write ``frame`` as a binary table in HDU 1 with exactly ``columns`` (names and dtypes, in order).

    A missing column raises KeyError naming it, so a writer never produces an off-schema file.
    """
    path = Path(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{path.name}: missing column {missing[0]}")
    table = Table({name: np.asarray(frame[name]).astype(dtype) for name, dtype in columns.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(table)]).writeto(path, overwrite=True)
    return path


class FitsTableWriter:
    """A binary table in HDU 1 written chunk by chunk, so that a catalog larger than memory can be written.

    The headers go first (those ``write_fits_table`` writes), each ``write`` appends a chunk's big-endian records,
    and ``close`` pads the data and puts the final row count into NAXIS2 (a fixed-width card, rewritten in place).
    """

    def __init__(self, path: str | Path, columns: dict[str, str]) -> None:
        self.path = Path(path)
        self.columns = columns
        self.dtype = np.dtype([(name, np.dtype(dtype).newbyteorder(">")) for name, dtype in columns.items()])
        self.n_rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "wb")
        self._handle.write(self._headers())

    def _headers(self) -> bytes:
        empty = Table({name: np.zeros(0, dtype=dtype) for name, dtype in self.columns.items()})
        table = fits.BinTableHDU(empty)
        table.header["NAXIS2"] = self.n_rows
        return (fits.PrimaryHDU().header.tostring() + table.header.tostring()).encode("ascii")

    def write(self, frame: pd.DataFrame) -> None:
        """Append the rows of ``frame`` (every column of the schema; a missing one raises KeyError naming it)."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise KeyError(f"{self.path.name}: missing column {missing[0]}")
        records = np.empty(len(frame), dtype=self.dtype)
        for name, dtype in self.columns.items():
            records[name] = np.asarray(frame[name]).astype(dtype)
        records.tofile(self._handle)
        self.n_rows += len(frame)

    def close(self) -> Path:
        data_bytes = self.n_rows * self.dtype.itemsize
        self._handle.write(b"\0" * (-data_bytes % 2880))
        headers = self._headers()
        self._handle.seek(0)
        self._handle.write(headers)
        self._handle.close()
        return self.path

    def __enter__(self) -> FitsTableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

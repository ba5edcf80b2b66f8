"""Readers for the DES SVA1 catalogs (FITS binary tables, gzip-compressed or not, or Parquet) that read only the
needed columns.

A catalog is opened once (header or Parquet footer only), its needed columns are checked by name and dtype
kind against ``schema``, and then rows are read in ranges ``[start, stop)``. FITS tables are read straight
from the file in blocks with numpy (no astropy table in memory), converting FITS big-endian values to native
byte order before they reach pandas. A ``.fits.gz`` (the DES release's format) has no random access: its
needed columns are decompressed once, streaming, into a spool on disk (``gzfits``), and row ranges are read
from there. ``to_dask`` turns a catalog into a Dask DataFrame over row ranges so a catalog larger than memory
streams.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from survey_deblend.errors import InputError

FITS_MAGIC = b"SIMPLE  ="
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
INT64_MAX = np.iinfo(np.int64).max
BLOCK_ROWS = 131_072  # rows read per numpy call inside a chunk: bounds the transient memory of one read


def _kind_ok(actual: np.dtype, expected: str) -> bool:
    """Whether ``actual`` can stand for the schema dtype ``expected`` (same kind, any width)."""
    want = np.dtype(expected).kind
    if want in "iu":
        return actual.kind in "iu"
    if want == "f":
        return actual.kind == "f"
    return actual.kind == want


def _kind_name(expected: str) -> str:
    dtype = np.dtype(expected)
    return f"an integer ({dtype.name})" if dtype.kind in "iu" else f"a floating-point number ({dtype.name})"


@dataclass(frozen=True)
class CatalogReader:
    """One catalog file and the layout needed to read row ranges from it; cheap to pickle.

    Build it with ``open_catalog``; ``columns`` maps every column in the file to its numpy dtype (as stored).
    """

    path: Path
    format: str  # "fits" or "parquet"
    n_rows: int
    columns: dict[str, np.dtype]
    data_offset: int = 0  # FITS: byte offset of the table data
    record_dtype: np.dtype | None = None  # FITS: the big-endian record layout
    scaling: tuple[tuple[str, float, float], ...] = ()  # FITS: (column, TSCAL, TZERO) for scaled columns
    row_group_starts: tuple[int, ...] = ()  # Parquet: first row of each row group, plus n_rows at the end
    compressed: bool = False  # FITS inside gzip: rows come from a spool of the needed columns (gzfits)
    logical: tuple[str, ...] = ()  # FITS: TFORM L columns, stored as bytes 'T'/'F', read as bool

    def check_columns(self, required: dict[str, str]) -> None:
        """Raise InputError naming the file and the first missing or wrongly typed column of ``required``."""
        for name, expected in required.items():
            if name not in self.columns:
                raise InputError(f"{self.path}: missing column {name}")
            actual = self.columns[name]
            if actual.shape != () or not _kind_ok(actual, expected):
                raise InputError(f"{self.path}: column {name} has dtype {actual.name}, expected {_kind_name(expected)}")

    def has_columns(self, names: list[str]) -> bool:
        return all(n in self.columns for n in names)

    def chunk_ranges(self, chunk_rows: int) -> list[tuple[int, int]]:
        """Row ranges of at most about ``chunk_rows`` rows covering the file; Parquet follows row groups."""
        if chunk_rows < 1:
            raise InputError(f"chunk_rows must be positive, got {chunk_rows}")
        if self.n_rows == 0:
            return [(0, 0)]
        if self.format == "parquet" and len(self.row_group_starts) > 2:
            ranges, start = [], 0
            for boundary in self.row_group_starts[1:]:
                if boundary - start >= chunk_rows or boundary == self.n_rows:
                    ranges.append((start, boundary))
                    start = boundary
            return ranges
        return [(s, min(s + chunk_rows, self.n_rows)) for s in range(0, self.n_rows, chunk_rows)]

    def read(self, names: list[str], start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows ``[start, stop)`` of columns ``names`` as a pandas DataFrame in native byte order."""
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        start = max(0, min(start, stop))
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise InputError(f"{self.path}: missing column {missing[0]}")
        if self.format == "fits":
            data = self._read_fits(names, start, stop)
        else:
            data = self._read_parquet(names, start, stop)
        for name in names:  # an unsigned 64-bit ID beyond int64 would wrap around in the int64 output
            values = data[name]
            if values.dtype.kind == "u" and values.dtype.itemsize == 8 and len(values) and values.max() > INT64_MAX:
                raise InputError(f"{self.path}: column {name} holds values beyond the int64 range (max {values.max()})")
        frame = pd.DataFrame(data, columns=names, copy=False)
        frame.index = pd.RangeIndex(start, stop)
        return frame

    def _read_fits(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        assert self.record_dtype is not None
        if self.compressed:
            return self._read_spooled(names, start, stop)
        n = stop - start
        raw_dtypes = {name: self.record_dtype.fields[name][0] for name in names}
        out = {name: np.empty(n, dtype=raw_dtypes[name].newbyteorder("=")) for name in names}
        itemsize = self.record_dtype.itemsize
        sub_dtype = np.dtype(
            {
                "names": names,
                "formats": [self.record_dtype.fields[name][0] for name in names],
                "offsets": [self.record_dtype.fields[name][1] for name in names],
                "itemsize": itemsize,
            }
        )
        try:
            with open(self.path, "rb") as handle:
                for block_start in range(start, stop, BLOCK_ROWS):
                    count = min(BLOCK_ROWS, stop - block_start)
                    handle.seek(self.data_offset + block_start * itemsize)
                    block = np.fromfile(handle, dtype=sub_dtype, count=count)
                    if len(block) != count:
                        raise InputError(f"{self.path}: file is truncated (expected {self.n_rows} rows)")
                    lo = block_start - start
                    for name in names:
                        out[name][lo : lo + count] = block[name]
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        return self._scaled(out)

    def _read_spooled(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        from survey_deblend.catalog.gzfits import spooled_columns

        assert self.record_dtype is not None
        if stop <= start:
            return self._scaled({n: np.empty(0, self.record_dtype.fields[n][0].newbyteorder("=")) for n in names})
        spooled = spooled_columns(self.path, names, self.record_dtype, self.data_offset, self.n_rows)
        out = {name: np.array(spooled[name][start:stop]) for name in names}
        return self._scaled(out)

    def _scaled(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, scale, zero in self.scaling:
            if name in out:
                out[name] = _apply_scaling(out[name], scale, zero, self.columns[name])
        for name in self.logical:
            if name in out:
                out[name] = out[name] == ord("T")
        return out

    def _read_parquet(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        import pyarrow.parquet as pq

        if stop <= start:
            return {name: np.empty(0, dtype=self.columns[name]) for name in names}
        starts = self.row_group_starts
        first = int(np.searchsorted(starts, start, side="right")) - 1
        last = int(np.searchsorted(starts, stop, side="left"))
        groups = list(range(max(first, 0), min(max(last, first + 1), len(starts) - 1)))
        try:
            table = pq.ParquetFile(self.path).read_row_groups(groups, columns=names)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read Parquet ({exc})") from None
        offset = start - starts[groups[0]] if groups else 0
        table = table.slice(offset, stop - start)
        for name in names:  # nulls read as NaN in float columns; an integer column has no way to say it
            nulls = table.column(name).null_count
            if nulls and self.columns[name].kind != "f":
                raise InputError(f"{self.path}: column {name} has {nulls} null values in rows {start}-{stop - 1}")
        return {name: table.column(name).to_numpy().astype(self.columns[name], copy=False) for name in names}

    def to_dask(self, names: list[str], chunk_rows: int):
        """A Dask DataFrame over row ranges of this catalog with columns ``names`` (one partition per range)."""
        import dask.dataframe as dd

        ranges = self.chunk_ranges(chunk_rows)
        meta = self.read(names, 0, 0)
        if self.compressed and self.n_rows:  # one streaming pass now, in this process; the ranges then read the spool
            self.read(names, 0, 1)
        return dd.from_map(
            _RangeRead(self, tuple(names)),
            ranges,
            meta=meta,
            divisions=[r[0] for r in ranges] + [ranges[-1][1]],
            label="read-" + self.path.stem,
            enforce_metadata=False,
        )


def _apply_scaling(raw: np.ndarray, scale: float, zero: float, target: np.dtype) -> np.ndarray:
    """FITS TSCAL/TZERO: physical = raw * scale + zero; unsigned integers stored with an offset stay exact."""
    if target.kind == "u" and raw.dtype.kind == "i" and zero == 2.0 ** (8 * raw.dtype.itemsize - 1):
        return raw.view(raw.dtype.str.replace("i", "u")) ^ np.array(int(zero), dtype=f"u{raw.dtype.itemsize}")
    if target.kind == "i":
        return raw.astype(np.int64) + int(zero)
    return raw * scale + zero


@dataclass(frozen=True)
class _RangeRead:
    """Picklable callable that reads one row range; what ``dd.from_map`` maps over."""

    reader: CatalogReader
    names: tuple[str, ...]

    def __call__(self, row_range: tuple[int, int]) -> pd.DataFrame:
        start, stop = row_range
        return self.reader.read(list(self.names), start, stop)


def open_catalog(path: str | Path, role: str = "catalog") -> CatalogReader:
    """Open a FITS (table in HDU 1) or Parquet catalog, sniffing the format from its first bytes.

    ``role`` names the catalog in messages when the path alone would not say which input is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {role} file not found")
    with open(path, "rb") as handle:
        magic = handle.read(9)
    if magic.startswith(FITS_MAGIC):
        return _open_fits(path)
    if magic.startswith(PARQUET_MAGIC):
        return _open_parquet(path)
    if magic.startswith(GZIP_MAGIC):
        return _open_gzip_fits(path, role)
    raise InputError(f"{path}: not a FITS or Parquet file ({role})")


def _fits_layout(hdu, path: Path) -> tuple[int, int, np.dtype, tuple[tuple[str, float, float], ...], tuple[str, ...]]:
    """(rows, row bytes, big-endian record dtype, scaled columns, logical columns) of the binary table ``hdu``."""
    from astropy.io import fits

    if not isinstance(hdu, fits.BinTableHDU):
        raise InputError(f"{path}: HDU 1 is not a binary table")
    native = hdu.columns.dtype  # astropy reports native byte order; FITS tables are big-endian
    record_dtype = np.dtype(
        {
            "names": list(native.names),
            "formats": [native.fields[n][0].newbyteorder(">") for n in native.names],
            "offsets": [native.fields[n][1] for n in native.names],
            "itemsize": native.itemsize,
        }
    )
    scaling = tuple(
        (c.name, float(1 if c.bscale is None else c.bscale), float(0 if c.bzero is None else c.bzero))
        for c in hdu.columns
        if c.bscale not in (None, 1) or c.bzero not in (None, 0)
    )
    logical = tuple(c.name for c in hdu.columns if str(c.format).strip().upper() in ("L", "1L"))
    return int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"]), record_dtype, scaling, logical


def _open_fits(path: Path) -> CatalogReader:
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a truncated file is reported below, as an InputError
            with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
                if len(hdul) < 2:
                    raise InputError(f"{path}: HDU 1 is not a binary table (the file has no extension)")
                layout = _fits_layout(hdul[1], path)
                data_offset = int(hdul[1].fileinfo()["datLoc"])
    except InputError:
        raise
    except Exception as exc:  # astropy raises many kinds for corrupt headers
        raise InputError(f"{path}: cannot read as FITS ({type(exc).__name__}: {exc})") from None
    n_rows, row_bytes = layout[0], layout[1]
    if data_offset + n_rows * row_bytes > path.stat().st_size:
        raise InputError(f"{path}: file is truncated (header says {n_rows} rows)")
    return _fits_reader(path, *layout, data_offset)


def _open_gzip_fits(path: Path, role: str) -> CatalogReader:
    """A gzip-compressed FITS table: headers read now (a few kB decompressed), rows spooled on first read.

    Truncation shows only when the stream ends early, i.e. at the first read, as an InputError naming the file.
    """
    from survey_deblend.catalog.gzfits import read_table_header, table_hdu

    header, data_offset = read_table_header(path)
    if header.get("XTENSION", "").strip() != "BINTABLE":
        raise InputError(f"{path}: HDU 1 is not a binary table ({role})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layout = (int(header["NAXIS2"]), *_fits_layout(table_hdu(header), path)[1:])
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot read as FITS ({type(exc).__name__}: {exc})") from None
    return _fits_reader(path, *layout, data_offset, compressed=True)


def _fits_reader(
    path: Path,
    n_rows: int,
    row_bytes: int,
    record_dtype: np.dtype,
    scaling: tuple[tuple[str, float, float], ...],
    logical: tuple[str, ...],
    data_offset: int,
    compressed: bool = False,
) -> CatalogReader:
    if record_dtype.itemsize != row_bytes:
        raise InputError(f"{path}: unsupported FITS table layout (row size {row_bytes} bytes)")
    columns = {}
    for name in record_dtype.names:
        dtype = record_dtype.fields[name][0]
        scaled = next((s for s in scaling if s[0] == name), None)
        if scaled is not None and dtype.kind in "iu":
            # TZERO-offset unsigned integers stay integers; other scalings become floats
            is_int = float(scaled[1]) == 1.0 and float(scaled[2]).is_integer()
            dtype = np.dtype("u8") if is_int and scaled[2] > 0 else np.dtype("i8") if is_int else np.dtype("f8")
        columns[name] = np.dtype(bool) if name in logical else dtype
    return CatalogReader(
        path=path,
        format="fits",
        n_rows=n_rows,
        columns=columns,
        data_offset=data_offset,
        record_dtype=record_dtype,
        scaling=scaling,
        compressed=compressed,
        logical=logical,
    )


def _open_parquet(path: Path) -> CatalogReader:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot read as Parquet ({exc})") from None
    columns = {}
    for field in schema:
        try:
            columns[field.name] = np.dtype(field.type.to_pandas_dtype())
        except (NotImplementedError, TypeError):
            columns[field.name] = np.dtype("O")
    starts = [0]
    for i in range(meta.num_row_groups):
        starts.append(starts[-1] + meta.row_group(i).num_rows)
    return CatalogReader(
        path=path, format="parquet", n_rows=int(meta.num_rows), columns=columns, row_group_starts=tuple(starts)
    )

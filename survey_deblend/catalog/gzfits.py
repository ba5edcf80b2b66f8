"""Gzip-compressed FITS tables (the DES release's ``.fits.gz``), streamed once into a spool of needed columns.

A gzip stream has no random access: reaching row N means decompressing every byte before it, so reading each
row range of a Dask DataFrame from the ``.gz`` would decompress the front of the file once per range
(quadratic in the number of ranges). Instead, the first read of a set of columns decompresses the file once,
front to back, through ``gzip.open`` in blocks of ``BLOCK_ROWS`` rows (one reused buffer of
``BLOCK_ROWS x row bytes``, ~17 MB for im3shape's 132-byte row), and keeps only those columns, in native byte order,
in a spool: one raw file per column in a temporary folder. Row ranges are then memory-mapped slices of
the spool, as cheap as an uncompressed file. Memory stays one block whatever the file size; the disk holds the
needed columns only (the ten shear columns are 64 B a row against im3shape's 132 B row); the spool is
reused by later reads in the same process and deleted when the process exits. ``SURVEY_DEBLEND_SPOOL_DIR``
chooses where it goes (default: the system temporary folder).
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import tempfile
import threading
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from survey_deblend.errors import InputError

BLOCK_ROWS = 131_072  # rows decompressed per step: bounds the buffer of the streaming pass
FITS_BLOCK = 2880
SPOOL_DIR_ENV = "SURVEY_DEBLEND_SPOOL_DIR"
_STREAM_ERRORS = (EOFError, OSError, zlib.error, ValueError)  # gzip.BadGzipFile is an OSError


def read_table_header(path: Path):
    """The header of HDU 1 of a gzip-compressed FITS file and the byte offset of its data in the stream.

    Reads only the headers (and skips the primary data, if any): a few kB of decompression.
    """
    from astropy.io import fits

    try:
        with gzip.open(path, "rb") as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy warns (through its logger) about garbage before it fails
            primary = fits.Header.fromfile(stream)
            stream.seek(stream.tell() + _padded(_data_bytes(primary)))
            try:
                table = fits.Header.fromfile(stream)
            except EOFError:
                raise InputError(f"{path}: HDU 1 is not a binary table (the file has no extension)") from None
            return table, stream.tell()
    except InputError:
        raise
    except _STREAM_ERRORS as exc:
        raise InputError(f"{path}: cannot read as gzip-compressed FITS ({type(exc).__name__}: {exc})") from None


def table_hdu(header):
    """A data-less BinTableHDU of ``header`` (NAXIS2 set to 0), to learn its column layout through astropy."""
    from astropy.io import fits

    header = header.copy()
    header["NAXIS2"] = 0
    header["PCOUNT"] = 0
    blob = fits.PrimaryHDU().header.tostring() + header.tostring()
    hdul = fits.open(io.BytesIO(blob.encode("ascii")))
    return hdul[1]


def _data_bytes(header) -> int:
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    size = abs(int(header["BITPIX"])) // 8
    for axis in range(1, naxis + 1):
        size *= int(header[f"NAXIS{axis}"])
    return size * int(header.get("GCOUNT", 1)) + int(header.get("PCOUNT", 0))


def _padded(n: int) -> int:
    return -(-n // FITS_BLOCK) * FITS_BLOCK


@dataclass
class _Spool:
    """The spooled columns of one compressed file in this process: column -> (raw file, native dtype)."""

    folder: tempfile.TemporaryDirectory
    files: dict[str, tuple[Path, np.dtype]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_SPOOLS: dict[tuple[str, int, int], _Spool] = {}
_SPOOLS_LOCK = threading.Lock()


def _spool_for(path: Path) -> _Spool:
    """This process's spool of ``path`` (keyed by the file's identity, so an edited file is spooled anew)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _SPOOLS_LOCK:
        if key not in _SPOOLS:
            parent = os.environ.get(SPOOL_DIR_ENV) or None
            try:
                folder = tempfile.TemporaryDirectory(prefix="survey-deblend-spool-", dir=parent)
            except OSError as exc:
                raise InputError(
                    f"{parent or tempfile.gettempdir()}: cannot make a spool folder for {path} "
                    f"({exc.strerror or exc}; set {SPOOL_DIR_ENV})"
                ) from None
            _SPOOLS[key] = _Spool(folder)
        return _SPOOLS[key]


def spooled_columns(
    path: Path, names: list[str], record_dtype: np.dtype, data_offset: int, n_rows: int
) -> dict[str, np.ndarray]:
    """Read-only memory maps of columns ``names`` (native byte order, raw FITS values), spooling any missing.

    One pass decompresses the file for every column not spooled yet; concurrent callers wait for it.
    """
    spool = _spool_for(path)
    with spool.lock:
        todo = [name for name in dict.fromkeys(names) if name not in spool.files]
        if todo:
            folder = Path(spool.folder.name)
            targets = {name: folder / f"column-{len(spool.files) + i}.bin" for i, name in enumerate(todo)}
            _stream_columns(path, targets, record_dtype, data_offset, n_rows)
            spool.files.update({n: (targets[n], record_dtype.fields[n][0].newbyteorder("=")) for n in todo})
        files = {name: spool.files[name] for name in names}
    return {
        name: np.memmap(file, dtype=dtype, mode="r", shape=(n_rows,)) if n_rows else np.empty(0, dtype)
        for name, (file, dtype) in files.items()
    }


def _stream_columns(
    path: Path, targets: dict[str, Path], record_dtype: np.dtype, data_offset: int, n_rows: int
) -> None:
    """Decompress ``path`` once, block by block, appending each column of ``targets`` to its raw file.

    Plain writes (not a writable memory map), so a full disk is an OSError here rather than a SIGBUS later.
    """
    names = list(targets)
    itemsize = record_dtype.itemsize
    sub_dtype = np.dtype(
        {
            "names": names,
            "formats": [record_dtype.fields[n][0] for n in names],
            "offsets": [record_dtype.fields[n][1] for n in names],
            "itemsize": itemsize,
        }
    )
    native = {n: record_dtype.fields[n][0].newbyteorder("=") for n in names}
    block_rows = max(1, min(BLOCK_ROWS, n_rows))
    buffer = bytearray(block_rows * itemsize)
    handles = {}
    try:
        try:
            handles = {name: open(file, "wb") for name, file in targets.items()}  # noqa: SIM115 (closed below)
            with gzip.open(path, "rb") as stream:
                stream.seek(data_offset)
                for start in range(0, n_rows, block_rows):
                    count = min(block_rows, n_rows - start)
                    view = memoryview(buffer)[: count * itemsize]
                    got = _read_into(stream, view)
                    if got != len(view):
                        raise InputError(
                            f"{path}: file is truncated (header says {n_rows} rows, the data ends "
                            f"within row {start + got // itemsize})"
                        )
                    block = np.frombuffer(view, dtype=sub_dtype, count=count)
                    for name in names:
                        handles[name].write(block[name].astype(native[name]).data)
                while stream.read(1 << 16):  # the rest (padding): gzip checks the stream's length and CRC at its end
                    pass
        finally:
            for handle in handles.values():
                handle.close()
    except InputError:
        raise
    except _STREAM_ERRORS as exc:
        if isinstance(exc, OSError) and exc.filename and Path(exc.filename) in targets.values() or getattr(
            exc, "errno", None
        ) in (errno.ENOSPC, errno.EDQUOT):
            folder = next(iter(targets.values())).parent
            raise InputError(f"{folder}: cannot spool {path} ({exc.strerror or exc}; set {SPOOL_DIR_ENV})") from None
        raise InputError(f"{path}: compressed file is corrupt or truncated ({type(exc).__name__}: {exc})") from None


def _read_into(stream, view: memoryview) -> int:
    """Fill ``view`` from ``stream`` (a short read only at the end of the stream); bytes read."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got

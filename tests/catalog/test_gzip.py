"""``.fits.gz`` catalogs (the DES release's format): streamed once into a spool of needed columns, then row ranges."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table

from survey_deblend.catalog import gzfits, select_galaxies
from survey_deblend.catalog.cuts import SHEAR_COLUMNS
from survey_deblend.catalog.readers import open_catalog
from survey_deblend.config.catalog import CatalogConfig
from survey_deblend.errors import InputError


def _gzip(src, dst, level: int = 6, cut: int | None = None):
    data = src.read_bytes() if hasattr(src, "read_bytes") else src
    blob = gzip.compress(data, level)
    dst.write_bytes(blob if cut is None else blob[:cut])
    return dst


@pytest.fixture(scope="module")
def gz_catalogs(random_catalogs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gz")
    return {name: _gzip(getattr(random_catalogs, name), folder / f"{name}.fits.gz") for name in ("im3shape", "gold")}


def test_gz_rows_equal_the_plain_file_in_any_range(random_catalogs, gz_catalogs):
    plain, packed = open_catalog(random_catalogs.im3shape), open_catalog(gz_catalogs["im3shape"])
    assert packed.compressed and not plain.compressed
    assert packed.n_rows == plain.n_rows == 3000 and packed.columns == plain.columns
    for start, stop in [(0, 3000), (1234, 2500), (2999, 3000), (10, 10)]:
        pd.testing.assert_frame_equal(packed.read(SHEAR_COLUMNS, start, stop), plain.read(SHEAR_COLUMNS, start, stop))
    ddf = packed.to_dask(["COADD_OBJECTS_ID", "SNR_W"], chunk_rows=700)
    assert ddf.npartitions == 5
    pd.testing.assert_frame_equal(ddf.compute(scheduler="sync"), plain.read(["COADD_OBJECTS_ID", "SNR_W"]))


def test_spool_holds_only_the_needed_columns_and_one_block_of_memory(random_catalogs, tmp_path, monkeypatch):
    monkeypatch.setenv(gzfits.SPOOL_DIR_ENV, str(tmp_path / "spool"))
    (tmp_path / "spool").mkdir()
    monkeypatch.setattr(gzfits, "BLOCK_ROWS", 256)  # many blocks: the stream is read in bounded steps
    path = _gzip(random_catalogs.gold, tmp_path / "gold.fits.gz")
    reader = open_catalog(path)
    ra = reader.read(["RA", "COADD_OBJECTS_ID"], 100, 200)
    np.testing.assert_array_equal(ra["RA"].to_numpy(), open_catalog(random_catalogs.gold).read(["RA"], 100, 200)["RA"])
    spooled = sorted(p for p in (tmp_path / "spool").rglob("*.bin"))
    # two columns of 8 bytes a row, nothing else of the 52-byte gold row
    assert [p.stat().st_size for p in spooled] == [8 * reader.n_rows] * 2
    reader.read(["RA"], 0, 5)  # reused: no second pass, no new file
    assert len(list((tmp_path / "spool").rglob("*.bin"))) == 2


def test_selection_from_gz_equals_the_plain_selection(random_catalogs, gz_catalogs):
    plain = select_galaxies(CatalogConfig(shear=random_catalogs.im3shape, gold=random_catalogs.gold))
    packed = select_galaxies(CatalogConfig(shear=gz_catalogs["im3shape"], gold=gz_catalogs["gold"], chunk_rows=700))
    pd.testing.assert_frame_equal(packed.table, plain.table)
    assert [rows for _, rows in packed.cut_flow.steps] == [rows for _, rows in plain.cut_flow.steps]


def test_scaled_columns_in_gz(tmp_path):
    values = np.array([0, 1, 40000, 65535], dtype=np.uint16)
    plain = tmp_path / "u.fits"
    Table({"FLAGS": values, "X": np.arange(4.0)}).write(plain)
    reader = open_catalog(_gzip(plain, tmp_path / "u.fits.gz"))
    np.testing.assert_array_equal(reader.read(["FLAGS"])["FLAGS"].to_numpy(), values)


def test_primary_hdu_with_data_is_skipped(tmp_path):
    path = tmp_path / "p.fits"
    table = fits.BinTableHDU(Table({"COADD_OBJECTS_ID": np.arange(7, dtype=np.int64)}))
    fits.HDUList([fits.PrimaryHDU(np.ones((3, 5), np.float32)), table]).writeto(path)
    reader = open_catalog(_gzip(path, tmp_path / "p.fits.gz"))
    assert reader.read(["COADD_OBJECTS_ID"])["COADD_OBJECTS_ID"].tolist() == list(range(7))


def test_truncated_gz_is_named_at_first_read(random_catalogs, tmp_path):
    path = _gzip(random_catalogs.im3shape, tmp_path / "cut.fits.gz", cut=60_000)
    reader = open_catalog(path)  # the headers are intact
    with pytest.raises(InputError, match=r"cut\.fits\.gz: (compressed file is corrupt or truncated|file is truncated)"):
        reader.read(["E_1"], 0, 10)


def test_short_table_in_a_complete_gz_is_named(random_catalogs, tmp_path):
    raw = random_catalogs.im3shape.read_bytes()
    path = _gzip(raw[:50_000], tmp_path / "short.fits.gz")  # a valid gzip of a cut FITS file
    with pytest.raises(InputError, match=r"short\.fits\.gz: file is truncated \(header says 3000 rows"):
        open_catalog(path).read(["E_1"])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "cannot read as gzip-compressed FITS"),
        (b"not a fits file at all" * 200, "cannot read as gzip-compressed FITS"),
    ],
)
def test_gz_of_something_else_is_named(tmp_path, payload, message):
    path = _gzip(payload, tmp_path / "x.fits.gz")
    with pytest.raises(InputError, match=rf"x\.fits\.gz: {message}"):
        open_catalog(path)


def test_gz_without_a_table_is_named(tmp_path):
    image = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4)))]).writeto(image)
    with pytest.raises(InputError, match=r"image\.fits\.gz: HDU 1 is not a binary table"):
        open_catalog(_gzip(image, tmp_path / "image.fits.gz"))
    lone = tmp_path / "lone.fits"
    fits.PrimaryHDU().writeto(lone)
    with pytest.raises(InputError, match=r"lone\.fits\.gz: HDU 1 is not a binary table"):
        open_catalog(_gzip(lone, tmp_path / "lone.fits.gz"))


def test_an_edited_file_is_spooled_again(tmp_path):
    path = tmp_path / "t.fits"
    Table({"A": np.arange(5)}).write(path)
    gz = _gzip(path, tmp_path / "t.fits.gz")
    assert open_catalog(gz).read(["A"])["A"].tolist() == [0, 1, 2, 3, 4]
    Table({"A": np.arange(5) * 10}).write(path, overwrite=True)
    _gzip(path, gz)
    os.utime(gz, ns=(1, 1))  # another identity even within the same mtime tick
    assert open_catalog(gz).read(["A"])["A"].tolist() == [0, 10, 20, 30, 40]


def test_the_streaming_pass_holds_one_block_not_the_file(tmp_path, monkeypatch):
    import tracemalloc

    from survey_deblend.catalog.synthetic import write_catalogs

    monkeypatch.setattr(gzfits, "BLOCK_ROWS", 500)
    paths = write_catalogs(tmp_path, n=20_000, seed=2)
    packed = _gzip(paths.im3shape, tmp_path / "im3shape.fits.gz", level=1)
    reader = open_catalog(packed)
    table_bytes = reader.n_rows * reader.record_dtype.itemsize  # 2.6 MB
    tracemalloc.start()
    try:
        spooled = gzfits.spooled_columns(packed, SHEAR_COLUMNS, reader.record_dtype, reader.data_offset, reader.n_rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 500 * reader.record_dtype.itemsize < table_bytes / 3, peak  # a few blocks, not the table
    np.testing.assert_array_equal(spooled["E_1"], open_catalog(paths.im3shape).read(["E_1"])["E_1"].to_numpy())

"""Catalog readers: FITS and Parquet row ranges, byte order, column and dtype checks, bad files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table

from survey_deblend.catalog.readers import open_catalog
from survey_deblend.catalog.schema import IM3SHAPE_COLUMNS
from survey_deblend.errors import InputError

NAMES = ["COADD_OBJECTS_ID", "E_1", "SNR_W", "ERROR_FLAG"]


def test_fits_ranges_match_astropy_and_are_native(random_catalogs):
    reader = open_catalog(random_catalogs.im3shape)
    table = Table.read(random_catalogs.im3shape, hdu=1)
    assert reader.format == "fits" and reader.n_rows == len(table) == 3000
    part = reader.read(NAMES, 1234, 2500)
    assert list(part.index) == list(range(1234, 2500))
    for name in NAMES:
        assert part[name].dtype.isnative
        np.testing.assert_array_equal(part[name].to_numpy(), np.asarray(table[name][1234:2500]))
    assert part["COADD_OBJECTS_ID"].dtype == np.int64 and part["SNR_W"].dtype == np.float32


def test_parquet_reads_the_same_rows(random_catalogs, random_catalogs_parquet):
    fits_reader = open_catalog(random_catalogs.im3shape)
    pq_reader = open_catalog(random_catalogs_parquet.im3shape)
    assert pq_reader.format == "parquet" and pq_reader.n_rows == fits_reader.n_rows
    # a range inside one row group and the whole file
    for start, stop in [(17, 1901), (0, 3000)]:
        pd.testing.assert_frame_equal(pq_reader.read(NAMES, start, stop), fits_reader.read(NAMES, start, stop))


def test_parquet_chunks_follow_row_groups(tmp_path):
    frame = pd.DataFrame({"COADD_OBJECTS_ID": np.arange(1000, dtype=np.int64), "RA": np.linspace(0, 1, 1000)})
    path = tmp_path / "p.parquet"
    frame.to_parquet(path, row_group_size=100)
    reader = open_catalog(path)
    ranges = reader.chunk_ranges(250)
    assert ranges == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    pd.testing.assert_frame_equal(pd.concat([reader.read(["RA"], a, b) for a, b in ranges]), frame[["RA"]])


def test_to_dask_streams_row_ranges(random_catalogs):
    reader = open_catalog(random_catalogs.gold)
    ddf = reader.to_dask(["COADD_OBJECTS_ID", "RA"], chunk_rows=700)
    assert ddf.npartitions == -(-reader.n_rows // 700)
    pd.testing.assert_frame_equal(ddf.compute(scheduler="sync"), reader.read(["COADD_OBJECTS_ID", "RA"]))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nope\.fits: gold catalog file not found"):
        open_catalog(tmp_path / "nope.fits", "gold catalog")


def test_not_fits_is_named(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("COADD_OBJECTS_ID,RA,DEC\n1,2,3\n")
    with pytest.raises(InputError, match=r"notes\.fits: not a FITS or Parquet file"):
        open_catalog(path)


def test_image_in_hdu1_is_refused(tmp_path):
    path = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4)))]).writeto(path)
    with pytest.raises(InputError, match=r"image\.fits: HDU 1 is not a binary table"):
        open_catalog(path)


def test_truncated_fits_is_refused(random_catalogs, tmp_path):
    path = tmp_path / "cut.fits"
    path.write_bytes(random_catalogs.im3shape.read_bytes()[:100_000])
    with pytest.raises(InputError, match=r"cut\.fits: file is truncated"):
        open_catalog(path)


def test_missing_and_wrongly_typed_columns_are_named(tmp_path):
    path = tmp_path / "shear.fits"
    Table({"COADD_OBJECTS_ID": np.arange(3, dtype="f8"), "E_1": np.zeros(3)}).write(path)
    reader = open_catalog(path)
    with pytest.raises(InputError, match=r"shear\.fits: column COADD_OBJECTS_ID has dtype .*float64.*integer"):
        reader.check_columns({"COADD_OBJECTS_ID": "i8"})
    with pytest.raises(InputError, match=r"shear\.fits: missing column SNR_W"):
        reader.check_columns({c: IM3SHAPE_COLUMNS[c] for c in ["E_1", "SNR_W"]})
    # a float column stored as float32 is accepted: same kind, other width
    reader.check_columns({"E_1": "f4"})


def test_scaled_integer_column_is_read_exactly(tmp_path):
    path = tmp_path / "u.fits"
    values = np.array([0, 1, 40000, 65535], dtype=np.uint16)
    Table({"FLAGS": values}).write(path)  # astropy stores uint16 as int16 with TZERO = 32768
    reader = open_catalog(path)
    assert reader.columns["FLAGS"].kind == "u"
    np.testing.assert_array_equal(reader.read(["FLAGS"])["FLAGS"].to_numpy(), values)


def test_parquet_nulls(tmp_path):
    path = tmp_path / "gold.parquet"
    pd.DataFrame({"COADD_OBJECTS_ID": pd.array([1, None, 3], dtype="Int64"), "RA": [10.0, None, 12.0]}).to_parquet(path)
    reader = open_catalog(path)
    assert len(reader.read(["RA"], 0, 0)) == 0
    ra = reader.read(["RA"])["RA"].to_numpy()  # a null float is NaN, which the position checks then catch
    assert ra.dtype == np.float64 and np.isnan(ra[1]) and ra[2] == 12.0
    with pytest.raises(InputError, match=r"gold\.parquet: column COADD_OBJECTS_ID has 1 null values in rows 0-2"):
        reader.read(["COADD_OBJECTS_ID", "RA"])

"""The synthetic catalogs follow the SVA1 schema exactly and contain the problem rows the real files have."""

from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.table import Table

from survey_deblend.catalog.schema import (
    ERROR_FLAG_UNMEASURED,
    GOLD_COLUMNS,
    IM3SHAPE_COLUMNS,
    INFO_FLAG_UNMEASURED,
    UNMEASURED,
    WLINFO_COLUMNS,
)
from survey_deblend.catalog.synthetic import catalog_frames, write_catalogs


def test_fits_files_have_the_exact_schema(random_catalogs):
    for path, schema in [
        (random_catalogs.im3shape, IM3SHAPE_COLUMNS),
        (random_catalogs.gold, GOLD_COLUMNS),
        (random_catalogs.wlinfo, WLINFO_COLUMNS),
    ]:
        table = Table.read(path, hdu=1)
        assert table.colnames == list(schema)
        for name, dtype in schema.items():
            assert table[name].dtype.newbyteorder("=") == np.dtype(dtype), (path.name, name)


def test_problem_rows_are_there_and_well_formed(random_catalogs):
    im3 = Table.read(random_catalogs.im3shape, hdu=1).to_pandas()
    gold = Table.read(random_catalogs.gold, hdu=1).to_pandas()
    wlinfo = Table.read(random_catalogs.wlinfo, hdu=1).to_pandas()
    unmeasured = im3["ERROR_FLAG"] == ERROR_FLAG_UNMEASURED
    assert 0.04 < unmeasured.mean() < 0.12
    assert (im3.loc[unmeasured, "INFO_FLAG"] == INFO_FLAG_UNMEASURED).all()
    floats = [c for c, t in IM3SHAPE_COLUMNS.items() if t.startswith("f")]
    assert (im3.loc[unmeasured, floats] == UNMEASURED).all().all()
    measured = im3[~unmeasured]
    assert (measured["ERROR_FLAG"] != 0).any() and (measured["INFO_FLAG"] != 0).any()
    assert (measured["SNR_W"] < 20).mean() > 0.3 and (measured["SNR_W"] > 20).mean() > 0.2
    assert np.isnan(measured["E_2"]).any() and (np.hypot(measured["E_1"], measured["E_2"]) >= 1).any()
    # row-matched wlinfo, gold with missing galaxies and extra stars, everything in SPT-E
    np.testing.assert_array_equal(wlinfo["COADD_OBJECTS_ID"], im3["COADD_OBJECTS_ID"])
    in_gold = im3["COADD_OBJECTS_ID"].isin(gold["COADD_OBJECTS_ID"])
    assert 0 < (~in_gold).sum() < 0.05 * len(im3)
    assert (gold["MODEST_CLASS"] == 2).sum() > 0.05 * len(im3)
    assert gold["COADD_OBJECTS_ID"].is_unique and gold["COADD_OBJECTS_ID"].is_monotonic_increasing
    for frame in (gold, wlinfo):
        assert frame["RA"].between(50, 100).all() and (frame["DEC"] < -35).all()


def test_given_objects_are_written_exactly(tmp_path):
    objects = pd.DataFrame(
        {
            "coadd_objects_id": [11, 12, 13],
            "ra": [60.0, 60.1, 60.2],
            "dec": [-45.0, -45.1, -45.2],
            "e1": [0.1, -0.2, 0.3],
            "e2": [0.0, 0.05, -0.1],
            "snr_w": [30.0, 12.0, 50.0],
            "mag_i": [21.0, 23.5, 20.0],
            "measured": [True, True, False],
            "z": [0.4, 0.8, 1.1],
        }
    )
    paths = write_catalogs(tmp_path, objects, fmt="parquet")
    im3, gold = pd.read_parquet(paths.im3shape), pd.read_parquet(paths.gold)
    wlinfo = pd.read_parquet(paths.wlinfo)
    assert list(gold["COADD_OBJECTS_ID"]) == [11, 12, 13] and (gold["MODEST_CLASS"] == 1).all()
    assert list(im3["E_1"]) == [0.1, -0.2, UNMEASURED]
    assert list(im3["ERROR_FLAG"]) == [0, 0, ERROR_FLAG_UNMEASURED]
    np.testing.assert_allclose(wlinfo["MEAN_PHOTOZ"], [0.4, 0.8, 1.1], rtol=1e-6)
    np.testing.assert_allclose(gold["MAG_AUTO_I"], [21.0, 23.5, 20.0], rtol=1e-6)
    assert im3.dtypes["SNR_W"] == np.float32 and gold.dtypes["MODEST_CLASS"] == np.int16


def test_same_seed_same_catalogs():
    a, b = catalog_frames(n=500, seed=3), catalog_frames(n=500, seed=3)
    pd.testing.assert_frame_equal(a.im3shape, b.im3shape)
    pd.testing.assert_frame_equal(a.gold, b.gold)
    assert not catalog_frames(n=500, seed=4).im3shape.equals(a.im3shape)

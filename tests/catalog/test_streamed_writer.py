"""Catalogs written chunk by chunk (``FitsTableWriter``, ``write_catalogs_streamed``): what the benchmark's 100 M
rows are written with, never held in memory."""

from __future__ import annotations

import numpy as np

from survey_deblend.catalog import open_catalog, select_galaxies
from survey_deblend.catalog.schema import GOLD_COLUMNS, IM3SHAPE_COLUMNS, FitsTableWriter, write_fits_table
from survey_deblend.catalog.synthetic import catalog_frames, write_catalogs_streamed
from survey_deblend.config.catalog import CatalogConfig


def test_chunked_fits_file_is_byte_identical_to_the_one_shot_writer(tmp_path):
    frames = catalog_frames(n=1000, seed=2)
    for frame, columns in ((frames.im3shape, IM3SHAPE_COLUMNS), (frames.gold, GOLD_COLUMNS)):
        whole = write_fits_table(tmp_path / "whole.fits", frame, columns)
        with FitsTableWriter(tmp_path / "chunked.fits", columns) as writer:
            for start in range(0, len(frame), 333):
                writer.write(frame.iloc[start : start + 333])
        assert (tmp_path / "chunked.fits").read_bytes() == whole.read_bytes()


def test_streamed_catalogs_have_increasing_ids_missing_and_extra_gold_rows(tmp_path):
    paths = write_catalogs_streamed(tmp_path, n=25_000, seed=1, chunk_rows=7_000)
    shear, gold = open_catalog(paths["im3shape"]), open_catalog(paths["gold"])
    assert shear.n_rows == 25_000 and 25_000 < gold.n_rows < 25_000 * 1.1
    ids = shear.read(["COADD_OBJECTS_ID"], 0, shear.n_rows)["COADD_OBJECTS_ID"].to_numpy()
    assert np.all(np.diff(ids) > 0)  # IDs go on increasing across chunks
    flow = select_galaxies(CatalogConfig(shear=paths["im3shape"], gold=paths["gold"])).cut_flow.to_dict()
    assert 0 < flow["unmatched"] < 0.05 * flow["steps"][-2]["rows"]  # ~2 % of the galaxies are not in gold
    assert flow["gold_duplicate_ids"] == 0 and flow["rows_out"] > 5_000

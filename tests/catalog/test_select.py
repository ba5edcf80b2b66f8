"""select_galaxies: every cut, the ID join (gold and wlinfo), duplicates, bad positions, empty selections."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from survey_deblend.catalog import EmptySelectionError, select_galaxies
from survey_deblend.catalog.schema import UNMEASURED
from survey_deblend.catalog.synthetic import write_frames
from survey_deblend.config.catalog import CatalogConfig, CutsConfig
from survey_deblend.errors import ConfigError, InputError
from survey_deblend.schema import SELECTION_DTYPES

DEFAULT_STEPS = [
    "rows in",
    "E_1/E_2 measured (finite, not -9999)",
    "|e| < 1",
    "ERROR_FLAG == 0",
    "INFO_FLAG == 0",
    "SNR_W > 20",
    "id match in gold.fits",
]


def _config(paths, **kw) -> CatalogConfig:
    kw.setdefault("gold", paths.gold)
    return CatalogConfig(shear=paths.im3shape, **kw)


def _ids(frames, rows):
    return set(frames.im3shape["COADD_OBJECTS_ID"].iloc[rows])


@pytest.fixture
def one_failure_per_cut(clean_frames, tmp_path):
    """12 galaxies; rows 0..7 each fail exactly one thing, rows 8..11 pass everything."""
    im3 = clean_frames.im3shape
    im3.loc[0, ["E_1", "E_2", "NBC_M", "W", "SNR_W"]] = UNMEASURED  # unmeasured, flags still clean
    im3.loc[1, "E_2"] = np.nan
    im3.loc[2, ["E_1", "E_2"]] = [0.9, 0.5]  # |e| = 1.03
    im3.loc[3, "ERROR_FLAG"] = 4
    im3.loc[4, "INFO_FLAG"] = 2**7
    im3.loc[5, "SNR_W"] = 20.0  # the cut is strict: SNR_W > 20
    gold = clean_frames.gold
    gold.loc[6, "MODEST_CLASS"] = 2  # only cut with gold_quality
    gold.loc[7, "FLAGS_I"] = 4  # only cut with gold_quality
    missing_id = im3.loc[8, "COADD_OBJECTS_ID"]
    clean_frames.gold = gold[gold["COADD_OBJECTS_ID"] != missing_id].reset_index(drop=True)
    return clean_frames, write_frames(tmp_path, clean_frames)


def test_each_cut_removes_its_row_and_counts(one_failure_per_cut):
    frames, paths = one_failure_per_cut
    selection = select_galaxies(_config(paths))
    flow = selection.cut_flow
    assert flow.steps == list(zip(DEFAULT_STEPS, [12, 10, 9, 8, 7, 6, 5], strict=True))
    assert flow.unmatched == 1 and flow.gold_duplicate_ids == 0
    assert set(selection.table["coadd_objects_id"]) == _ids(frames, [6, 7, 9, 10, 11])


def test_gold_quality_cuts_are_optional(one_failure_per_cut):
    frames, paths = one_failure_per_cut
    selection = select_galaxies(_config(paths, cuts=CutsConfig(gold_quality=True)))
    assert selection.cut_flow.steps[-1] == ("gold MODEST_CLASS == 1 and FLAGS_I <= 3", 3)
    assert set(selection.table["coadd_objects_id"]) == _ids(frames, [9, 10, 11])
    relaxed = select_galaxies(_config(paths, cuts=CutsConfig(gold_quality=True, flags_i_max=4)))
    assert set(relaxed.table["coadd_objects_id"]) == _ids(frames, [7, 9, 10, 11])


@pytest.mark.parametrize(
    ("cuts", "kept_back", "absent_step"),
    [
        (CutsConfig(error_flag_zero=False), 3, "ERROR_FLAG == 0"),
        (CutsConfig(info_flag_zero=False), 4, "INFO_FLAG == 0"),
        (CutsConfig(snr_w_min=19.5), 5, None),
        (CutsConfig(e_max=1.1), 2, None),
    ],
)
def test_each_cut_is_configurable(one_failure_per_cut, cuts, kept_back, absent_step):
    frames, paths = one_failure_per_cut
    selection = select_galaxies(_config(paths, cuts=cuts))
    assert set(selection.table["coadd_objects_id"]) == _ids(frames, [6, 7, 9, 10, 11, kept_back])
    assert absent_step not in [name for name, _ in selection.cut_flow.steps]


def test_output_columns_values_and_dtypes(clean_frames, tmp_path):
    paths = write_frames(tmp_path, clean_frames)
    table = select_galaxies(_config(paths)).table
    assert {c: str(t) for c, t in table.dtypes.items()} == SELECTION_DTYPES
    im3, gold = clean_frames.im3shape, clean_frames.gold
    np.testing.assert_array_equal(table["coadd_objects_id"], im3["COADD_OBJECTS_ID"])
    np.testing.assert_array_equal(table["e1_im3shape"], im3["E_1"])
    np.testing.assert_array_equal(table["nbc_c2"], im3["NBC_C2"])
    np.testing.assert_allclose(table["snr_w"], im3["SNR_W"].astype(np.float32), rtol=0)
    np.testing.assert_array_equal(table["psf_e1"], im3["MEAN_PSF_E1"])  # im3shape's MEAN_PSF_* carried through
    np.testing.assert_array_equal(table["psf_e2"], im3["MEAN_PSF_E2"])
    np.testing.assert_allclose(table["psf_fwhm"], im3["MEAN_PSF_FWHM"].astype(np.float32), rtol=0)
    np.testing.assert_array_equal(table["ra"], gold["RA"])
    np.testing.assert_array_equal(table["dec"], gold["DEC"])


def test_id_join_with_wlinfo_only(clean_frames, tmp_path):
    clean_frames.wlinfo["RA"] += 0.001  # distinguishable from gold
    paths = write_frames(tmp_path, clean_frames)
    selection = select_galaxies(CatalogConfig(shear=paths.im3shape, wlinfo=paths.wlinfo))
    np.testing.assert_array_equal(selection.table["ra"], clean_frames.wlinfo["RA"])
    assert selection.cut_flow.steps[-1] == ("id match in wlinfo.fits", 12)


def test_duplicate_gold_ids_are_counted_never_doubled(clean_frames, tmp_path):
    gold = clean_frames.gold
    repeat = gold.iloc[[3, 3, 5]].copy()
    repeat["RA"] += 1.0  # later copies differ: the first must win
    clean_frames.gold = pd.concat([gold, repeat], ignore_index=True)
    paths = write_frames(tmp_path, clean_frames)
    for chunk_rows in (5, 1000):  # duplicates in the same chunk and in later chunks
        selection = select_galaxies(_config(paths, chunk_rows=chunk_rows))
        assert len(selection.table) == 12 and selection.table["coadd_objects_id"].is_unique
        assert selection.cut_flow.gold_duplicate_ids == 3
        np.testing.assert_array_equal(selection.table["ra"], gold["RA"])
        assert re.search(r"^duplicate gold IDs \(ignored\) +3$", selection.cut_flow.format(), re.M)


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_nan_gold_position_is_an_input_error(clean_frames, tmp_path, scheduler):
    clean_frames.gold.loc[4, "DEC"] = np.nan
    paths = write_frames(tmp_path, clean_frames)
    with pytest.raises(InputError, match=r"gold\.fits: 1 rows with NaN or out-of-range RA/DEC \(first at row 4\)"):
        select_galaxies(_config(paths, chunk_rows=3, scheduler=scheduler))


def test_every_row_cut_raises_with_the_cut_flow(clean_frames, tmp_path):
    paths = write_frames(tmp_path, clean_frames)
    with pytest.raises(EmptySelectionError, match="every row was cut") as info:
        select_galaxies(_config(paths, cuts=CutsConfig(snr_w_min=1000.0)))
    assert info.value.exit_code == 1
    assert info.value.cut_flow.steps[-1] == ("SNR_W > 1000", 0)
    # nothing matched at all: the match step is the one that empties it
    clean_frames.gold["COADD_OBJECTS_ID"] += 1
    paths = write_frames(tmp_path / "b", clean_frames)
    with pytest.raises(EmptySelectionError) as info:
        select_galaxies(_config(paths))
    assert info.value.cut_flow.steps[-1] == ("id match in gold.fits", 0) and info.value.cut_flow.unmatched == 12


def test_streaming_chunks_give_identical_results(random_catalogs):
    whole = select_galaxies(_config(random_catalogs, chunk_rows=10_000))
    for chunk_rows, scheduler in [(97, "threads"), (1000, "synchronous")]:
        streamed = select_galaxies(_config(random_catalogs, chunk_rows=chunk_rows, scheduler=scheduler))
        pd.testing.assert_frame_equal(streamed.table, whole.table)
        assert streamed.cut_flow.to_dict() == whole.cut_flow.to_dict()
    # the random population has every kind of problem row, so every cut removes some
    removed = [a - b for (_, a), (_, b) in zip(whole.cut_flow.steps, whole.cut_flow.steps[1:], strict=False)]
    assert all(r > 0 for r in removed)
    assert whole.cut_flow.rows_in == 3000


def test_parquet_input_matches_fits(random_catalogs, random_catalogs_parquet):
    from_fits = select_galaxies(_config(random_catalogs))
    from_parquet = select_galaxies(_config(random_catalogs_parquet, chunk_rows=500))
    pd.testing.assert_frame_equal(from_parquet.table, from_fits.table)
    assert [c for _, c in from_parquet.cut_flow.steps] == [c for _, c in from_fits.cut_flow.steps]


def test_missing_column_and_inputs_are_named(clean_frames, tmp_path):
    paths = write_frames(tmp_path, clean_frames)
    with pytest.raises(ConfigError, match="catalog.shear"):
        select_galaxies(CatalogConfig(gold=paths.gold))
    with pytest.raises(ConfigError, match="catalog.gold"):
        select_galaxies(CatalogConfig(shear=paths.im3shape))
    with pytest.raises(ConfigError, match="gold_quality"):
        select_galaxies(CatalogConfig(shear=paths.im3shape, wlinfo=paths.wlinfo, cuts=CutsConfig(gold_quality=True)))
    # wlinfo lacks MODEST_CLASS: asking for it on a "gold" file that is really wlinfo names the column
    with pytest.raises(InputError, match=r"wlinfo\.fits: missing column MODEST_CLASS"):
        select_galaxies(_config(paths, gold=paths.wlinfo, cuts=CutsConfig(gold_quality=True)))
    with pytest.raises(InputError, match=r"gold\.fits: missing column E_1"):
        select_galaxies(dataclasses.replace(_config(paths), shear=paths.gold))

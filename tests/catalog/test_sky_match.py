"""Sky match: nearest gold object within the radius, shear positions from wlinfo or the shear catalog itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_deblend.catalog import select_galaxies
from survey_deblend.catalog.synthetic import catalog_frames, write_frames
from survey_deblend.config.catalog import CatalogConfig
from survey_deblend.errors import ConfigError, InputError

ARCSEC = 1.0 / 3600.0


def _offset(frame: pd.DataFrame, row: int, arcsec_north: float) -> None:
    frame.loc[row, "DEC"] += arcsec_north * ARCSEC


def _sky(paths, **kw) -> CatalogConfig:
    return CatalogConfig(shear=paths.im3shape, gold=paths.gold, wlinfo=paths.wlinfo, match="sky", **kw)


@pytest.fixture
def shifted(clean_frames, tmp_path):
    """Gold positions 0.3" from wlinfo, one 2" away, one galaxy with a closer decoy star next to its gold row."""
    gold = clean_frames.gold
    gold["DEC"] += 0.3 * ARCSEC
    _offset(gold, 4, 1.7)  # row 4 now 2.0" away
    decoy = gold.iloc[[7]].copy()
    decoy["COADD_OBJECTS_ID"] = 9_000_000_000
    decoy["DEC"] = clean_frames.wlinfo.loc[7, "DEC"] - 0.1 * ARCSEC  # nearer than row 7's own gold entry
    clean_frames.gold = pd.concat([gold, decoy], ignore_index=True)
    return clean_frames, write_frames(tmp_path, clean_frames)


def test_nearest_within_radius(shifted):
    frames, paths = shifted
    for chunk_rows in (4, 1000):
        selection = select_galaxies(_sky(paths, chunk_rows=chunk_rows))
        table = selection.table
        assert selection.cut_flow.unmatched == 1
        assert selection.cut_flow.steps[-1] == ('sky match in gold.fits (< 1")', 11)
        expected_ids = frames.im3shape["COADD_OBJECTS_ID"].drop(index=4)
        np.testing.assert_array_equal(table["coadd_objects_id"], expected_ids)
        # positions are the gold ones; row 7 took the decoy, which is nearer
        row7 = table.index[table["coadd_objects_id"] == frames.im3shape.loc[7, "COADD_OBJECTS_ID"]][0]
        assert table.loc[row7, "dec"] == pytest.approx(frames.wlinfo.loc[7, "DEC"] - 0.1 * ARCSEC, abs=1e-12)
        row0 = table.index[table["coadd_objects_id"] == frames.im3shape.loc[0, "COADD_OBJECTS_ID"]][0]
        assert table.loc[row0, "dec"] == pytest.approx(frames.wlinfo.loc[0, "DEC"] + 0.3 * ARCSEC, abs=1e-12)


def test_radius_is_configurable(shifted):
    _, paths = shifted
    assert len(select_galaxies(_sky(paths, match_radius_arcsec=2.5)).table) == 12
    assert len(select_galaxies(_sky(paths, match_radius_arcsec=0.2)).table) == 1  # only the decoy is that close


def test_shear_catalog_with_its_own_positions(clean_frames, tmp_path):
    paths = write_frames(tmp_path, clean_frames, fmt="parquet")
    shear = clean_frames.im3shape.assign(RA=clean_frames.wlinfo["RA"], DEC=clean_frames.wlinfo["DEC"])
    shear_path = tmp_path / "shear_with_positions.parquet"
    shear.to_parquet(shear_path)
    selection = select_galaxies(CatalogConfig(shear=shear_path, gold=paths.gold, match="sky"))
    assert len(selection.table) == 12 and selection.cut_flow.unmatched == 0


def test_sky_and_id_match_agree_on_a_random_field(random_catalogs):
    by_id = select_galaxies(CatalogConfig(shear=random_catalogs.im3shape, gold=random_catalogs.gold))
    by_sky = select_galaxies(_sky(random_catalogs, chunk_rows=700, match_radius_arcsec=0.5))
    pd.testing.assert_frame_equal(by_sky.table, by_id.table)


def test_sky_match_needs_shear_positions(clean_frames, tmp_path):
    paths = write_frames(tmp_path, clean_frames)
    with pytest.raises(ConfigError, match=r"catalog\.wlinfo: a sky match needs positions"):
        select_galaxies(CatalogConfig(shear=paths.im3shape, gold=paths.gold, match="sky"))


def test_wlinfo_must_be_row_matched(clean_frames, tmp_path):
    wlinfo = clean_frames.wlinfo
    clean_frames.wlinfo = wlinfo.iloc[::-1].reset_index(drop=True)
    paths = write_frames(tmp_path, clean_frames)
    with pytest.raises(InputError, match=r"wlinfo\.fits: COADD_OBJECTS_ID differs from the shear catalog at row 0"):
        select_galaxies(_sky(paths))
    clean_frames.wlinfo = wlinfo.iloc[:-1]
    paths = write_frames(tmp_path / "short", clean_frames)
    with pytest.raises(InputError, match=r"wlinfo\.fits: 11 rows but .*im3shape\.fits has 12"):
        select_galaxies(_sky(paths))


def test_nan_shear_position_is_an_input_error(clean_frames, tmp_path):
    clean_frames.wlinfo.loc[2, "RA"] = np.nan
    paths = write_frames(tmp_path, clean_frames)
    with pytest.raises(InputError, match=r"wlinfo\.fits: 1 rows with NaN or out-of-range RA/DEC \(first at row 2\)"):
        select_galaxies(_sky(paths))


def test_parquet_wlinfo_with_fits_shear(random_catalogs, random_catalogs_parquet):
    """Row-matched positions come by row range even when the two files are chunked differently."""
    by_id = select_galaxies(CatalogConfig(shear=random_catalogs.im3shape, gold=random_catalogs.gold))
    mixed = CatalogConfig(
        shear=random_catalogs.im3shape,
        gold=random_catalogs.gold,
        wlinfo=random_catalogs_parquet.wlinfo,
        match="sky",
        chunk_rows=700,
    )
    pd.testing.assert_frame_equal(select_galaxies(mixed).table, by_id.table)


def test_same_answer_as_astropy_match_to_catalog_sky(tmp_path, make_objects):
    """Dense random pairs: the chunked bounded search finds astropy's nearest neighbour whenever it is < radius."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    objects = make_objects(400, seed=9)
    frames = catalog_frames(objects)
    rng = np.random.default_rng(3)
    gold = pd.concat([frames.gold] * 3, ignore_index=True)  # three candidates per galaxy, up to 3" away
    gold["COADD_OBJECTS_ID"] = np.arange(len(gold)) + 10
    gold["RA"] += rng.uniform(-3, 3, len(gold)) * ARCSEC / np.cos(np.radians(gold["DEC"]))
    gold["DEC"] += rng.uniform(-3, 3, len(gold)) * ARCSEC
    frames.gold = gold.sample(frac=1.0, random_state=1).reset_index(drop=True)
    paths = write_frames(tmp_path, frames)
    table = select_galaxies(_sky(paths, chunk_rows=150, match_radius_arcsec=2.0)).table
    shear = SkyCoord(frames.wlinfo["RA"].to_numpy() * u.deg, frames.wlinfo["DEC"].to_numpy() * u.deg)
    catalog = SkyCoord(frames.gold["RA"].to_numpy() * u.deg, frames.gold["DEC"].to_numpy() * u.deg)
    nearest, separation, _ = shear.match_to_catalog_sky(catalog)
    close = separation.arcsec < 2.0
    assert 0 < close.sum() < len(objects)  # some galaxies have no candidate that close
    np.testing.assert_array_equal(table["coadd_objects_id"], frames.im3shape["COADD_OBJECTS_ID"][close])
    np.testing.assert_array_equal(table["ra"], frames.gold["RA"].to_numpy()[nearest[close]])

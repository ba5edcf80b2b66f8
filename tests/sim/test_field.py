"""The DES-like field: FITS tiles with a north-up west-right TAN WCS, SVA1-schema catalogs, a separate truth."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from astropy.wcs import WCS

from survey_deblend.catalog.schema import GOLD_COLUMNS, IM3SHAPE_COLUMNS, UNMEASURED, WLINFO_COLUMNS
from survey_deblend.config.sim import FieldSimConfig
from survey_deblend.sim.field import TRUTH_COLUMNS, Tile, make_des_field, render_tile, tile_layout, tile_name
from survey_deblend.sim.population import draw_population
from survey_deblend.surveys import DES_BANDS, band_facts


def _tiles(field):
    """Tile name -> band -> path, south to north."""
    names = {p.name.split("_")[0] for p in field.tiles_dir.glob("*.fits")}
    names = sorted(names, key=lambda n: fits.getheader(field.tiles_dir / f"{n}_r0001p01_i.fits", 1)["CRVAL2"])
    return {n: {b: field.tiles_dir / f"{n}_r0001p01_{b}.fits" for b in DES_BANDS} for n in names}


def test_tiles_are_des_like_fits(field):
    tiles = _tiles(field)
    assert len(tiles) == 2 and all(p.is_file() for t in tiles.values() for p in t.values())
    for name in tiles:
        assert re.fullmatch(r"DES\d{4}[+-]\d{4}", name)
        with fits.open(tiles[name]["i"]) as hdus:
            assert hdus[0].data is None and hdus[1].data.shape == (320, 320)
            h = hdus[1].header
            assert h["MAGZERO"] == 30.0 and h["CTYPE1"] == "RA---TAN" and h["CTYPE2"] == "DEC--TAN"
            assert h["CD1_1"] < 0 < h["CD2_2"] and h["CD1_1"] == pytest.approx(-0.2637 / 3600)
            w = WCS(h)
            (ra0, _), (ra1, _) = w.all_pix2world([[100, 100], [101, 100]], 0)
            (_, dec0), (_, dec1) = w.all_pix2world([[100, 100], [100, 101]], 0)
            assert ra1 < ra0 and dec1 > dec0  # +x is West, +y is North
            _, median, std = sigma_clipped_stats(hdus[1].data, sigma=3.0)
            assert std == pytest.approx(band_facts("DES", "i").sky_sigma, rel=0.08)  # sky noise, galaxies clipped
            assert abs(median) < 0.1 * std  # sky-subtracted


def test_tiles_overlap_and_share_their_galaxies(field):
    (south, north) = [{b: fits.getdata(p[b], 1) for b in ("i",)} | {"wcs": WCS(fits.getheader(p["i"], 1))}
                      for p in _tiles(field).values()]  # fmt: skip
    # North tile's bottom row lies inside the south tile (40 px overlap).
    ra, dec = north["wcs"].all_pix2world([[160, 0]], 0)[0]
    x, y = south["wcs"].all_world2pix([[ra, dec]], 0)[0]
    assert x == pytest.approx(160, abs=0.5) and y == pytest.approx(280, abs=1.5)
    # ... so both tiles show the same light there (noise differs): compare smoothed fluxes in the overlap.
    a = south["i"][285:315].sum()
    b = north["i"][5:35].sum()
    sigma = band_facts("DES", "i").sky_sigma * np.sqrt(30 * 320) * 2
    assert abs(a - b) < 6 * sigma + 0.05 * abs(a)


def test_catalogs_follow_the_sva1_schema_and_hide_the_truth(field):
    for path, columns in (
        (field.im3shape, IM3SHAPE_COLUMNS),
        (field.gold, GOLD_COLUMNS),
        (field.wlinfo, WLINFO_COLUMNS),
    ):
        table = Table.read(path, hdu=1)
        assert table.colnames == list(columns)
        for name, dtype in columns.items():
            assert (
                table[name].dtype.kind == np.dtype(dtype).kind
                and table[name].dtype.itemsize == np.dtype(dtype).itemsize
            )
    im3 = Table.read(field.im3shape).to_pandas()
    wl = Table.read(field.wlinfo).to_pandas()
    gold = Table.read(field.gold).to_pandas()
    np.testing.assert_array_equal(im3["COADD_OBJECTS_ID"], wl["COADD_OBJECTS_ID"])
    assert set(im3["COADD_OBJECTS_ID"]) <= set(gold["COADD_OBJECTS_ID"])
    unmeasured = im3["E_1"] == UNMEASURED
    assert 0 < unmeasured.mean() < 0.7
    assert (im3.loc[unmeasured, "ERROR_FLAG"] == 2**30).all() and (im3.loc[unmeasured, "SNR_W"] == UNMEASURED).all()
    measured = im3[~unmeasured]
    assert (measured["ERROR_FLAG"] != 0).any() and (measured["INFO_FLAG"] != 0).any()
    assert (np.hypot(measured["E_1"], measured["E_2"]) < 1).all()
    truth = pd.read_parquet(field.truth).set_index("coadd_objects_id")
    t = truth.loc[measured["COADD_OBJECTS_ID"]]
    resid = (measured["E_1"].to_numpy() - t["e1"].to_numpy()) / np.minimum(0.4, 2.5 / measured["SNR_W"].to_numpy())
    assert 0.7 < resid.std() < 1.3  # truth plus noise of the documented size, not the truth itself
    np.testing.assert_allclose(measured["SNR_W"], t["snr_r"], rtol=1e-5)  # SNR_W from flux and sky noise
    assert not np.allclose(wl["MEAN_PHOTOZ"], truth.loc[wl["COADD_OBJECTS_ID"], "z"])
    # MEAN_PSF_* describe the simulated r-band PSF: round, surveycodex FWHM in DES pixels
    r = band_facts("DES", "r")
    np.testing.assert_allclose(measured["MEAN_PSF_FWHM"], r.psf_fwhm_arcsec / r.pixel_scale_arcsec, rtol=1e-6)
    assert (measured["MEAN_PSF_E1"] == 0).all() and (measured["MEAN_PSF_E2"] == 0).all()
    assert set(TRUTH_COLUMNS.values()) <= set(truth.columns)  # what evaluation reads from the truth file


def test_catalog_positions_land_on_the_galaxies(field):
    """Pixel -> sky through the tile WCS of a bright isolated galaxy's centroid lands on its catalog RA/DEC."""
    truth = pd.read_parquet(field.truth)
    gold = Table.read(field.gold).to_pandas().set_index("COADD_OBJECTS_ID")
    tiles = _tiles(field)
    bright = truth[(truth["snr_r"] > 60) & (truth["n_neighbours_3arcsec"] == 0)]
    checked = 0
    for _, row in bright.iterrows():
        data = fits.getdata(tiles[row["tile"]]["r"], 1)
        w = WCS(fits.getheader(tiles[row["tile"]]["r"], 1))
        x, y = w.all_world2pix(
            [[gold.loc[row["coadd_objects_id"], "RA"], gold.loc[row["coadd_objects_id"], "DEC"]]], 0
        )[0]
        ix, iy = int(round(x)), int(round(y))
        if not (8 <= ix < 312 and 8 <= iy < 312):
            continue
        cut = data[iy - 7 : iy + 8, ix - 7 : ix + 8].astype(float)
        cut = np.clip(cut, 0, None)
        yy, xx = np.indices(cut.shape)
        cx, cy = (cut * xx).sum() / cut.sum() + ix - 7, (cut * yy).sum() / cut.sum() + iy - 7
        ra, dec = w.all_pix2world([[cx, cy]], 0)[0]
        assert ra == pytest.approx(row["ra"], abs=0.3 / 3600) and dec == pytest.approx(row["dec"], abs=0.3 / 3600)
        checked += 1
    assert checked >= 3


def test_east_west_galaxy_is_elongated_along_x_in_the_tile():
    cfg = FieldSimConfig(n_tiles=1, tile_size_pix=101, seed=0)
    tile = Tile(tile_name(82.5, -50.0), 82.5, -50.0, 101, 0.2637)
    pop = draw_population(np.random.default_rng(0), 1, 19.0, 19.1)
    pop = pop.with_(e1_intrinsic=np.array([0.5]), e2_intrinsic=np.zeros(1), g1_shear=np.zeros(1),
                    g2_shear=np.zeros(1), disk_hlr=np.array([1.0]), bulge_frac=np.array([0.1]))  # fmt: skip
    ra, dec = tile.wcs().all_pix2world([[60.3, 40.6]], 0)[0]
    snr = np.full((1, 5), np.nan)
    img = render_tile(tile, pop, np.array([ra]), np.array([dec]), cfg, snr)[DES_BANDS.index("r")]
    yy, xx = np.indices(img.shape)
    w = img / img.sum()
    cx, cy = (w * xx).sum(), (w * yy).sum()
    assert cx == pytest.approx(60.3, abs=0.05) and cy == pytest.approx(40.6, abs=0.05)
    assert (w * (xx - cx) ** 2).sum() > 2 * (w * (yy - cy) ** 2).sum()  # E-W on the sky = along x
    assert snr[0, 1] > 100


def test_tile_names_stay_unique_for_small_tiles():
    tiles = tile_layout(FieldSimConfig(n_tiles=4, tile_size_pix=128, overlap_pix=10))
    assert len({t.name for t in tiles}) == 4 and tiles[0].dec_deg < tiles[-1].dec_deg
    assert tile_name(82.5, -50.0) == "DES0530-5000"


@pytest.mark.slow
def test_demo_size_field_has_a_usable_selection(tmp_path):
    """The demo's field (2 tiles x 1000 px) yields hundreds of SNR_W > 20 shapes (its build time is measured by
    ``benchmarks/simulate.py``, ``simulate_des_field``, not asserted here)."""
    paths = make_des_field(tmp_path, n_tiles=2, tile_size_pix=1000, seed=0)
    im3 = Table.read(paths.im3shape).to_pandas()
    usable = (im3["SNR_W"] > 20) & (im3["ERROR_FLAG"] == 0) & (im3["INFO_FLAG"] == 0)
    assert usable.sum() > 150
    truth = pd.read_parquet(paths.truth)
    assert (truth["n_neighbours_3arcsec"] > 0).mean() > 0.1  # blends occur

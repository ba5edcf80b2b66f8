"""The local server answers in the Astro Data Lab's SIA schema, and the client reads that schema and the
zeropoints the data state (MAGZERO, magzero), over a real socket on 127.0.0.1."""

from __future__ import annotations

import io
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import pyvo
from astropy.io import fits
from astropy.io.votable.tree import Field, Resource, TableElement, VOTableFile

from survey_deblend.cutouts import status as st
from survey_deblend.cutouts.choice import zeropoint_factor
from survey_deblend.cutouts.server import running_server
from survey_deblend.cutouts.sia import SIASource
from survey_deblend.cutouts.sia_answer import band_of, des_tile_fov_deg, tile_records
from survey_deblend.cutouts.synthetic import Blob, tile_wcs, write_field
from survey_deblend.cutouts.tiles import TileSource
from survey_deblend.errors import InputError

from .conftest import BANDS, CENTRE, TILE

S = 45
ALL = ("elongated", "round", "edge", "overlap_tile0", "overlap_tile1", "outside")


def quick(url: str, **kwargs) -> SIASource:
    options = dict(bands=BANDS, timeout_s=5.0, retries=2, backoff_s=0.01, concurrency=4)
    options.update(kwargs)
    return SIASource(url, **options)


@pytest.fixture(scope="module")
def datalab_field(field, tmp_path_factory):
    """The conftest sky as tile-compressed .fits.fz files; tile 1 holds its science image in extension 3."""
    root = tmp_path_factory.mktemp("datalab")
    for path in field.std.glob("*.fits"):
        with fits.open(path) as hdul:
            planes = {h.name: h for h in hdul[1:]}
            order = ("MSK", "WGT", "SCI") if "DES0001" in path.name else ("SCI", "MSK", "WGT")
            hdus = [fits.CompImageHDU(planes[n].data, planes[n].header, name=n, quantize_level=0.0,
                                      compression_type="GZIP_2") for n in order]
            fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(root / f"{path.name}.fz")
    return root


def test_answer_has_the_data_lab_schema(datalab_field, field):
    ra, dec = field.radec("round")
    with running_server(datalab_field) as url:
        table = pyvo.dal.SIAService(url).search((ra[0], dec[0]), (0.01, 0.01)).to_table()
    for column in ("access_url", "obs_bandpass", "prodtype", "proctype", "magzero", "seeing", "exptime",
                   "im_scale", "s_ra", "s_dec", "s_fov", "s_region", "spat_lolimit1", "spat_hilimit1",
                   "spat_lolimit2", "spat_hilimit2"):
        assert column in table.colnames
    # "round" lies in tile 1 only (no Y): 4 images, three rows each
    assert len(table) == 12 and sorted(table["prodtype"]) == ["dqmask"] * 4 + ["image"] * 4 + ["wtmap"] * 4
    assert table["s_fov"].mask.all()
    images = table[table["prodtype"] == "image"]
    assert sorted(images["obs_bandpass"]) == [
        "g DECam SDSS c0001 4720.0 1520.0", "i DECam SDSS c0003 7835.0 1470.0",
        "r DECam SDSS c0002 6415.0 1480.0", "z DECam SDSS c0004 9260.0 1520.0",
    ]
    assert set(images["magzero"]) == {"30.0"} and set(images["exptime"]) == {"900.0"}
    assert set(table["proctype"]) == {"Stack"}
    assert np.allclose(np.vstack(list(table["im_scale"])), 0.2637 / 3600)
    for row in table:
        query = parse_qs(urlsplit(row["access_url"]).query)
        assert urlsplit(row["access_url"]).path == "/svc/cutout" and query["col"] == ["des_sva1"]
        assert query["POS"] == [f"{ra[0]:.7f},{dec[0]:.7f}"] and query["SIZE"] == ["0.0100000,0.0100000"]
        # tile 1 files are MSK, WGT, SCI: the extension numbers are those of that file
        assert query["extn"] == [{"image": "3", "dqmask": "1", "wtmap": "2"}[row["prodtype"]]]
        assert query["siaRef"][0].endswith(".fits.fz")
        assert row["s_region"].startswith("POLYGON ICRS ")
        assert row["spat_lolimit1"] < row["s_ra"] < row["spat_hilimit1"]
        assert row["spat_lolimit2"] < row["s_dec"] < row["spat_hilimit2"]


def test_client_stamps_from_the_data_lab_schema_equal_tile_stamps(datalab_field, field, tmp_path):
    ra, dec = field.radec(*ALL)
    expected = TileSource(field.std, bands=BANDS).fetch(ra, dec, S)
    for long_bandpass in (True, False):
        with running_server(datalab_field, long_bandpass=long_bandpass) as url:
            batch = quick(url).fetch(ra, dec, S)
        assert list(batch.status) == [st.OK, st.OK, st.PADDED, st.OK, st.OK, st.NO_COVERAGE]
        np.testing.assert_array_equal(batch.band_mask, expected.band_mask)
        np.testing.assert_array_equal(batch.images, expected.images)
    assert batch.frame.zeropoints == (30.0,) * 5


def test_whole_images_are_served_per_extension(datalab_field, field, tmp_path):
    ra, dec = field.radec("round", "elongated")
    expected = TileSource(field.std, bands=BANDS).fetch(ra, dec, S)
    with running_server(datalab_field) as url:
        batch = quick(url, use_cutout_service=False, cache_dir=tmp_path).fetch(ra, dec, S)
        # 9 science images and their 9 weight maps (the wtmap extension of each file), each once
        assert url.server.request_counts["image"] == 18 and url.server.request_counts["cutout"] == 0
    np.testing.assert_array_equal(batch.images, expected.images)
    np.testing.assert_array_equal(batch.noise_sigma, expected.noise_sigma)


def _votable(rows: list[dict]) -> bytes:
    """An SIA answer with just the given columns (None: masked), written with astropy's VOTable writer."""
    names = list(rows[0])
    votable = VOTableFile()
    resource = Resource()
    resource.type = "results"
    votable.resources.append(resource)
    table = TableElement(votable)
    resource.tables.append(table)
    for name in names:
        numeric = name.startswith(("s_", "spat_")) and name != "s_region"
        table.fields.append(Field(votable, name=name, datatype="double" if numeric else "char",
                                  arraysize=None if numeric else "*"))
    table.create_arrays(len(rows))
    for k, row in enumerate(rows):
        table.array[k] = tuple(row[n] if row[n] is not None else (0.0 if n.startswith(("s_", "spat_"))
                                                                 and n != "s_region" else "") for n in names)
        table.array.mask[k] = tuple(row[n] is None for n in names)
    out = io.BytesIO()
    votable.to_xml(out)
    return out.getvalue()


def _row(**kw) -> dict:
    row = {"access_url": "https://h/svc/cutout?col=des_sva1&siaRef=DES0001+0001_r1p01_i.fits.fz&extn=2&POS=1,1"
           "&SIZE=0.1,0.1", "obs_bandpass": "i DECam SDSS c0003 7835.0 1470.0", "prodtype": "image",
           "proctype": "Stack", "magzero": "31.2", "s_ra": 10.0, "s_dec": 0.0, "s_fov": None, "s_region": None,
           "spat_lolimit1": None, "spat_hilimit1": None, "spat_lolimit2": None, "spat_hilimit2": None}
    row.update(kw)
    return row


def test_footprints_from_s_region_then_limits_then_tile_size():
    region = "POLYGON ICRS 9.9 -0.2 10.1 -0.2 10.1 0.2 9.9 0.2"  # 0.2 x 0.4 deg
    records = tile_records(_votable([
        _row(s_region=region),
        _row(spat_lolimit1=9.95, spat_hilimit1=10.05, spat_lolimit2=-0.05, spat_hilimit2=0.05),
        _row(),
        _row(prodtype="wtmap", access_url="https://h/svc/cutout?siaRef=DES0001+0001_r1p01_i.fits.fz&extn=3"),
        _row(proctype="InstCal"),
    ]))
    assert len(records) == 3  # the weight map and the single-epoch image hold no coadd pixels
    polygon, limits, fallback = records
    assert polygon.ref == "DES0001+0001_r1p01_i.fits.fz" and polygon.tile == "DES0001+0001"
    assert polygon.band == "i" and polygon.extn == 2 and polygon.zeropoint == 31.2
    assert polygon.weight_url.endswith("extn=3")
    probe = (np.array([10.0, 10.0, 10.08]), np.array([0.0, 0.15, 0.0]))
    np.testing.assert_allclose(polygon.depth(*probe), [0.1, 0.05, 0.02], atol=1e-4)
    np.testing.assert_allclose(limits.depth(*probe)[0], 0.05, atol=1e-4)
    assert limits.depth(*probe)[1] < 0 and limits.depth(*probe)[2] < 0
    assert fallback.depth(*probe)[0] == pytest.approx(des_tile_fov_deg() / 2, rel=1e-4)
    assert band_of("VR DECam c0007 6300.0 2600.0") == "VR" and band_of("Y") == "Y"


def test_tile_with_magzero_27_5_gives_a_frame_at_27_5(field, tmp_path):
    ra, dec = field.radec("round")
    blob = [Blob(float(ra[0]), float(dec[0]), 800.0, 0.8, 0.8)]
    names = ["DES0002-5000"]
    write_field(tmp_path, [(float(ra[0]), float(dec[0]))], blob, tile_size_pix=200, bands=("g", "r"), names=names,
                magzero=27.5)
    tiles = TileSource(tmp_path, bands=("g", "r")).fetch(ra, dec, S)
    assert tiles.frame.zeropoints == (27.5, 27.5) and tiles.status[0] == st.OK
    with running_server(tmp_path) as url:
        sia = quick(url, bands=("g", "r")).fetch(ra, dec, S)
    assert sia.frame.zeropoints == (27.5, 27.5)
    np.testing.assert_array_equal(sia.images, tiles.images)


def test_tiles_of_one_band_with_two_zeropoints_are_brought_to_one(field, tmp_path):
    import shutil

    ra, dec = field.radec("overlap_tile0", "overlap_tile1")
    for path in field.std.glob("*_g.fits"):
        shutil.copy(path, tmp_path / path.name)
    reference = TileSource(tmp_path, bands=("g",)).fetch(ra, dec, S)
    # a third copy of tile 1 at zeropoint 32.5: pixels 10**(0.4 * 2.5) = 10 times brighter, same sky
    with fits.open(tmp_path / "DES0001-5000_r0001p01_g.fits") as hdul:
        hdul[1].header["MAGZERO"] = 32.5
        hdul[1].data = hdul[1].data * np.float32(10.0)
        hdul.writeto(tmp_path / "DES0001-5000_r0001p01_g.fits", overwrite=True)
    mixed = TileSource(tmp_path, bands=("g",))
    batch = mixed.fetch(ra, dec, S)
    assert batch.frame.zeropoints == (30.0,)  # one tile at each zeropoint: the smaller
    np.testing.assert_allclose(batch.images, reference.images, rtol=1e-5, atol=1e-6)
    assert zeropoint_factor(32.5, 30.0) == pytest.approx(0.1)


def test_tile_without_magzero_is_a_one_line_error_naming_it(field, tmp_path):
    ra, dec = field.radec("round")
    write_field(tmp_path, [(float(ra[0]), float(dec[0]))], [], tile_size_pix=100, bands=("g",),
                names=["DES0003-5000"], magzero=None)
    with pytest.raises(InputError) as info:
        TileSource(tmp_path, bands=("g",))
    message = str(info.value)
    assert "\n" not in message and "DES0003-5000_r0001p01_g.fits" in message and "MAGZERO" in message
    with running_server(tmp_path) as url:
        with pytest.raises(InputError, match=r"DES0003-5000_r0001p01_g\.fits: no magzero"):
            quick(url, bands=("g",)).fetch(ra, dec, S)


def test_dense_images_are_downloaded_whole_and_sparse_ones_cut_remotely(datalab_field, field, tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.uniform(120, 380, 24), rng.uniform(30, 370, 24)  # tile 0 only (tile 1 ends at x = 99)
    ra0, dec0 = tile_wcs(*CENTRE, (TILE, TILE)).all_pix2world(x, y, 0)
    ra_r, dec_r = field.radec("round")  # tile 1 only
    ra, dec = np.concatenate([ra0, ra_r]), np.concatenate([dec0, dec_r])
    expected = TileSource(field.std, bands=BANDS).fetch(ra, dec, S)
    with running_server(datalab_field) as url:
        source = quick(url, whole_image_threshold=10, cache_dir=tmp_path)
        choice = source.plan(ra, dec, S)
        modes = choice.modes()
        assert {m for ref, m in modes.items() if ref.startswith("DES0000")} == {"whole_image"}
        assert {m for ref, m in modes.items() if ref.startswith("DES0001")} == {"cutouts"}
        batch = source.fetch(ra, dec, S, choice=choice)
        counts = dict(url.server.request_counts)
        # 5 bands of tile 0 once, 4 bands of "round" by cutout; each with its weight map the same way
        assert counts["image"] == 10 and counts["cutout"] == 8
        assert url.server.bytes_sent["image"] > 0
        source.fetch(ra, dec, S, choice=choice)  # again: every image and cutout comes from the cache
        assert dict(url.server.request_counts) == counts
    np.testing.assert_array_equal(batch.images, expected.images)
    np.testing.assert_array_equal(batch.status, expected.status)

"""SIASource and the local SIA server over a real socket: equality with TileSource, cache, faults, hosts."""

from __future__ import annotations

import pickle
import socket

import numpy as np
import pytest

from survey_deblend.config.images import ImagesConfig
from survey_deblend.cutouts import open_source
from survey_deblend.cutouts import status as st
from survey_deblend.cutouts.http import GuardedHTTP
from survey_deblend.cutouts.server import Faults, parse_query, running_server
from survey_deblend.cutouts.sia import SIASource
from survey_deblend.cutouts.sia_answer import sia_ref
from survey_deblend.cutouts.synthetic import Blob, write_field
from survey_deblend.cutouts.tiles import TileSource
from survey_deblend.errors import ConfigError

from .conftest import BANDS

S = 45
ALL = ("elongated", "round", "edge", "overlap_tile0", "overlap_tile1", "outside")


def quick(url: str, **kwargs) -> SIASource:
    """A source with short timeouts and back-off, as tests need."""
    options = dict(bands=BANDS, timeout_s=2.0, retries=2, backoff_s=0.01, concurrency=4)
    options.update(kwargs)
    return SIASource(url, **options)


def test_sia_stamps_equal_tile_stamps(field, tmp_path):
    ra, dec = field.radec(*ALL)
    expected = TileSource(field.std, bands=BANDS).fetch(ra, dec, S)
    with running_server(field.std) as url:
        batch = quick(url, cache_dir=tmp_path).fetch(ra, dec, S)
    assert list(batch.status) == [st.OK, st.OK, st.PADDED, st.OK, st.OK, st.NO_COVERAGE]
    np.testing.assert_array_equal(batch.status, expected.status)
    np.testing.assert_array_equal(batch.band_mask, expected.band_mask)
    np.testing.assert_array_equal(batch.images, expected.images)
    assert batch.pixel_scale_arcsec == pytest.approx(0.2637)


def test_whole_tile_fallback_equals_tile_stamps(field, tmp_path):
    ra, dec = field.radec("elongated", "round", "edge")
    expected = TileSource(field.std, bands=BANDS).fetch(ra, dec, S)
    with running_server(field.std) as url:
        batch = quick(url, cache_dir=tmp_path, use_cutout_service=False).fetch(ra, dec, S)
        counts = dict(url.server.request_counts)
    np.testing.assert_array_equal(batch.images, expected.images)
    np.testing.assert_array_equal(batch.noise_sigma, expected.noise_sigma)
    # 5 bands of tile 0 and 4 of tile 1, once each, and the weight map of each once
    assert counts.get("cutout", 0) == 0 and counts["image"] == 18


def test_second_fetch_is_served_from_the_cache(field, tmp_path):
    ra, dec = field.radec(*ALL)
    with running_server(field.std) as url:
        first = quick(url, cache_dir=tmp_path).fetch(ra, dec, S)
        before = sum(url.server.request_counts.values())
        assert before > 0
        second = quick(url, cache_dir=tmp_path).fetch(ra, dec, S)  # a new source, as in a re-run
        after = sum(url.server.request_counts.values())
    assert after == before
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.status, first.status)


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (Faults(error_rate=1.0), st.ERROR_HTTP),
        (Faults(html_error_rate=1.0), st.ERROR_BAD_FITS),
        (Faults(truncate_rate=1.0), st.ERROR_BAD_FITS),
        (Faults(wrong_size_rate=1.0), st.ERROR_WRONG_SIZE),
        (Faults(nan_rate=1.0), st.ERROR_NAN),
        (Faults(delay_s=1.0), st.ERROR_TIMEOUT),
    ],
    ids=["http_503", "html_page", "truncated", "wrong_size", "nan", "slow"],
)
def test_each_fault_ends_as_a_row_status_after_the_retries(field, faults, expected):
    ra, dec = field.radec("elongated", "outside")
    with running_server(field.std, faults=faults) as url:
        # a short timeout only where the timeout is the fault: a loaded machine must not turn others into it
        source = quick(url, bands=("r",), retries=2, timeout_s=0.3 if faults.delay_s else 5.0)
        batch = source.fetch(ra, dec, S)
        cutout_requests = url.server.request_counts["cutout"]
    assert list(batch.status) == [expected, st.NO_COVERAGE]
    assert not batch.band_mask.any() and np.all(batch.images == 0)
    assert batch.status_counts() == {expected: 1, st.NO_COVERAGE: 1}
    assert cutout_requests == 3  # every fault, NaN pixels and truncated bodies included, is asked again


def test_transient_errors_are_recovered_by_retrying(field, tmp_path):
    ra, dec = field.radec("elongated", "round")
    expected = TileSource(field.std, bands=("g",)).fetch(ra, dec, S)
    with running_server(field.std, faults=Faults(error_rate=1.0, max_faults=2)) as url:
        batch = quick(url, bands=("g",), retries=2, concurrency=1).fetch(ra, dec, S)
        assert url.server.request_counts["cutout"] == 6  # 2 faults, 2 stamps, their 2 weight cutouts
    np.testing.assert_array_equal(batch.images, expected.images)
    assert list(batch.status) == [st.OK, st.OK]


def test_connection_refused_is_a_row_status(field):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = quick(f"http://127.0.0.1:{port}/sia/des_sva1", retries=1)
    batch = source.fetch(*field.radec("elongated", "round"), S)
    assert list(batch.status) == [st.ERROR_CONNECTION] * 2
    assert not batch.band_mask.any()


def test_failing_sia_query_marks_every_row_of_the_cell(field):
    with running_server(field.std, faults=Faults(error_rate=1.0, on_query=True)) as url:
        batch = quick(url, retries=1).fetch(*field.radec("elongated", "round"), S)
        assert url.server.request_counts["sia"] == 4  # the rows lie in two cells; each query tried twice
    assert list(batch.status) == [st.ERROR_HTTP] * 2


def test_requests_to_other_hosts_are_refused(field, tmp_path):
    client = GuardedHTTP("http://127.0.0.1:9/sia", retries=3)
    refused = client.get("http://example.org/svc/cutout?siaRef=x")
    assert refused.status == st.ERROR_OFF_HOST and refused.attempts == 0
    # the service's access_url names 127.0.0.1 while the source was configured with "localhost": not followed
    with running_server(field.std) as url:
        other_name = url.replace("127.0.0.1", "localhost")
        batch = quick(other_name, use_cutout_service=False, cache_dir=tmp_path).fetch(*field.radec("round"), S)
        assert url.server.request_counts["image"] == 0 and url.server.request_counts["cutout"] == 0
    assert batch.status[0] == st.ERROR_OFF_HOST
    with pytest.raises(ConfigError, match="ftp://x"):
        SIASource("ftp://x/sia")


def test_plus_in_tile_names_survives_the_round_trip(tmp_path):
    from astropy.coordinates import SkyCoord

    centre = SkyCoord(60.0, 0.5, unit="deg")
    write_field(tmp_path, [(centre.ra.deg, centre.dec.deg)], [Blob(60.0, 0.5, 500.0, 0.8, 0.8)], tile_size_pix=100,
                bands=("g",), names=["DES0400+0030"])
    expected = TileSource(tmp_path, bands=("g",)).fetch([60.0], [0.5], 21)
    with running_server(tmp_path) as url:
        batch = quick(url, bands=("g",)).fetch([60.0], [0.5], 21)
    assert batch.status[0] == st.OK
    np.testing.assert_array_equal(batch.images, expected.images)
    assert sia_ref("https://h/svc/cutout?col=des_sva1&siaRef=DES0400+0030_r1p01_g.fits.fz&extn=1") == (
        "DES0400+0030_r1p01_g.fits.fz"
    )
    assert parse_query("siaRef=DES0400+0030_g.fits&POS=1,2")["SIAREF"] == "DES0400+0030_g.fits"


def test_source_pickles_and_fetches_after(field, tmp_path):
    with running_server(field.std) as url:
        source = quick(url, cache_dir=tmp_path)
        clone = pickle.loads(pickle.dumps(source))
        batch = clone.fetch(*field.radec("round"), S)
    assert batch.status[0] == st.OK and clone.http.cache_dir == tmp_path


def test_locality_keys_are_sky_cells():
    source = SIASource("http://127.0.0.1:1/sia/des_sva1")
    keys = source.locality_keys(np.array([80.1, 80.4, 80.6, -0.1]), np.array([-50.1, -50.4, -50.1, 1.0]))
    assert list(keys) == ["cell_160_-101", "cell_160_-101", "cell_161_-101", "cell_719_2"]


def test_open_source_builds_each_kind(field, tmp_path):
    cfg = ImagesConfig(retries=1, concurrency=2)
    tiles = open_source(f"tiles:{field.std}", cfg)
    assert isinstance(tiles, TileSource) and tiles.bands == BANDS
    sia = open_source("sia:http://127.0.0.1:8123/sia/des_sva1", cfg, cache_dir=tmp_path)
    assert isinstance(sia, SIASource) and sia.http.cache_dir == tmp_path and sia.concurrency == 2
    datalab = open_source("datalab", cfg)
    assert datalab.base_url == "https://datalab.noirlab.edu/sia/des_sva1"
    assert datalab.cutout_url == "https://datalab.noirlab.edu/svc/cutout"
    with pytest.raises(ConfigError, match="expected tiles:DIR"):
        open_source("ftp:somewhere", cfg)


def test_faults_can_be_changed_through_the_admin_endpoint(field):
    import requests

    ra, dec = field.radec("elongated")
    with running_server(field.std) as url:  # an ordinary server: no admin endpoint, no faults
        assert requests.get(f"{url.server.root_url}/admin/faults?error_rate=1", timeout=5).status_code == 404
    with running_server(field.std, fault_injection=True) as url:
        admin = f"{url.server.root_url}/admin/faults"
        assert requests.get(f"{admin}?error_rate=1.0&max_faults=100&seed=4", timeout=5).status_code == 200
        assert url.server.faults.faults == Faults(error_rate=1.0, max_faults=100, seed=4)
        assert quick(url, bands=("g",), retries=0).fetch(ra, dec, S).status[0] == st.ERROR_HTTP
        assert requests.get(f"{admin}?error_rate=0", timeout=5).status_code == 200
        assert quick(url, bands=("g",), retries=0).fetch(ra, dec, S).status[0] == st.OK
        assert requests.get(f"{admin}?error_rate=2", timeout=5).status_code == 400
        assert requests.get(f"{admin}?bogus=1", timeout=5).status_code == 400


def test_empty_request_makes_no_request(field):
    with running_server(field.std) as url:
        batch = quick(url).fetch(np.array([]), np.array([]), S)
        assert sum(url.server.request_counts.values()) == 0
    assert batch.images.shape == (0, 5, S, S) and batch.status_counts() == {}


def test_unforeseen_failure_in_one_cutout_is_a_row_status(field, monkeypatch):
    real = SIASource.cutout

    def odd_answer(self, tile, ra, dec, size_pix):
        if tile.band == "r":
            raise np.linalg.LinAlgError("singular CD matrix in the cutout header")
        return real(self, tile, ra, dec, size_pix)

    monkeypatch.setattr(SIASource, "cutout", odd_answer)
    # warnings raised in threads race with catch_warnings elsewhere (astropy's, the server's): record the calls
    warned: list[str] = []
    monkeypatch.setattr("survey_deblend.cutouts.sia.warn", warned.append)
    with running_server(field.std) as url:
        batch = quick(url, bands=("g", "r")).fetch(*field.radec("elongated", "round"), S)
    assert len(warned) == 2 and all("singular CD matrix" in w for w in warned)
    assert list(batch.status) == [st.OK] * 2  # r is masked, g still serves the galaxy
    assert list(batch.failed_bands) == ["r:error_bad_fits"] * 2
    assert batch.band_mask[:, 0].all() and not batch.band_mask[:, 1].any()


def test_tiles_are_chosen_once_by_the_planner(field, tmp_path):
    ra, dec = field.radec(*ALL)
    with running_server(field.std) as url:
        source = quick(url)
        assert len(pickle.dumps(source)) < 2048
        whole = source.fetch(ra, dec, S)
        before = url.server.request_counts["sia"]
        choice = source.plan(ra, dec, S)
        queries = url.server.request_counts["sia"] - before
        assert queries == len(np.unique(source.locality_keys(ra, dec)))
        assert list(choice.keys) == ["DES0000-5000", "DES0001-5000", "DES0000-5000", "DES0000-5000",
                                     "DES0001-5000", "no_coverage"]
        for key in np.unique(choice.keys):
            rows = np.flatnonzero(choice.keys == key)
            part = pickle.loads(pickle.dumps(choice.take(rows)))
            batch = pickle.loads(pickle.dumps(source)).fetch(ra[rows], dec[rows], S, choice=part)
            np.testing.assert_array_equal(batch.images, whole.images[rows])
            np.testing.assert_array_equal(batch.status, whole.status[rows])
        assert url.server.request_counts["sia"] == before + queries  # the workers never query again
    assert choice.galaxies_per_tile()["DES0000-5000_r0001p01_g.fits"] == 3


def test_a_band_failing_after_its_retries_is_masked_and_the_galaxy_kept(field):
    ra, dec = field.radec("elongated")
    expected = TileSource(field.std, bands=("g", "r")).fetch(ra, dec, S)
    # one worker, bands in order: the first three requests (g, tried three times) get NaN pixels
    with running_server(field.std, faults=Faults(nan_rate=1.0, max_faults=3)) as url:
        batch = quick(url, bands=("g", "r"), retries=2, concurrency=1).fetch(ra, dec, S)
        assert url.server.request_counts["cutout"] == 5  # g three times, r and its weight once (no g weight)
    assert batch.status[0] == st.OK and batch.failed_bands[0] == "g:error_nan"
    assert np.isnan(batch.noise_sigma[0, 0]) and batch.noise_sigma[0, 1] == expected.noise_sigma[0, 1]
    assert list(batch.band_mask[0]) == [False, True]
    assert np.all(batch.images[0, 0] == 0)
    np.testing.assert_array_equal(batch.images[0, 1], expected.images[0, 1])

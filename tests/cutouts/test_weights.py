"""Weight maps give each stamp's noise level (``CutoutBatch.noise_sigma``): the simulated DES-like tiles carry the
inverse variance of the noise they add, the tile source and the SIA source (its ``wtmap`` rows, over a real
socket) read it back, and a weight map that cannot be had costs the galaxy nothing but its noise level."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats

from survey_deblend.calibration.noise import border_noise_sigma
from survey_deblend.config.sim import FieldSimConfig
from survey_deblend.cutouts import CutoutBatch
from survey_deblend.cutouts import status as st
from survey_deblend.cutouts.server import Faults, running_server
from survey_deblend.cutouts.sia import SIASource
from survey_deblend.cutouts.sia_answer import tile_records
from survey_deblend.cutouts.synthetic import write_field
from survey_deblend.cutouts.tiles import TileSource
from survey_deblend.sim.field import make_des_field
from survey_deblend.surveys import DES_BANDS, PhotometricFrame, band_facts

from .conftest import BANDS

S = 45
SKY_SIGMA = np.array([band_facts("DES", b).sky_sigma for b in DES_BANDS])


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A DES-like simulated field (two 320 px tiles) and the positions of its galaxies."""
    cfg = FieldSimConfig(n_tiles=2, tile_size_pix=320, overlap_pix=40, seed=4, density_per_arcmin2=80.0)
    paths = make_des_field(tmp_path_factory.mktemp("sim"), config=cfg)
    truth = pd.read_parquet(paths.truth)
    return paths.tiles_dir, truth["ra"].to_numpy(), truth["dec"].to_numpy()


def quick(url: str, **kwargs) -> SIASource:
    options = dict(timeout_s=5.0, retries=1, backoff_s=0.01, concurrency=4)
    options.update(kwargs)
    return SIASource(url, **options)


def test_simulated_tiles_carry_the_inverse_variance_of_their_noise(sim):
    tiles_dir, _, _ = sim
    for b, band in enumerate(DES_BANDS):
        path = sorted(tiles_dir.glob(f"*_{band}.fits"))[0]
        with fits.open(path) as hdul:
            assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WGT"]
            weight, science = hdul["WGT"].data, hdul["SCI"].data
            assert weight.shape == science.shape and weight.dtype.kind == "f" and weight.dtype.itemsize == 4
            np.testing.assert_allclose(1.0 / np.sqrt(weight), SKY_SIGMA[b], rtol=1e-6)
            _, _, std = sigma_clipped_stats(science, sigma=3.0)  # the noise actually added, galaxies clipped
            assert std == pytest.approx(SKY_SIGMA[b], rel=0.05)


def test_tile_noise_sigma_is_the_injected_noise_and_agrees_with_the_border(sim):
    tiles_dir, ra, dec = sim
    batch = TileSource(tiles_dir).fetch(ra, dec, S)
    assert batch.noise_sigma.shape == (len(ra), 5) and batch.usable.sum() > 50
    used = batch.band_mask
    np.testing.assert_allclose(batch.noise_sigma[used], np.broadcast_to(SKY_SIGMA, used.shape)[used], rtol=0.02)
    assert np.isnan(batch.noise_sigma[~used]).all()
    # the border MAD of the stamps estimates the same level (neighbours on the border move it a little)
    ok = batch.status == st.OK
    ratio = border_noise_sigma(batch.images[ok]) / batch.noise_sigma[ok]
    np.testing.assert_allclose(np.median(ratio, axis=0), 1.0, atol=0.05)


@pytest.mark.parametrize("mode", ["cutouts", "whole_image"])
def test_sia_noise_sigma_comes_from_the_wtmap_rows(sim, tmp_path, mode):
    tiles_dir, ra, dec = sim
    ra, dec = ra[:25], dec[:25]
    expected = TileSource(tiles_dir).fetch(ra, dec, S)
    threshold = 1 if mode == "whole_image" else 0
    with running_server(tiles_dir) as url:
        source = quick(url, whole_image_threshold=threshold, cache_dir=tmp_path)
        records = tile_records(source.http.get(source.query_url(float(ra[0]), float(dec[0]), 0.01, 0.01)).body)
        batch = source.fetch(ra, dec, S)
        counts = dict(url.server.request_counts)
    # each science image lists its weight map: the same file, extension 2 (SCI 1, WGT 2)
    assert records and all(r.weight() is not None and r.weight().extn == 2 and r.weight().ref == r.ref
                           for r in records)
    np.testing.assert_array_equal(batch.images, expected.images)
    np.testing.assert_allclose(batch.noise_sigma, expected.noise_sigma, rtol=1e-6)
    if mode == "whole_image":  # one weight image per image, never a cutout
        assert counts.get("cutout", 0) == 0 and counts["image"] == 2 * len(source.plan(ra, dec, S).tiles)
    else:  # one weight cutout per stamp whose pixels came
        assert counts["cutout"] == 2 * int(batch.band_mask.sum())


@pytest.mark.parametrize("threshold", [0, 1])
def test_a_failing_weight_map_leaves_the_galaxy_predicted(sim, tmp_path, threshold):
    from survey_deblend.inference import Predictor
    from survey_deblend.models.checkpoint import write_untrained_checkpoint

    tiles_dir, ra, dec = sim
    ra, dec = ra[:12], dec[:12]
    expected = TileSource(tiles_dir).fetch(ra, dec, S)
    with running_server(tiles_dir, faults=Faults(error_rate=1.0, product="wtmap")) as url:
        batch = quick(url, whole_image_threshold=threshold).fetch(ra, dec, S)
    np.testing.assert_array_equal(batch.status, expected.status)
    np.testing.assert_array_equal(batch.band_mask, expected.band_mask)
    np.testing.assert_array_equal(batch.images, expected.images)
    assert (batch.failed_bands == "").all() and np.isnan(batch.noise_sigma).all()
    predictor = Predictor.from_checkpoint(write_untrained_checkpoint(tmp_path / "untrained.pt", seed=0))
    predicted = predictor.predict_batch(batch, measure_recon=False)
    assert np.isfinite(predicted["e1_pred"].to_numpy()[batch.usable]).all() and batch.usable.sum() >= 10


def test_noise_sigma_follows_the_zeropoint(field, tmp_path):
    ra, dec = field.radec("overlap_tile0", "overlap_tile1", "elongated")
    for path in field.std.glob("*_g.fits"):
        shutil.copy(path, tmp_path / path.name)
    reference = TileSource(tmp_path, bands=("g",)).fetch(ra, dec, S)
    # tile 1 at zeropoint 32.5: pixels 10 times brighter, so its noise too: weights 100 times smaller
    with fits.open(tmp_path / "DES0001-5000_r0001p01_g.fits") as hdul:
        hdul["SCI"].header["MAGZERO"] = 32.5
        hdul["SCI"].data = hdul["SCI"].data * np.float32(10.0)
        hdul["WGT"].data = hdul["WGT"].data / np.float32(100.0)
        hdul.writeto(tmp_path / "DES0001-5000_r0001p01_g.fits", overwrite=True)
    batch = TileSource(tmp_path, bands=("g",)).fetch(ra, dec, S)
    assert batch.frame.zeropoints == (30.0,)
    np.testing.assert_allclose(batch.noise_sigma, reference.noise_sigma, rtol=1e-5)
    np.testing.assert_allclose(batch.noise_sigma, 1.0, rtol=1e-5)  # the conftest tiles' weight is 1
    with running_server(tmp_path) as url:
        sia = quick(url, bands=("g",)).fetch(ra, dec, S)
    np.testing.assert_allclose(sia.noise_sigma, batch.noise_sigma, rtol=1e-5)


def test_without_weights_noise_sigma_is_none(field, tmp_path):
    ra, dec = field.radec("elongated", "round")
    assert TileSource(field.std, bands=BANDS, fetch_weights=False).fetch(ra, dec, S).noise_sigma is None
    with running_server(field.std) as url:
        batch = quick(url, bands=BANDS, fetch_weights=False).fetch(ra, dec, S)
        assert batch.noise_sigma is None and url.server.request_counts["cutout"] == int(batch.band_mask.sum())
    write_field(tmp_path, [(float(ra[0]), float(dec[0]))], [], tile_size_pix=100, bands=("g",), layout=("SCI",))
    assert TileSource(tmp_path, bands=("g",)).fetch(ra[:1], dec[:1], S).noise_sigma is None
    with running_server(tmp_path) as url:
        assert quick(url, bands=("g",)).fetch(ra[:1], dec[:1], S).noise_sigma is None


def test_batch_checks_noise_sigma_and_forgets_it_for_unused_bands():
    frame = PhotometricFrame("DES", ("g", "r"), 0.2637, (30.0, 30.0))
    batch = CutoutBatch.empty(2, frame, 5)
    batch.noise_sigma = np.ones((2, 2))
    batch.settle(np.array([[st.OK, st.ERROR_HTTP], [st.NO_COVERAGE, st.PADDED]], dtype=object))
    np.testing.assert_array_equal(batch.noise_sigma, [[1.0, np.nan], [np.nan, 1.0]])
    with pytest.raises(ValueError, match="noise_sigma shape"):
        CutoutBatch(batch.images, batch.band_mask, batch.status, frame, noise_sigma=np.ones((2, 3)))


def test_faults_can_target_the_weight_maps_only(field):
    import requests

    ra, dec = field.radec("elongated")
    with running_server(field.std, fault_injection=True) as url:
        admin = f"{url.server.root_url}/admin/faults"
        assert requests.get(f"{admin}?error_rate=1&product=wtmap", timeout=5).status_code == 200
        assert url.server.faults.faults == Faults(error_rate=1.0, product="wtmap")
        batch = quick(url, bands=("g",), retries=0).fetch(ra, dec, S)
        assert batch.status[0] == st.OK and np.isnan(batch.noise_sigma[0, 0])
        assert requests.get(f"{admin}?error_rate=1&product=image", timeout=5).status_code == 200
        assert quick(url, bands=("g",), retries=0).fetch(ra, dec, S).status[0] == st.ERROR_HTTP
        assert requests.get(f"{admin}?error_rate=1&product=bogus", timeout=5).status_code == 400

"""Stamps against GalSim itself, fluxes against magnitudes and zeropoints, noise against the surveycodex sky."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
import surveycodex
from surveycodex.utilities import mean_sky_level

from survey_deblend.sim.psf import psf_for
from survey_deblend.sim.render import GalaxyShapes, StampRenderer, galsim_profile
from survey_deblend.surveys import DES_BANDS, LSST_BANDS


def _shapes(rng, n, spread=3.0):
    return GalaxyShapes(
        disk_hlr=rng.uniform(0.2, 1.2, n), bulge_hlr=rng.uniform(0.1, 0.5, n), bulge_frac=rng.uniform(0, 1, n),
        g1=rng.uniform(-0.4, 0.4, n), g2=rng.uniform(-0.4, 0.4, n),
        x=rng.uniform(-spread, spread, n), y=rng.uniform(-spread, spread, n),
    )  # fmt: skip


@pytest.mark.parametrize("survey, bands", [("LSST", LSST_BANDS), ("DES", DES_BANDS)])
def test_stamps_match_galsim_draw_image(survey, bands):
    rng = np.random.default_rng(7)
    shapes = _shapes(rng, 3)
    flux = rng.uniform(1e3, 1e5, (3, len(bands)))
    renderer = StampRenderer(survey, bands, 45)
    ours = renderer.render(shapes, flux)
    for b, band in enumerate(bands):
        scene = galsim.Sum([galsim_profile(shapes, i, flux[i, b]) for i in range(3)])
        ref = galsim.Convolve(scene, psf_for(survey, band)).drawImage(nx=45, ny=45, scale=renderer.scale).array
        assert np.abs(ours[b] - ref).max() < 1e-3 * ref.max(), band
        assert ours[b].sum() == pytest.approx(ref.sum(), rel=3e-3)


def test_each_galaxy_alone_sums_to_the_scene():
    rng = np.random.default_rng(3)
    shapes, flux = _shapes(rng, 4), rng.uniform(1e3, 1e4, (4, 6))
    r = StampRenderer("LSST", LSST_BANDS, 45)
    t = r.galaxy_transforms(shapes)
    np.testing.assert_allclose(r.images_each(t, flux).sum(axis=0), r.images(t, flux), atol=1e-2, rtol=1e-4)


def test_flux_follows_magnitude_and_zeropoint():
    """A compact galaxy of magnitude m holds t_exp 10^(-0.4 (m - zp)) electrons (LSST) or 10^(-0.4 (m - 30))."""
    from survey_deblend.surveys import band_facts

    shapes = GalaxyShapes(*(np.array([v]) for v in (0.3, 0.15, 0.3, 0.1, 0.0, 0.0, 0.0)))
    mag = 22.0
    for survey, bands in (("LSST", LSST_BANDS), ("DES", DES_BANDS)):
        r = StampRenderer(survey, bands, 45)
        flux = np.array([[band_facts(survey, b).flux(mag) for b in bands]])
        sums = r.render(shapes, flux).sum(axis=(1, 2))
        sv = surveycodex.get_survey(survey)
        for b, band in enumerate(bands):
            f = sv.get_filter(band)
            if survey == "LSST":
                expected = f.full_exposure_time.to_value("s") * 10 ** (-0.4 * (mag - f.zeropoint.value))
            else:
                expected = 10 ** (-0.4 * (mag - 30.0))
            assert sums[b] == pytest.approx(expected, rel=5e-3), (survey, band)


def test_noise_per_band_matches_surveycodex_sky(blends):
    noise = blends.read("isolated", slice(None)) - blends.read("clean", slice(None))
    for b, band in enumerate(LSST_BANDS):
        expected = np.sqrt(mean_sky_level("LSST", band).value)  # electrons over the 10-year exposure
        assert noise[:, b].std() == pytest.approx(expected, rel=0.02), band
    des_noise = blends.read("des_isolated", slice(None)) - blends.read("des_clean", slice(None))
    sv = surveycodex.get_survey("DES")
    for b, band in enumerate(DES_BANDS):
        f = sv.get_filter(band)
        to_coadd = 10 ** (0.4 * (30.0 - f.zeropoint.value)) / f.full_exposure_time.to_value("s")
        expected = np.sqrt(mean_sky_level("DES", band).value) * to_coadd
        assert des_noise[:, b].std() == pytest.approx(expected, rel=0.02), band


def test_stamp_fluxes_match_truth_magnitudes(blends):
    """The central's clean stamp holds (nearly all of) the flux its magnitudes give, in both surveys."""
    clean, mag = blends.read("clean", slice(None)).astype(float), blends.read("mag", slice(None))
    sv = surveycodex.get_survey("LSST")
    expected = np.stack(
        [sv.get_filter(b).full_exposure_time.value * 10 ** (-0.4 * (mag[:, k] - sv.get_filter(b).zeropoint.value))
         for k, b in enumerate(LSST_BANDS)], axis=1,
    )  # fmt: skip
    ratio = clean.sum(axis=(2, 3)) / expected
    assert ratio.max() < 1.002 and np.median(ratio) > 0.98 and ratio.min() > 0.8
    des_ratio = blends.read("des_clean", slice(None)).astype(float).sum(axis=(2, 3)) / 10 ** (
        -0.4 * (blends.read("des_mag", slice(None)) - 30.0)
    )
    assert des_ratio.max() < 1.002 and np.median(des_ratio) > 0.98


@pytest.mark.parametrize("model", ["moffat", "kolmogorov"])
def test_psf_fwhm_comes_from_surveycodex(model):
    for survey, bands in (("LSST", LSST_BANDS), ("DES", DES_BANDS)):
        sv = surveycodex.get_survey(survey)
        for band in bands:
            expected = sv.get_filter(band).psf_fwhm.to_value("arcsec")
            assert psf_for(survey, band, model).calculateFWHM() == pytest.approx(expected, rel=0.01)
            assert psf_for(survey, band, model).flux == pytest.approx(1.0)

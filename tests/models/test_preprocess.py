"""Preprocessing: the Arcelin normalization and M_b, flux-conserving resampling, band mapping, units."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
import surveycodex

from survey_deblend import preprocess
from survey_deblend.errors import InputError
from survey_deblend.surveys import DES_BANDS, PhotometricFrame, pixel_scale


def test_normalize_is_tanh_arcsinh_per_band_and_inverts():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 50, (3, 6, 5, 5)).astype(np.float32)
    m_b = np.array([10.0, 20, 40, 80, 160, 320])
    out = preprocess.normalize(x, m_b, beta=2.5)
    expected = np.tanh(np.arcsinh(2.5 * x / m_b[None, :, None, None]))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32 and np.all(np.abs(out) < 1)
    np.testing.assert_allclose(preprocess.denormalize(out, m_b, 2.5), x, rtol=2e-3, atol=1e-2)


def test_mean_per_image_max_matches_definition_over_chunks():
    rng = np.random.default_rng(1)
    x = rng.exponential(5.0, (37, 6, 9, 9)).astype(np.float32)
    x[:, 2] *= 100
    expected = x.reshape(37, 6, -1).max(axis=2).mean(axis=0)
    np.testing.assert_allclose(preprocess.mean_per_image_max(x, chunk=10), expected, rtol=1e-6)
    empty = np.zeros((4, 6, 9, 9), np.float32)
    assert np.all(preprocess.mean_per_image_max(empty) == 1.0)


def _galaxy(size: int, scale: float, offset=(0.0, 0.0)) -> np.ndarray:
    gal = galsim.Exponential(half_light_radius=0.6, flux=1000.0).shear(g1=0.3, g2=-0.2)
    conv = galsim.Convolve(gal, galsim.Moffat(beta=3.5, fwhm=0.9))
    return conv.drawImage(nx=size, ny=size, scale=scale, offset=offset).array


def _centroid(img: np.ndarray, scale: float) -> tuple[float, float]:
    n = img.shape[0]
    coords = (np.arange(n) - (n - 1) / 2.0) * scale
    return float((img.sum(0) * coords).sum() / img.sum()), float((img.sum(1) * coords).sum() / img.sum())


def test_resampling_des_to_lsst_conserves_flux_and_centroid():
    des = np.stack([_galaxy(35, 0.2637, offset=(0.3, -0.4)), _galaxy(35, 0.2637)])[:, None]
    out = preprocess.resample_flux(des, 0.2637, 0.2, 45)
    assert out.shape == (2, 1, 45, 45)
    np.testing.assert_allclose(out.sum(axis=(2, 3)), des.sum(axis=(2, 3)), rtol=2e-3)
    for k in range(2):
        cx_in, cy_in = _centroid(des[k, 0], 0.2637)
        cx_out, cy_out = _centroid(out[k, 0], 0.2)
        assert abs(cx_out - cx_in) < 0.01 and abs(cy_out - cy_in) < 0.01  # arcsec
    # the offset galaxy moved by the right amount in arcsec
    assert _centroid(out[0, 0], 0.2)[0] == pytest.approx(0.3 * 0.2637, abs=0.01)
    # and the resampled image looks like the galaxy drawn directly at 0.2"
    direct = _galaxy(45, 0.2)
    assert np.abs(out[1, 0] - direct).sum() / direct.sum() < 0.1


def test_resampling_same_grid_is_identity():
    x = np.random.default_rng(2).random((2, 6, 45, 45)).astype(np.float32)
    assert preprocess.resample_flux(x, 0.2, 0.2, 45) is x


def test_band_mapping_des_into_ugrizy_with_mask():
    n = 3
    des = np.stack([np.full((n, 4, 4), v, np.float32) for v in (1, 2, 3, 4, 5)], axis=1)
    mask_in = np.ones((n, 5), bool)
    mask_in[1, 2] = False  # i missing for galaxy 1
    out, mask = preprocess.map_bands(des, ("g", "r", "i", "z", "Y"), mask_in)
    assert out.shape == (n, 6, 4, 4)
    assert np.all(out[:, 0] == 0) and not mask[:, 0].any()  # u absent
    np.testing.assert_array_equal(out[0, 1:, 0, 0], [1, 2, 3, 4, 5])  # Y -> y
    assert not mask[1, 3] and np.all(out[1, 3] == 0) and mask[0, 3]
    with pytest.raises(InputError, match="band 'w'"):
        preprocess.map_bands(des, ("g", "r", "i", "z", "w"))
    with pytest.raises(InputError, match="expected shape"):
        preprocess.map_bands(des[:, :4], ("g", "r", "i", "z", "Y"))


def test_flux_conversion_uses_surveycodex_facts():
    frame = PhotometricFrame("DES", DES_BANDS, pixel_scale("DES"), (30.0,) * 5)
    factors = preprocess.flux_conversion_factors(frame, "LSST")
    filt = surveycodex.get_survey("LSST").get_filter("i")
    expected_i = filt.full_exposure_time.value * 10 ** (-0.4 * (30.0 - filt.zeropoint.value))
    assert factors[3] == pytest.approx(expected_i)
    # a magnitude-22 source: 10**(-0.4*(22-30)) DES units -> LSST electrons over the full exposure
    lsst_counts = filt.full_exposure_time.value * 10 ** (-0.4 * (22 - filt.zeropoint.value))
    assert 10 ** (-0.4 * (22 - 30)) * factors[3] == pytest.approx(lsst_counts)
    assert factors[0] == 1.0  # u: absent from DES, its pixels are zero


def test_flux_conversion_reads_each_bands_own_zeropoint():
    """A tile whose i band has MAGZERO 31 holds 10**0.4 times more units per electron than zeropoint 30."""
    base = preprocess.flux_conversion_factors(PhotometricFrame("DES", ("r", "i"), 0.2637, (30.0, 30.0)), "LSST")
    mixed = preprocess.flux_conversion_factors(PhotometricFrame("DES", ("r", "i"), 0.2637, (30.0, 31.0)), "LSST")
    assert mixed[2] == base[2]
    assert mixed[3] == pytest.approx(base[3] * 10 ** -0.4)


def test_native_frame_only_for_the_model_survey():
    native = PhotometricFrame("LSST", ("u", "g", "r", "i", "z", "y"), 0.2, None)
    np.testing.assert_array_equal(preprocess.flux_conversion_factors(native, "LSST"), np.ones(6))
    with pytest.raises(InputError, match="DES pixels without zeropoints"):
        preprocess.flux_conversion_factors(PhotometricFrame("DES", DES_BANDS, 0.2637, None), "LSST")
    with pytest.raises(InputError, match="band 'Y' is not a LSST band"):
        preprocess.flux_conversion_factors(PhotometricFrame("LSST", ("g", "Y"), 0.2, None), "LSST")


def test_source_stamp_size_covers_model_field_and_is_odd():
    assert preprocess.source_stamp_size(0.2, 0.2, 45) == 45
    size = preprocess.source_stamp_size(0.2637, 0.2, 45)
    assert size % 2 == 1 and size * 0.2637 >= 45 * 0.2 and (size - 2) * 0.2637 < 45 * 0.2


def test_dynamic_range_matching_maps_median_max_per_band():
    rng = np.random.default_rng(3)
    x = rng.exponential(1.0, (50, 6, 9, 9)).astype(np.float32) * np.arange(1, 7)[None, :, None, None]
    mask = np.ones((50, 6), bool)
    mask[:, 0] = False
    target = np.array([5.0, 10, 20, 30, 40, 50])
    out, factors = preprocess.match_dynamic_range(x, mask, target)
    med = np.median(out.reshape(50, 6, -1).max(axis=2), axis=0)
    np.testing.assert_allclose(med[1:], target[1:], rtol=1e-5)
    assert factors[0] == 1.0

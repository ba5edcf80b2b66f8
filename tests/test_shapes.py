"""The ellipticity convention checked against GalSim on known shears."""

import galsim
import numpy as np
import pytest

from survey_deblend import shapes


def test_distortion_shear_round_trip_matches_galsim():
    rng = np.random.default_rng(1)
    g = rng.uniform(-0.6, 0.6, size=(50, 2))
    e1, e2 = shapes.shear_to_distortion(g[:, 0], g[:, 1])
    for (g1, g2), d1, d2 in zip(g, e1, e2, strict=True):
        s = galsim.Shear(g1=g1, g2=g2)
        assert d1 == pytest.approx(s.e1, abs=1e-12) and d2 == pytest.approx(s.e2, abs=1e-12)
    b1, b2 = shapes.distortion_to_shear(e1, e2)
    np.testing.assert_allclose(np.c_[b1, b2], g, atol=1e-12)


def test_compose_matches_galsim_shear_algebra():
    intrinsic, applied = galsim.Shear(g1=0.2, g2=-0.1), galsim.Shear(g1=0.03, g2=0.02)
    g1, g2 = shapes.compose_shear(intrinsic.g1, intrinsic.g2, applied.g1, applied.g2)
    expected = applied + intrinsic
    assert g1 == pytest.approx(expected.g1, abs=1e-12) and g2 == pytest.approx(expected.g2, abs=1e-12)
    # ... and equals the shape of the profile sheared twice, as measured by adaptive moments.
    prof = galsim.Gaussian(sigma=1.0).shear(intrinsic).shear(applied)
    img = prof.drawImage(nx=96, ny=96, scale=0.1, method="no_pixel")
    shape = galsim.hsm.FindAdaptiveMom(img).observed_shape
    assert shape.g1 == pytest.approx(g1, abs=1e-4) and shape.g2 == pytest.approx(g2, abs=1e-4)


def test_rotation_is_spin_two():
    e1, e2 = shapes.rotate_ellipticity(0.3, 0.0, np.pi / 2)
    assert e1 == pytest.approx(-0.3) and e2 == pytest.approx(0.0, abs=1e-12)
    e1, e2 = shapes.rotate_ellipticity(0.3, 0.0, np.pi / 4)
    assert e1 == pytest.approx(0.0, abs=1e-12) and e2 == pytest.approx(0.3)


def test_e1_positive_is_elongated_along_x():
    img = galsim.Gaussian(sigma=1.0).shear(g1=0.3, g2=0.0).drawImage(nx=64, ny=64, scale=0.2).array
    # numpy arrays are [y, x]: the profile is wider along axis 1 (x).
    width_x = (img.sum(axis=0) > img.sum(axis=0).max() / 2).sum()
    width_y = (img.sum(axis=1) > img.sum(axis=1).max() / 2).sum()
    assert width_x > width_y


@pytest.mark.parametrize("method", ["REGAUSS", "KSB"])
def test_hsm_recovers_known_shear_through_psf(method):
    g1, g2 = 0.12, -0.07
    psf = galsim.Moffat(beta=3.5, fwhm=0.7)
    gal = galsim.Exponential(half_light_radius=0.8, flux=1e5).shear(g1=g1, g2=g2)
    img = galsim.Convolve(gal, psf).drawImage(nx=64, ny=64, scale=0.2).array
    psf_img = psf.drawImage(nx=64, ny=64, scale=0.2).array
    res = shapes.measure_hsm(img, psf_img, 0.2, method=method)
    assert res.ok
    tol = 0.01 if method == "REGAUSS" else 0.03
    assert res.g1 == pytest.approx(g1, abs=tol) and res.g2 == pytest.approx(g2, abs=tol)


def test_hsm_failure_is_nan_not_exception():
    res = shapes.measure_hsm(np.zeros((45, 45)), np.ones((45, 45)), 0.2)
    assert not res.ok and np.isnan(res.g1)

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


def _gaussian(sigma_major: float, sigma_minor: float, angle_rad: float, n: int = 64) -> np.ndarray:
    """An elliptical Gaussian drawn with numpy alone (no GalSim): array[y, x], major axis at ``angle_rad`` from +x
    towards +y. Its shear-convention ellipticity is (a - b) / (a + b) along that angle."""
    y, x = np.indices((n, n), dtype=float) - (n - 1) / 2
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    u, v = c * x + s * y, -s * x + c * y
    return np.exp(-0.5 * ((u / sigma_major) ** 2 + (v / sigma_minor) ** 2))


@pytest.mark.parametrize(
    "angle_deg, e1, e2",
    [(0, 0.2, 0.0), (90, -0.2, 0.0), (45, 0.0, 0.2), (135, 0.0, -0.2)],
)
def test_e1_positive_is_elongated_along_x(angle_deg, e1, e2):
    """The project's measurement on a numpy-drawn stamp: elongated along x (axis 1) is e1 > 0, along the x = y
    diagonal e2 > 0; a transposed or mirrored array in ``shapes`` would flip a sign here."""
    psf = _gaussian(1.0, 1.0, 0.0)
    sigma_psf2 = 1.0
    image = _gaussian(np.sqrt(9.0 + sigma_psf2), np.sqrt(4.0 + sigma_psf2), np.radians(angle_deg))  # 3:2 galaxy
    res = shapes.measure_hsm(image, psf, 0.2)
    assert res.ok
    assert res.g1 == pytest.approx(e1, abs=0.01) and res.g2 == pytest.approx(e2, abs=0.01)
    # and the same frame as the spin-2 rotation the project uses for labels
    r1, r2 = shapes.rotate_ellipticity(0.2, 0.0, np.radians(angle_deg))
    assert r1 == pytest.approx(e1, abs=1e-12) and r2 == pytest.approx(e2, abs=1e-12)


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

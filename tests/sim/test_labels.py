"""The label convention against GalSim's PSF-corrected HSM, and the orientation of stamps."""

from __future__ import annotations

import numpy as np
import pytest

from survey_deblend.shapes import compose_shear, measure_hsm
from survey_deblend.sim.population import draw_population
from survey_deblend.sim.psf import psf_image
from survey_deblend.sim.render import GalaxyShapes, StampRenderer
from survey_deblend.surveys import LSST_BANDS


def _galaxy(e_int, shear, bulge_frac=0.0, hlr=0.9):
    pop = draw_population(np.random.default_rng(0), 1, 21.0, 21.5)
    one = np.ones(1)
    return pop.with_(
        e1_intrinsic=e_int[0] * one, e2_intrinsic=e_int[1] * one, g1_shear=shear[0] * one, g2_shear=shear[1] * one,
        bulge_frac=bulge_frac * one, disk_hlr=hlr * one, bulge_hlr=0.5 * hlr * one,
    )  # fmt: skip


@pytest.mark.parametrize(
    "e_int, shear", [((0.2, -0.1), (0.04, 0.03)), ((-0.3, 0.25), (-0.05, 0.0)), ((0.0, 0.0), (0.02, -0.045))]
)
def test_label_is_what_psf_corrected_hsm_measures(e_int, shear):
    """High-SNR isolated sheared galaxy through a known PSF: HSM (distortion -> shear) recovers the label."""
    pop = _galaxy(e_int, shear)
    label = pop.label
    assert label == pytest.approx(compose_shear(*e_int, *shear))
    r = StampRenderer("LSST", LSST_BANDS, 45)
    stamp = r.render(pop.shapes([0.05], [-0.08]), pop.flux("LSST", LSST_BANDS))
    i = LSST_BANDS.index("i")
    sigma = 1e-4 * stamp[i].max()  # SNR of thousands
    noisy = stamp[i] + np.random.default_rng(1).normal(0.0, sigma, stamp[i].shape)
    res = measure_hsm(noisy, psf_image("LSST", "i", 45).array, r.scale, sky_var=sigma**2)
    assert res.ok
    assert res.g1 == pytest.approx(label[0][0], abs=0.01) and res.g2 == pytest.approx(label[1][0], abs=0.01)


def _moments(img):
    y, x = np.indices(img.shape) - img.shape[0] // 2
    w = img / img.sum()
    cx, cy = (w * x).sum(), (w * y).sum()
    return ((w * (x - cx) ** 2).sum(), (w * (y - cy) ** 2).sum(), (w * (x - cx) * (y - cy)).sum(), cx, cy)


def test_positive_e1_is_elongated_along_x_and_e2_along_the_diagonal():
    r = StampRenderer("LSST", ("i",), 45)
    flux = np.array([[1e5]])
    base = dict(disk_hlr=np.array([0.8]), bulge_hlr=np.array([0.3]), bulge_frac=np.array([0.2]))
    along_x = r.render(GalaxyShapes(**base, g1=np.array([0.5]), g2=np.zeros(1), x=np.zeros(1), y=np.zeros(1)), flux)
    ixx, iyy, _, cx, cy = _moments(along_x[0])
    assert ixx > 2 * iyy and abs(cx) < 1e-3 and abs(cy) < 1e-3  # array [y, x]: x is the column, +x West
    diag = r.render(GalaxyShapes(**base, g1=np.zeros(1), g2=np.array([0.5]), x=np.zeros(1), y=np.zeros(1)), flux)
    ixx, iyy, ixy, _, _ = _moments(diag[0])
    assert ixy > 0.3 * (ixx + iyy) / 2 and ixx == pytest.approx(iyy, rel=1e-3)
    shifted = r.render(
        GalaxyShapes(**base, g1=np.zeros(1), g2=np.zeros(1), x=np.array([0.4]), y=np.array([-0.2])), flux
    )
    _, _, _, cx, cy = _moments(shifted[0])
    assert cx == pytest.approx(2.0, abs=0.02) and cy == pytest.approx(-1.0, abs=0.02)  # arcsec / 0.2" pixels


def test_central_sits_at_the_stamp_centre(blends):
    clean = blends.read("clean", slice(None))[:, LSST_BANDS.index("i")].astype(float)
    for img in clean:
        *_, cx, cy = _moments(img)
        assert abs(cx) <= 0.6 and abs(cy) <= 0.6

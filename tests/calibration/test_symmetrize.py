"""The 90-degree symmetrized metacal estimator: the turn maps e -> -e (either direction, +x = West), a constant
additive bias of the estimator cancels exactly, and the response is that of the symmetrized estimator."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
import torch

from survey_deblend.calibration import PSFModel, metacal_response
from survey_deblend.calibration.response import symmetrize_mode
from survey_deblend.errors import InputError
from survey_deblend.shapes import measure_hsm_batch

S, SCALE, FWHM = 45, 0.2, 0.7
E_TRUE = [(0.25, -0.1), (-0.15, 0.3), (0.05, 0.2)]


def _stamps(n_bands: int = 1) -> np.ndarray:
    """Gaussian-PSF-convolved exponential galaxies of known shear-convention shape, off-centre by a pixel."""
    psf = galsim.Gaussian(fwhm=FWHM)
    gals = [galsim.Exponential(half_light_radius=0.45).shear(g1=a, g2=b).shift(0.2, -0.1).withFlux(1e4)
            for a, b in E_TRUE]  # fmt: skip
    one = [galsim.Convolve(g, psf).drawImage(nx=S, ny=S, scale=SCALE).array for g in gals]
    return np.repeat(np.array(one, dtype=np.float32)[:, None], n_bands, axis=1)


def _psf(n: int, bands: int = 1) -> PSFModel:
    return PSFModel(np.full((n, bands), FWHM), np.zeros((n, bands)), np.zeros((n, bands)), profile="gaussian")


TARGET = _psf(1).galsim_target(0, 0, 0.01).drawImage(nx=S, ny=S, scale=SCALE).array


def _hsm(stack: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """REGAUSS shapes (PSF-corrected for the round target of the metacal images)."""
    out = np.array([measure_hsm_batch(img[None, 0], TARGET, SCALE) for img in stack])
    return out[:, 0, 0], out[:, 1, 0]


@pytest.mark.parametrize("k", [1, -1])
def test_a_quarter_turn_either_way_maps_e_to_minus_e(k):
    """HSM on a GalSim galaxy of known e, and on the array turned by +-90 degrees: e and -e."""
    images = _stamps()
    psf_img = galsim.Gaussian(fwhm=FWHM).drawImage(nx=S, ny=S, scale=SCALE).array
    e = np.array([np.array(measure_hsm_batch(img, psf_img, SCALE))[:, 0] for img in images])
    turned = np.array([np.array(measure_hsm_batch(np.rot90(img, k, axes=(-2, -1)).copy(), psf_img, SCALE))[:, 0]
                       for img in images])  # fmt: skip
    np.testing.assert_allclose(e, E_TRUE, atol=0.01)  # REGAUSS recovers the shape on the original stamp
    np.testing.assert_allclose(turned, -e, atol=1e-5)
    t = torch.rot90(torch.as_tensor(images), k, dims=(-2, -1)).numpy()  # the turn metacal_response uses
    np.testing.assert_array_equal(t, np.rot90(images, k, axes=(-2, -1)))


def test_the_network_sees_a_turned_galaxy_with_minus_its_shape(tmp_path):
    """The shipped network on simulated LSST blends (round PSF, so a turned stamp is a valid stamp) and on their
    quarter turns: e(rot90 x) ~ -e(x) galaxy by galaxy (equivariant only approximately: a few 0.01 of the
    network's e of rms ~0.2; its constant part is what the symmetrization cancels)."""
    from survey_deblend.inference import Predictor
    from survey_deblend.sim.dataset import open_dataset
    from survey_deblend.sim.lsst import make_lsst_dataset

    ds = open_dataset(make_lsst_dataset(tmp_path / "b", n=48, seed=4))
    images = ds.read("blend", slice(None))
    keep = ds.read("snr", slice(None)) > 20
    predictor = Predictor.from_checkpoint(device="cpu")
    cols = ["e1_pred", "e2_pred"]
    e = predictor.predict(images, "ugrizy", SCALE, measure_recon=False)[cols].to_numpy()[keep]
    turned = np.ascontiguousarray(np.rot90(images, 1, axes=(-2, -1)))
    e_turn = predictor.predict(turned, "ugrizy", SCALE, measure_recon=False)[cols].to_numpy()[keep]
    truth = np.stack([ds.read("e1", slice(None)), ds.read("e2", slice(None))], 1)[keep]
    assert keep.sum() >= 10 and np.corrcoef(e.ravel(), truth.ravel())[0, 1] > 0.7
    assert np.corrcoef(e.ravel(), -e_turn.ravel())[0, 1] > 0.9
    assert np.sqrt(np.mean((e + e_turn) ** 2)) < 0.4 * np.sqrt(np.mean(e**2))


@pytest.mark.parametrize("mode", ["noshear", "all"])
def test_symmetrize_cancels_an_injected_constant_bias_exactly(mode):
    """The estimator plus a constant c: the symmetrized e and R equal those without c (to rounding), while the
    plain estimator carries c into e; R never sees a constant. On HSM (equivariant) e_sym equals e."""
    images = _stamps()
    n, c = len(images), np.array([0.013, -0.021])

    def biased(stack, mask):
        e1, e2 = _hsm(stack, mask)
        return e1 + c[0], e2 + c[1]

    psf = _psf(n)
    clean = metacal_response(images, psf, SCALE, _hsm, fixnoise=False, symmetrize=mode)
    sym = metacal_response(images, psf, SCALE, biased, fixnoise=False, symmetrize=mode)
    plain = metacal_response(images, psf, SCALE, biased, fixnoise=False)
    np.testing.assert_allclose(np.stack([sym.e1, sym.e2], 1), np.stack([clean.e1, clean.e2], 1), atol=1e-12)
    np.testing.assert_allclose(sym.R, clean.R, atol=1e-9)
    np.testing.assert_allclose(np.stack([plain.e1, plain.e2], 1) - c, np.stack([clean.e1, clean.e2], 1), atol=2e-4)
    np.testing.assert_allclose(plain.R, clean.R, atol=0.02)
    assert sym.symmetrize == mode and plain.symmetrize == "none"
    turned = [0] if mode == "noshear" else [0, 1, 2, 3, 4]
    assert np.all(np.isfinite(sym.rotated[turned])) and np.all(np.isnan(np.delete(sym.rotated, turned, 0)))


def test_symmetrize_runs_the_turned_images_in_the_same_call_and_checks_its_option():
    images, calls = _stamps(), []

    def shapes(stack, mask):
        calls.append(len(stack))
        return _hsm(stack, mask)

    metacal_response(images, _psf(3), SCALE, shapes, fixnoise=False, symmetrize=True)
    metacal_response(images, _psf(3), SCALE, shapes, fixnoise=False, symmetrize="all")
    metacal_response(images, _psf(3), SCALE, shapes, fixnoise=False)
    assert calls == [18, 30, 15]
    assert symmetrize_mode(False) == "none" and symmetrize_mode(True) == "noshear"
    with pytest.raises(InputError, match="symmetrize"):
        metacal_response(images, _psf(3), SCALE, shapes, symmetrize="sideways")

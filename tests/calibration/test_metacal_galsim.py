"""The metacal images against GalSim, the reference implementation of the same operations.

Reference per stamp and band: ``InterpolatedImage`` (Lanczos 15, as ngmix) -> ``Convolve`` with
``Deconvolve(PSF x Pixel)`` -> ``shear`` -> ``Convolve`` with the round dilated target and the pixel, drawn
without another pixel. Galaxies are bulge + disk, intrinsically sheared and off-centre (no square symmetry);
PSFs round and elliptical Moffats, one per band.
"""

from __future__ import annotations

import galsim
import numpy as np
import pytest
import torch

from survey_deblend.calibration import PSFModel, metacal_images, metacal_shears

S, SCALE, DELTA = 45, 0.2, 0.01
GSP = galsim.GSParams(maxk_threshold=1e-4, folding_threshold=1e-3)
# (PSF FWHM, g1, g2) per band; galaxy (hlr, g1, g2, dx, dy) per stamp
PSFS = [[(0.8, 0.0, 0.0), (0.7, 0.06, -0.04)], [(1.0, -0.05, 0.08), (0.75, 0.0, 0.1)]]
GALAXIES = [(0.5, 0.2, -0.1, 0.13, -0.21), (0.35, -0.3, 0.25, 0.3, 0.1)]


def _galaxy(hlr, g1, g2, dx, dy):
    prof = galsim.Exponential(half_light_radius=hlr) * 0.7 + galsim.DeVaucouleurs(half_light_radius=0.4 * hlr) * 0.3
    return prof.shear(g1=g1, g2=g2).shift(dx, dy).withFlux(1000.0)


@pytest.fixture(scope="module")
def stamps():
    psf = PSFModel(*(np.array([[p[k] for p in row] for row in PSFS]) for k in range(3)))
    images = np.array(
        [
            [galsim.Convolve(_galaxy(*gal), psf.galsim_psf(i, b), gsparams=GSP).drawImage(nx=S, ny=S, scale=SCALE).array
             for b in range(len(PSFS[i]))]
            for i, gal in enumerate(GALAXIES)
        ],
        dtype=np.float32,
    )  # fmt: skip
    return images, psf


def _galsim_metacal(image: np.ndarray, psf: PSFModel, i: int, b: int) -> np.ndarray:
    interp = galsim.InterpolatedImage(galsim.Image(image.astype(np.float64), scale=SCALE),
                                      x_interpolant=galsim.Lanczos(15), gsparams=GSP)  # fmt: skip
    deconvolved = galsim.Convolve(interp, galsim.Deconvolve(galsim.Convolve(psf.galsim_psf(i, b), galsim.Pixel(SCALE))))
    target = galsim.Convolve(psf.galsim_target(i, b, DELTA), galsim.Pixel(SCALE))
    out = []
    for g1, g2 in metacal_shears(DELTA):
        final = galsim.Convolve(deconvolved.shear(g1=g1, g2=g2), target, gsparams=GSP)
        out.append(final.drawImage(nx=S, ny=S, scale=SCALE, method="no_pixel").array)
    return np.array(out)


@pytest.fixture(scope="module")
def reference(stamps):
    images, psf = stamps
    return np.stack([np.stack([_galsim_metacal(images[i, b], psf, i, b) for b in range(images.shape[1])], 1)
                     for i in range(len(images))], 1)  # (5, N, B, S, S)  # fmt: skip


@pytest.mark.parametrize("order", [1, 2])
def test_sheared_images_equal_galsim_to_1e3_of_the_peak(stamps, reference, order):
    images, psf = stamps
    ours = metacal_images(images, psf, SCALE, delta=DELTA, fixnoise=False, order=order).numpy()
    peak = reference.max(axis=(0, 3, 4), keepdims=True)
    err = np.abs(ours - reference) / peak
    assert err.max() < 1e-3, err.max(axis=(2, 3, 4))
    # the images differ from one shear to the next by ~1e-2 of the peak, so the agreement is not trivial
    assert np.abs(reference[1] - reference[2]).max() / peak.max() > 5e-3
    # the response lives in (1p - 1m): it agrees to a percent of its own size
    diff_ref, diff = reference[1] - reference[2], ours[1] - ours[2]
    assert np.abs(diff - diff_ref).max() < 0.02 * np.abs(diff_ref).max()
    diff_ref, diff = reference[3] - reference[4], ours[3] - ours[4]
    assert np.abs(diff - diff_ref).max() < 0.02 * np.abs(diff_ref).max()


def test_fixnoise_is_the_noise_rotated_operated_and_rotated_back(stamps):
    """The added field equals the literal recipe: rot90 -> the stamp's operations (its PSF) -> rotate back."""
    _, psf = stamps
    noise = np.random.default_rng(4).normal(0.0, 1.0, (2, 2, S, S)).astype(np.float32)
    zeros = np.zeros_like(noise)
    added = metacal_images(zeros, psf, SCALE, delta=DELTA, noise=noise).numpy()
    rotated = np.rot90(noise, 1, axes=(-2, -1)).copy()
    literal = metacal_images(rotated, psf, SCALE, delta=DELTA, fixnoise=False).numpy()
    literal = np.rot90(literal, -1, axes=(-2, -1))
    np.testing.assert_allclose(added, literal, atol=2e-5 * np.abs(literal).max())
    assert np.abs(added[1] - added[2]).max() > 1e-3  # the sheared noise differs between 1p and 1m


def test_absent_band_stays_zero_and_noise_has_the_stamp_level(stamps):
    images, psf = stamps
    images = images.copy()
    images[:, 1] = 0.0
    sigma = np.array([[2.0, 0.0], [2.0, 0.0]])
    out = metacal_images(images, psf, SCALE, noise_sigma=sigma, seed=3).numpy()
    assert np.all(out[:, :, 1] == 0.0)
    noise_only = metacal_images(np.zeros_like(images), psf, SCALE, noise_sigma=sigma, seed=3).numpy()
    level = noise_only[:, :, 0, 5:-5, 5:-5].std()
    assert 0.8 < level < 2.0  # the reconvolution smooths (drops high-k modes), never amplifies
    np.testing.assert_allclose(out - noise_only, metacal_images(images, psf, SCALE, fixnoise=False).numpy(),
                               atol=1e-3)  # fmt: skip


@pytest.mark.gpu
def test_same_numbers_on_a_cuda_device(stamps):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    images, psf = stamps
    noise = np.random.default_rng(0).normal(size=images.shape).astype(np.float32)
    cpu = metacal_images(images, psf, SCALE, noise=noise, device="cpu").numpy()
    gpu = metacal_images(torch.from_numpy(images).cuda(), psf, SCALE, noise=noise).cpu().numpy()
    np.testing.assert_allclose(gpu, cpu, atol=1e-4 * np.abs(cpu).max())

"""Metacalibration's margin: the cut is sheared wider than the model's stamp and cropped after.

The physics: the metacal image of a scene should be the image of the sheared scene seen through the dilated
target PSF (rendered directly by GalSim here), out to the model stamp's edge. A stamp sheared on its own pulls
zeros in at its edges (and loses a neighbour's light that the shear moves in); a margin of real pixels does not.
The run: ``calibrate_batch`` on a batch with ``margin_pix`` is the metacal of the whole cut, cropped, through the
published estimator; the model's own prediction reads the core alone.
"""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from survey_deblend.calibration import PSFModel, metacal_images, metacal_shears
from survey_deblend.calibration.batch import calibrate_batch
from survey_deblend.config.run import ModelConfig
from survey_deblend.cutouts.base import CutoutBatch, crop_margin
from survey_deblend.inference import Predictor
from survey_deblend.pipeline.tasks import margin_pixels
from survey_deblend.surveys import DES_BANDS, stamp_frame

S, SCALE, DELTA = 45, 0.2, 0.01
MARGIN = margin_pixels(ModelConfig().metacal_margin_arcsec, SCALE)  # the run's
GSP = galsim.GSParams(maxk_threshold=1e-4, folding_threshold=1e-3)
PSF = PSFModel(np.array([[0.8]]), np.array([[0.0]]), np.array([[0.0]]))


def _scene() -> galsim.GSObject:
    """A central galaxy and a brighter neighbour centred just outside the model stamp's east-west edge."""
    central = galsim.Exponential(half_light_radius=0.5, flux=1e3).shear(g1=0.2, g2=-0.1)
    neighbour = galsim.Exponential(half_light_radius=0.6, flux=3e3).shift(0.2 * 23.5, 0.6)
    return central + neighbour


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    """(5, S, S): the scene sheared by each metacal shear, seen through the dilated target PSF and the pixel."""
    target = galsim.Convolve(PSF.galsim_target(0, 0, DELTA), galsim.Pixel(SCALE))
    return np.array([galsim.Convolve(_scene().shear(g1=g1, g2=g2), target, gsparams=GSP)
                     .drawImage(nx=S, ny=S, scale=SCALE, method="no_pixel").array
                     for g1, g2 in metacal_shears(DELTA)])  # fmt: skip


def _metacal(pad: int) -> np.ndarray:
    """(5, S, S): metacal of the scene cut ``pad`` pixels wider on each side, cropped to the model stamp."""
    size = S + 2 * pad
    image = galsim.Convolve(_scene(), PSF.galsim_psf(0, 0), gsparams=GSP).drawImage(nx=size, ny=size, scale=SCALE)
    out = metacal_images(image.array[None, None].astype(np.float32), PSF, SCALE, fixnoise=False, order=2)
    return crop_margin(out[:, 0, 0].numpy(), pad)


def test_a_margin_makes_the_sheared_images_those_of_the_sheared_scene(truth):
    """A bright neighbour straddles the model stamp's edge: the worst case. Measured errors (of the peak; of the
    largest 1p - 1m difference, i.e. the shear's own signal), model stamp's outer 4 pixels / interior: margin 0:
    0.27 / 0.026 and 3.8 / 0.43; 8 pixels: 0.0017 / 0.0011 and 0.030 / 0.019; 12 pixels: 0.0002 / 0.0001 and
    0.0045 / 0.0027 (the wide cut's own edge still cuts the neighbour's wings)."""
    peak = truth.max()
    signal = truth[1] - truth[2]  # what the response reads
    edge = np.ones((S, S), bool)
    edge[4:-4, 4:-4] = False
    image_error, signal_error = {}, {}
    for pad in (0, MARGIN):
        images = _metacal(pad)
        image_error[pad] = np.abs(images - truth).max() / peak
        signal_error[pad] = np.abs(images[1] - images[2] - signal).max() / np.abs(signal).max()
    assert image_error[MARGIN] < 3e-3 and signal_error[MARGIN] < 0.06, (image_error, signal_error)
    # without the margin the stamp's edges are wrong, and the shear's signal there is mostly wrong
    assert image_error[0] > 0.1 and signal_error[0] > 1.0, (image_error, signal_error)


def test_margin_pixels_cover_the_margin_in_whole_source_pixels():
    assert margin_pixels(1.6, 0.2) == 8 and margin_pixels(1.6, 0.263) == 7 and margin_pixels(0.0, 0.263) == 0
    assert margin_pixels(2.4, 0.2) == 12 and margin_pixels(2.4, 0.263) == 10


@pytest.fixture(scope="module")
def des_batch() -> tuple[CutoutBatch, np.ndarray, Predictor]:
    """Three noisy DES stamps with neighbours cut with a margin of 7 pixels, their PSF columns, the Predictor."""
    frame = stamp_frame("DES")
    predictor = Predictor.from_checkpoint(None, device="cpu", batch_size=64)
    core = predictor.source_stamp_size(frame.pixel_scale_arcsec)
    size = core + 14
    rng = np.random.default_rng(3)
    psf = galsim.Moffat(beta=3.5, fwhm=0.95)
    images = np.empty((3, len(DES_BANDS), size, size), dtype=np.float32)
    for i in range(3):
        scene = galsim.Exponential(half_light_radius=0.6, flux=5e3).shear(g1=0.1 * i, g2=-0.05)
        scene += galsim.Exponential(half_light_radius=0.5, flux=4e3).shift(frame.pixel_scale_arcsec * core / 2, 0.3)
        img = galsim.Convolve(scene, psf).drawImage(nx=size, ny=size, scale=frame.pixel_scale_arcsec).array
        images[i] = img[None] * np.array([0.5, 0.8, 1.0, 1.1, 0.9])[:, None, None]
    images += rng.normal(0.0, 3.0, images.shape).astype(np.float32)
    batch = CutoutBatch(images=images, band_mask=np.ones((3, len(DES_BANDS)), bool), status=np.array(["ok"] * 3),
                        frame=frame, margin_pix=7)  # fmt: skip
    psf_columns = np.column_stack([np.full(3, 0.95 / frame.pixel_scale_arcsec), np.zeros(3), np.zeros(3)])
    return batch, psf_columns, predictor


def test_calibrate_batch_shears_the_whole_cut_and_the_model_reads_the_core(des_batch):
    from survey_deblend.calibration import im3shape_psf_model
    from survey_deblend.calibration.batch import batch_noise_sigma
    from survey_deblend.calibration.noise import seeded_noise

    batch, psf_columns, predictor = des_batch
    ids = np.array([11, 12, 13])
    core = batch.core()
    assert core.stamp_size == batch.stamp_size - 14 and core.margin_pix == 0
    np.testing.assert_array_equal(core.images, batch.images[..., 7:-7, 7:-7])
    cal, ok = calibrate_batch(predictor, batch, psf_columns, ids, symmetrize=False)
    assert ok.all() and np.isfinite(cal.to_numpy()).all()
    # by hand: the five images of the whole cut (same fixnoise field), cropped, through predict_e
    noise = seeded_noise(ids, batch_noise_sigma(batch, np.arange(3)), batch.stamp_size)
    psf = im3shape_psf_model(*psf_columns.T, bands=batch.bands)
    five = crop_margin(metacal_images(batch.images, psf, batch.pixel_scale_arcsec, noise=noise, order=2).numpy(), 7)
    e = [predictor.predict_e(np.ascontiguousarray(five[k]), batch.frame, batch.band_mask) for k in range(5)]
    np.testing.assert_allclose(cal[["e1_mcal", "e2_mcal"]], e[0], atol=1e-5)
    np.testing.assert_allclose(cal["r11"], (e[1][:, 0] - e[2][:, 0]) / (2 * DELTA), atol=1e-3)
    np.testing.assert_allclose(cal["r22"], (e[3][:, 1] - e[4][:, 1]) / (2 * DELTA), atol=1e-3)

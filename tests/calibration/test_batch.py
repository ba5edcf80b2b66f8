"""``calibrate_batch``: the calibration columns of a run's CutoutBatch through the shipped Predictor (DES frame).

What the run relies on: every galaxy's columns depend on its own stamp, PSF and id only (not on the batch it
lands in), rows without a usable PSF or stamp stay null, the source's noise level wins over the border estimate,
and R is the response of the published ``e_pred`` (a finite difference of ``Predictor.predict_e``)."""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from survey_deblend.calibration.batch import CALIBRATION_COLUMNS, batch_noise_sigma, calibrate_batch
from survey_deblend.cutouts.base import CutoutBatch
from survey_deblend.inference import Predictor
from survey_deblend.surveys import DES_BANDS, stamp_frame

N = 8
FRAME = stamp_frame("DES")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(None, device="cpu", batch_size=64)


@pytest.fixture(scope="module")
def stamps(predictor) -> np.ndarray:
    """Sheared exponential galaxies through the DES r PSF, in coadd units with sky noise of sigma 3."""
    size = predictor.source_stamp_size(FRAME.pixel_scale_arcsec)
    rng = np.random.default_rng(5)
    out = np.empty((N, len(DES_BANDS), size, size), dtype=np.float32)
    psf = galsim.Moffat(beta=3.5, fwhm=0.95)
    for i in range(N):
        gal = galsim.Exponential(half_light_radius=rng.uniform(0.4, 0.9), flux=rng.uniform(2e3, 8e3))
        gal = gal.shear(g1=rng.uniform(-0.3, 0.3), g2=rng.uniform(-0.3, 0.3))
        img = galsim.Convolve(gal, psf).drawImage(nx=size, ny=size, scale=FRAME.pixel_scale_arcsec).array
        out[i] = img[None] * np.array([0.5, 0.8, 1.0, 1.1, 0.9])[:, None, None]
    return out + rng.normal(0.0, 3.0, out.shape).astype(np.float32)


def _batch(images: np.ndarray, status: list[str] | None = None) -> CutoutBatch:
    status = ["ok"] * len(images) if status is None else status
    return CutoutBatch(images=images.copy(), band_mask=np.ones(images.shape[:2], bool), status=np.array(status),
                       frame=FRAME)  # fmt: skip


def _psf(n: int) -> np.ndarray:
    fwhm_pix = 0.95 / FRAME.pixel_scale_arcsec
    return np.column_stack([np.full(n, fwhm_pix), np.full(n, 0.01), np.full(n, -0.02)])


IDS = 3_000_000_000 + 7 * np.arange(N)


def test_columns_follow_the_galaxy_not_its_batch(predictor, stamps):
    cal, ok = calibrate_batch(predictor, _batch(stamps), _psf(N), IDS)
    assert list(cal.columns) == list(CALIBRATION_COLUMNS) and ok.all()
    assert np.isfinite(cal.to_numpy()).all()
    order = np.random.default_rng(0).permutation(N)
    shuffled, _ = calibrate_batch(predictor, _batch(stamps[order]), _psf(N), IDS[order], chunk=3)
    np.testing.assert_allclose(shuffled[["e1_mcal", "e2_mcal"]].to_numpy(), cal.iloc[order][["e1_mcal", "e2_mcal"]],
                               atol=2e-6)  # fmt: skip
    np.testing.assert_allclose(shuffled.to_numpy(), cal.iloc[order].to_numpy(), atol=2e-4)
    # another id is another fixnoise field: the noshear shapes move
    other, _ = calibrate_batch(predictor, _batch(stamps), _psf(N), IDS + 1)
    assert np.abs(other["e1_mcal"] - cal["e1_mcal"]).max() > 1e-4


def test_response_is_the_finite_difference_of_predict_e(predictor, stamps):
    """Without noise (sigma 0 given by the source) R11 is [e1(+d) - e1(-d)] / 2d of the published estimator."""
    from survey_deblend.calibration import im3shape_psf_model, metacal_images

    batch = _batch(stamps[:3])
    batch.noise_sigma = np.full((3, len(DES_BANDS)), 1e-30)  # the source's own level (faults2's CutoutBatch field)
    cal, _ = calibrate_batch(predictor, batch, _psf(3), IDS[:3], symmetrize=False)
    psf = im3shape_psf_model(*_psf(3).T, bands=DES_BANDS)
    images = metacal_images(stamps[:3], psf, FRAME.pixel_scale_arcsec, noise=np.zeros_like(stamps[:3])).numpy()
    e = [predictor.predict_e(images[k], FRAME, np.ones((3, 5), bool)) for k in range(5)]
    np.testing.assert_allclose(cal["e1_mcal"], e[0][:, 0], atol=1e-4)
    np.testing.assert_allclose(cal["r11"], (e[1][:, 0] - e[2][:, 0]) / 0.02, atol=2e-2)
    np.testing.assert_allclose(cal["r22"], (e[3][:, 1] - e[4][:, 1]) / 0.02, atol=2e-2)
    # symmetrized (the run's default): the noshear shape is [e(x) - e(x turned by 90 degrees)] / 2, R is the same
    sym, _ = calibrate_batch(predictor, batch, _psf(3), IDS[:3])
    turned = predictor.predict_e(np.rot90(images[0], 1, axes=(-2, -1)).copy(), FRAME, np.ones((3, 5), bool))
    np.testing.assert_allclose(sym[["e1_mcal", "e2_mcal"]], 0.5 * (e[0] - turned), atol=1e-4)
    np.testing.assert_allclose(sym[["r11", "r12", "r21", "r22"]], cal[["r11", "r12", "r21", "r22"]], atol=1e-5)


class _Biased:
    """The shipped Predictor with a constant additive bias on its e (what symmetrization must cancel)."""

    def __init__(self, predictor: Predictor, c: tuple[float, float]) -> None:
        self._predictor, self._c = predictor, np.asarray(c)
        self.batch_size, self.device = predictor.batch_size, predictor.device

    def predict_e(self, *args, **kwargs) -> np.ndarray:
        return self._predictor.predict_e(*args, **kwargs) + self._c


def test_symmetrized_shape_cancels_an_additive_bias_and_the_plain_one_does_not(predictor, stamps):
    batch = _batch(stamps)
    biased = _Biased(predictor, (0.03, -0.02))
    for symmetrize, moved in ((True, 0.0), (False, 0.03)):
        clean, _ = calibrate_batch(predictor, batch, _psf(N), IDS, symmetrize=symmetrize)
        shifted, _ = calibrate_batch(biased, batch, _psf(N), IDS, symmetrize=symmetrize)
        np.testing.assert_allclose(shifted["e1_mcal"] - clean["e1_mcal"], moved, atol=1e-6)
        np.testing.assert_allclose(shifted[["r11", "r22"]], clean[["r11", "r22"]], atol=1e-6)


def test_source_noise_level_wins_over_the_border_estimate(predictor, stamps):
    batch = _batch(stamps)
    border = batch_noise_sigma(batch, np.arange(N))
    assert border == pytest.approx(np.full((N, 5), 3.0), rel=0.25)
    plain, _ = calibrate_batch(predictor, batch, _psf(N), IDS)
    batch.noise_sigma = border.copy()
    np.testing.assert_array_equal(calibrate_batch(predictor, batch, _psf(N), IDS)[0].to_numpy(), plain.to_numpy())
    batch.noise_sigma = 4 * border
    louder, _ = calibrate_batch(predictor, batch, _psf(N), IDS)
    assert np.abs(louder["e1_mcal"] - plain["e1_mcal"]).max() > 1e-3


def test_rows_without_psf_or_stamp_stay_null(predictor, stamps):
    status = ["ok", "padded", "no_coverage", "ok", "error_http", "ok", "ok", "ok"]
    psf = _psf(N)
    psf[3, 0] = np.nan  # NaN FWHM
    psf[5, 1] = -9999.0  # im3shape's "not measured"
    cal, ok = calibrate_batch(predictor, _batch(stamps, status), psf, IDS)
    assert ok.tolist() == [True, True, True, False, True, False, True, True]
    filled = np.isfinite(cal.to_numpy()).all(axis=1)
    assert filled.tolist() == [True, True, False, False, False, False, True, True]
    assert cal.iloc[~filled].isna().all(axis=None)
    with pytest.raises(ValueError, match="3 ids for 8 rows"):
        calibrate_batch(predictor, _batch(stamps), psf, IDS[:3])


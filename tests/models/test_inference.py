"""The Predictor: output columns, batch-size invariance, determinism, DES inputs, stamp-size helper."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_deblend.cutouts.base import CutoutBatch
from survey_deblend.errors import InputError, SurveyDeblendError
from survey_deblend.inference import Predictor
from survey_deblend.preprocess import flux_conversion_factors
from survey_deblend.schema import PREDICTION_COLUMNS
from survey_deblend.surveys import LSST_BANDS, PhotometricFrame, stamp_frame

DES = stamp_frame("DES")  # DES coadd units at the DES zeropoint, DES pixel scale


@pytest.fixture(scope="module")
def lsst_stamps(tiny_dataset) -> np.ndarray:
    from survey_deblend.sim.dataset import open_dataset

    return open_dataset(tiny_dataset).read("blend", np.arange(40))


def test_predict_columns_and_types(untrained_checkpoint, lsst_stamps):
    pred = Predictor.from_checkpoint(untrained_checkpoint, device="cpu")
    out = pred.predict(lsst_stamps[:6], ("u", "g", "r", "i", "z", "y"), 0.2, return_latent=True)
    assert isinstance(out, pd.DataFrame) and len(out) == 6
    assert list(out.columns[: len(PREDICTION_COLUMNS)]) == list(PREDICTION_COLUMNS)
    assert [c for c in out.columns if c.startswith("latent_")] == [f"latent_{k:02d}" for k in range(32)]
    assert (out["e_sigma_pred"] > 0).all() and (out["z_sigma_pred"] > 0).all()
    assert np.isfinite(out[["e1_pred", "e2_pred", "z_pred"]].to_numpy()).all()
    assert len(pred.model_id) == 16 and pred.metadata["bands"] == ["u", "g", "r", "i", "z", "y"]


def test_batch_size_invariance_and_determinism(untrained_checkpoint, lsst_stamps):
    bands = ("u", "g", "r", "i", "z", "y")
    big = Predictor.from_checkpoint(untrained_checkpoint, device="cpu", batch_size=1024)
    small = Predictor.from_checkpoint(untrained_checkpoint, device="cpu", batch_size=7)
    a = big.predict(lsst_stamps, bands, 0.2, measure_recon=False, return_latent=True)
    b = small.predict(lsst_stamps, bands, 0.2, measure_recon=False, return_latent=True)
    c = big.predict(lsst_stamps, bands, 0.2, measure_recon=False, return_latent=True)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(a.to_numpy(), c.to_numpy())
    # each row depends on its own stamp only
    single = big.predict(lsst_stamps[5:6], bands, 0.2, measure_recon=False)
    np.testing.assert_allclose(single.iloc[0].to_numpy(), a.iloc[5][single.columns].to_numpy(), rtol=1e-4, atol=1e-5)


def test_recon_shapes_measured_only_when_asked(untrained_checkpoint, lsst_stamps):
    pred = Predictor.from_checkpoint(untrained_checkpoint, device="cpu")
    off = pred.predict(lsst_stamps[:3], ("u", "g", "r", "i", "z", "y"), 0.2, measure_recon=False)
    assert off[["e1_recon", "e2_recon"]].isna().all().all()
    recon = pred.reconstruct(lsst_stamps[:3], ("u", "g", "r", "i", "z", "y"), 0.2)
    assert recon.shape == (3, 6, 45, 45) and np.isfinite(recon).all()


def test_des_stamps_are_mapped_resampled_and_u_masked(untrained_checkpoint, lsst_stamps):
    pred = Predictor.from_checkpoint(untrained_checkpoint, device="cpu")
    size = pred.source_stamp_size(0.2637)
    assert size == 35
    des = np.random.default_rng(0).normal(0, 1, (4, 5, size, size)).astype(np.float32)
    normed, mask = pred.prepare(des, DES.bands, DES.pixel_scale_arcsec, zeropoints=DES.zeropoints, survey="DES")
    assert normed.shape == (4, 6, 45, 45) and not mask[:, 0].any() and mask[:, 1:].all()
    assert np.all(normed[:, 0] == 0)
    out = pred.predict(des, DES.bands, DES.pixel_scale_arcsec, measure_recon=False, zeropoints=30.0, survey="DES")
    assert len(out) == 4 and np.isfinite(out["e1_pred"]).all()
    # the same galaxy as DES units at zeropoint 30 and as LSST electrons lands on the same model input
    lsst = lsst_stamps[:2, 1:]  # grizy in LSST electrons at 0.2"
    factors = flux_conversion_factors(PhotometricFrame("DES", DES.bands, 0.2, DES.zeropoints), "LSST")[1:]
    as_des = lsst / factors[None, :, None, None].astype(np.float32)
    n1, _ = pred.prepare(lsst, ("g", "r", "i", "z", "y"), 0.2)
    n2, _ = pred.prepare(as_des, DES.bands, 0.2, zeropoints=DES.zeropoints, survey="DES")
    np.testing.assert_allclose(n1, n2, rtol=1e-4, atol=1e-5)


def test_units_come_from_the_frame_never_from_band_names(untrained_checkpoint):
    """DES pixels need zeropoints: without them the Predictor refuses (one line) instead of guessing."""
    pred = Predictor.from_checkpoint(untrained_checkpoint, device="cpu")
    des = np.random.default_rng(2).normal(0, 1, (2, 5, 35, 35)).astype(np.float32)
    with pytest.raises(InputError, match="band 'Y' is not a LSST band") as info:
        pred.predict(des, DES.bands, DES.pixel_scale_arcsec)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="DES pixels without zeropoints"):
        pred.predict(des, DES.bands, DES.pixel_scale_arcsec, survey="DES")
    with pytest.raises(InputError, match="zeropoints: 2 zeropoints for 5 bands"):
        pred.predict(des, DES.bands, DES.pixel_scale_arcsec, zeropoints=(30.0, 30.0), survey="DES")
    # a brighter zeropoint in one band is a fainter source: only that band's model input changes
    a, _ = pred.prepare(des, DES.bands, DES.pixel_scale_arcsec, zeropoints=DES.zeropoints, survey="DES")
    b, _ = pred.prepare(des, DES.bands, DES.pixel_scale_arcsec, zeropoints=(30, 30, 32.5, 30, 30), survey="DES")
    np.testing.assert_array_equal(a[:, [1, 2, 4, 5]], b[:, [1, 2, 4, 5]])
    assert np.abs(b[:, 3]).sum() < np.abs(a[:, 3]).sum()


def _batch(images: np.ndarray, frame: PhotometricFrame, status: list[str]) -> CutoutBatch:
    mask = np.ones(images.shape[:2], dtype=bool)
    return CutoutBatch(images=images, band_mask=mask, status=np.array(status), frame=frame)


def test_predict_batch_is_predict_on_usable_rows_with_nulls_elsewhere(untrained_checkpoint, lsst_stamps):
    pred = Predictor.from_checkpoint(untrained_checkpoint, device="cpu", batch_size=3)
    status = ["ok", "no_coverage", "padded", "ok", "error_http", "ok", "ok", "padded"]
    batch = _batch(lsst_stamps[: len(status)], PhotometricFrame("LSST", LSST_BANDS, 0.2, None), status)
    batch.band_mask[2, 0] = False
    out = pred.predict_batch(batch, measure_recon=False)
    assert list(out.columns) == list(PREDICTION_COLUMNS) and len(out) == len(status)
    usable = np.flatnonzero(batch.usable)
    expected = pred.predict(batch.images[usable], LSST_BANDS, 0.2, band_mask=batch.band_mask[usable],
                            measure_recon=False)
    np.testing.assert_allclose(out.iloc[usable].to_numpy(), expected.to_numpy(), rtol=1e-5, atol=1e-6)
    assert out.iloc[[1, 4]].isna().all().all()
    filled = ["e1_pred", "e2_pred", "e_sigma_pred", "z_pred", "z_sigma_pred"]
    assert np.isfinite(out.iloc[usable][filled].to_numpy()).all()
    # columns this model does not fill (flow head, metacalibration) are present and null
    assert out[["e1_sample", "e2_sample", "z_lo", "z_hi", "r11", "r12", "r21", "r22"]].isna().all().all()
    assert batch.bands_used().tolist() == ["ugrizy", None, "grizy", "ugrizy", None, "ugrizy", "ugrizy", "ugrizy"]


def test_predict_batch_goes_batch_size_rows_at_a_time(untrained_checkpoint, lsst_stamps, monkeypatch):
    """``batch_size`` (the run's ``model.batch_size``) is the number of rows per network pass."""
    import survey_deblend.inference as inference

    sizes = []
    original = inference.run_in_batches

    def spy(encode, normed, mask, batch_size, *args, **kwargs):
        sizes.append((len(normed), batch_size))
        return original(encode, normed, mask, batch_size, *args, **kwargs)

    monkeypatch.setattr(inference, "run_in_batches", spy)
    batch = _batch(lsst_stamps[:10], PhotometricFrame("LSST", LSST_BANDS, 0.2, None), ["ok"] * 10)
    small = Predictor.from_checkpoint(untrained_checkpoint, device="cpu", batch_size=4).predict_batch(batch, False)
    assert sizes == [(4, 4), (4, 4), (2, 4)]
    sizes.clear()
    big = Predictor.from_checkpoint(untrained_checkpoint, device="cpu").predict_batch(batch, False)
    assert sizes == [(10, 1024)]
    np.testing.assert_allclose(small.to_numpy(), big.to_numpy(), rtol=1e-4, atol=1e-5)


def test_bad_inputs_raise_one_line_errors(untrained_checkpoint, lsst_stamps, tmp_path):
    pred = Predictor.from_checkpoint(untrained_checkpoint, device="cpu")
    bad = lsst_stamps[:2].copy()
    bad[0, 2, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        pred.predict(bad, ("u", "g", "r", "i", "z", "y"), 0.2)
    with pytest.raises(InputError, match="dynamic_range"):
        pred.predict(lsst_stamps[:2], ("u", "g", "r", "i", "z", "y"), 0.2, dynamic_range="magic")
    with pytest.raises(SurveyDeblendError, match="not found"):
        Predictor.from_checkpoint(tmp_path / "missing.pt")
    empty = pred.predict(lsst_stamps[:0], ("u", "g", "r", "i", "z", "y"), 0.2)
    assert len(empty) == 0 and list(empty.columns) == list(PREDICTION_COLUMNS)


@pytest.mark.gpu
def test_cuda_bf16_and_compile_agree_with_fp32(untrained_checkpoint, lsst_stamps):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    bands = ("u", "g", "r", "i", "z", "y")
    cpu = Predictor.from_checkpoint(untrained_checkpoint, device="cpu").predict(lsst_stamps, bands, 0.2,
                                                                                measure_recon=False)
    fast = Predictor.from_checkpoint(untrained_checkpoint, device="cuda", bf16=True, compile=True)
    assert fast.bf16
    out = fast.predict(lsst_stamps, bands, 0.2, measure_recon=False)
    np.testing.assert_allclose(out["e1_pred"], cpu["e1_pred"], atol=2e-2)
    np.testing.assert_allclose(out["z_pred"], cpu["z_pred"], atol=2e-2)


def test_bf16_and_compile_are_quietly_off_on_cpu(untrained_checkpoint, lsst_stamps):
    pred = Predictor.from_checkpoint(untrained_checkpoint, device="cpu", bf16=True, compile=True)
    assert not pred.bf16
    out = pred.predict(lsst_stamps[:4], ("u", "g", "r", "i", "z", "y"), 0.2, measure_recon=False)
    assert len(out) == 4


def test_shipped_checkpoint_is_trained_small_and_usable():
    from survey_deblend.inference import default_checkpoint

    path = default_checkpoint()
    assert path.stat().st_size <= 20 * 1024**2
    pred = Predictor.from_checkpoint(device="cpu")
    meta = pred.metadata
    assert meta["trained"] and meta["training_data"]["n_train"] > 1000
    assert 0 < meta["metrics"]["all_bands_snr_gt_20"]["rmse_e"] < 0.2
    des = np.random.default_rng(1).normal(0, 0.5, (3, 5, 35, 35)).astype(np.float32)
    out = pred.predict(des, DES.bands, DES.pixel_scale_arcsec, zeropoints=DES.zeropoints, survey="DES")
    assert list(out.columns) == list(PREDICTION_COLUMNS) and np.isfinite(out["e1_pred"]).all()


def test_the_shipped_flow_fills_the_posterior_columns_seeded_by_id(lsst_stamps):
    """The shipped checkpoint carries a flow head: its posterior columns reach the Predictor's output, and a
    galaxy's draw depends on its id alone (not on its batch or position), so a re-run reproduces it."""
    pred = Predictor.from_checkpoint(device="cpu")
    assert pred.flow is not None
    stamps = lsst_stamps[:6]
    ids = np.array([11, 22, 33, 44, 55, 66], dtype=np.int64)
    out = pred.predict(stamps, LSST_BANDS, pred.pixel_scale, measure_recon=False, ids=ids)
    cols = ["e1_pred", "e2_pred", "e_sigma_pred", "e1_sample", "e2_sample", "z_pred", "z_sigma_pred", "z_lo", "z_hi"]
    assert np.isfinite(out[cols].to_numpy()).all()
    assert (out["z_lo"] < out["z_pred"]).all() and (out["z_pred"] < out["z_hi"]).all()
    assert (np.hypot(out["e1_sample"], out["e2_sample"]) < 1).all() and (out["e_sigma_pred"] > 0).all()
    # the same galaxies in reverse order, in a batch of their own: the same draws
    back = pred.predict(stamps[::-1][:3], LSST_BANDS, pred.pixel_scale, measure_recon=False, ids=ids[::-1][:3])
    np.testing.assert_allclose(back["e1_sample"], out["e1_sample"].to_numpy()[::-1][:3], rtol=1e-5, atol=1e-6)
    other = pred.predict(stamps, LSST_BANDS, pred.pixel_scale, measure_recon=False, ids=ids + 1)
    assert not np.allclose(other["e1_sample"], out["e1_sample"])
    np.testing.assert_allclose(other["e1_pred"], out["e1_pred"], rtol=1e-5, atol=1e-6)  # the mean is not a draw

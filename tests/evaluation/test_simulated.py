"""evaluate_simulated on tiny real GalSim data sets with an untrained checkpoint (real Predictor, CPU)."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from survey_deblend.cli import main
from survey_deblend.evaluation import metrics
from survey_deblend.evaluation.sim_report import format_simulated
from survey_deblend.evaluation.simulated import ESTIMATORS, evaluate_simulated, select_indices
from survey_deblend.shapes import measure_hsm_batch

SNR_MIN = 10.0


@pytest.fixture(scope="module")
def sim_setup(tmp_path_factory):
    from survey_deblend.inference import Predictor
    from survey_deblend.models.checkpoint import write_untrained_checkpoint
    from survey_deblend.sim.dataset import open_dataset
    from survey_deblend.sim.lsst import make_lsst_dataset

    base = tmp_path_factory.mktemp("sim")
    blends = open_dataset(make_lsst_dataset(base / "blends", n=16, seed=11, kind="blends"))
    ring = open_dataset(make_lsst_dataset(base / "ring", n=16, seed=12, kind="ring"))
    checkpoint = write_untrained_checkpoint(base / "untrained.pt", seed=0)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    result = evaluate_simulated(predictor, blends, ring_dataset=ring, snr_min=SNR_MIN, bootstrap=10, batch_size=5)
    return blends, ring, predictor, result, checkpoint


def test_table_has_every_estimator_and_figure(sim_setup):
    blends, _, _, result, _ = sim_setup
    assert [r["estimator"] for r in result["table"]] == list(ESTIMATORS)
    idx = select_indices(blends, SNR_MIN)
    assert result["n_used"] == idx.size > 0 and result["n_total"] == 16
    assert np.all(blends.read("snr", idx) >= SNR_MIN)
    for row in result["table"]:
        assert {"m1", "c1", "m2", "c2", "rmse", "roundness", "ring_m1", "ring_c2"} <= set(row)
        assert 0.0 <= row["failure_fraction"] <= 1.0
    model = result["table"][0]
    assert np.isfinite(model["z_sigma_nmad"]) and 0 <= model["z_outlier_fraction"] <= 1
    assert -1 <= result["reconstruction"]["ssim_blend"] <= 1 and 0 < result["reconstruction"]["cosine_blend"] <= 1
    assert "model" in format_simulated(result) and "HSM on blend" in format_simulated(result)


def test_rows_match_direct_computation(sim_setup):
    """The table's numbers are those of the predictor and of HSM on the same samples, in the same order."""
    blends, _, predictor, result, _ = sim_setup
    idx = select_indices(blends, SNR_MIN)
    e1t, e2t = blends.read("e1", idx), blends.read("e2", idx)
    pred = predictor.predict(blends.read("blend", idx), blends.bands, blends.manifest["pixel_scale_arcsec"],
                             measure_recon=False)
    direct = metrics.shape_metrics(pred["e1_pred"], pred["e2_pred"], e1t, e2t, bootstrap=0)
    model = result["table"][0]
    assert model["rmse"] == pytest.approx(direct["rmse"], rel=1e-5) and model["m1"] == pytest.approx(direct["m1"])
    assert model["z_sigma_nmad"] == pytest.approx(metrics.sigma_nmad(pred["z_pred"], blends.read("z", idx)), rel=1e-5)
    iso = next(r for r in result["table"] if r["estimator"] == "HSM on isolated")
    b = blends.bands.index("i")
    from survey_deblend.evaluation.simulated import _frame, _psf_image

    frame = _frame(blends, "")
    g1, g2 = measure_hsm_batch(blends.read("isolated", idx)[:, b], _psf_image(frame, "i", 45), frame["pixel_scale"],
                               sky_var=frame["sky_sigma"]["i"] ** 2)
    assert iso["rmse"] == pytest.approx(metrics.shape_metrics(g1, g2, e1t, e2t, bootstrap=0)["rmse"], rel=1e-9)


def test_ring_reference_of_the_labels(sim_setup):
    ring = sim_setup[3]["ring"]
    assert ring["n"] == 16 and ring["labels"]["g"] == pytest.approx(0.02)
    # the labels' own response is 1 up to the 90-degree-pair residual (|m| ~ e^2 for two scenes)
    assert abs(ring["labels"]["m1"]) < 0.3 and abs(ring["labels"]["c1"]) < 1e-6
    assert set(ring) >= {"labels", *ESTIMATORS}


def test_cli_writes_the_simulated_report(sim_setup, tmp_path, capsys):
    blends, ring, _, result, checkpoint = sim_setup
    args = ["evaluate", str(tmp_path), "--simulated", str(blends.path), "--ring", str(ring.path), "--checkpoint",
            str(checkpoint), "--snr-min", str(SNR_MIN), "--bootstrap", "10", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "HSM on isolated" in printed and "ring m1" in printed
    report = tmp_path / "_report"
    saved = json.loads((report / "metrics.json").read_text())
    assert [r["estimator"] for r in saved["table"]] == list(ESTIMATORS)
    assert saved["table"][0]["rmse"] == pytest.approx(result["table"][0]["rmse"], rel=1e-6)  # same numbers
    assert "gallery.png" in saved["figures"] and len(saved["figures"]) == 8
    for name in saved["figures"]:
        img = mpimg.imread(report / name)
        assert img.shape[0] > 200 and float(np.std(img[..., :3])) > 0.01, name
    html = (report / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 8 and html.count("src=") == 8


def test_cli_missing_dataset_is_one_line(sim_setup, tmp_path, capsys):
    args = ["evaluate", str(tmp_path), "--simulated", str(tmp_path / "nope"), "--checkpoint", str(sim_setup[4])]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "Traceback" not in err[0]

"""The flow head in evaluate_simulated: rows, coverage, plots, on tiny real GalSim sets (real Predictor, CPU)."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from survey_deblend.evaluation import metrics
from survey_deblend.evaluation.simulated import ESTIMATORS, evaluate_simulated, select_indices

SNR_MIN = 10.0


@pytest.fixture(scope="module")
def flow_setup(tmp_path_factory):
    from survey_deblend.inference import Predictor
    from survey_deblend.models.checkpoint import (
        Checkpoint,
        load_checkpoint,
        save_checkpoint,
        write_untrained_checkpoint,
    )
    from survey_deblend.models.flow import FlowArchitecture, FlowHead
    from survey_deblend.sim.dataset import open_dataset
    from survey_deblend.sim.lsst import make_lsst_dataset

    base = tmp_path_factory.mktemp("posterior")
    blends = open_dataset(make_lsst_dataset(base / "blends", n=24, seed=21, kind="blends"))
    ring = open_dataset(make_lsst_dataset(base / "ring", n=16, seed=22, kind="ring"))
    plain = load_checkpoint(write_untrained_checkpoint(base / "untrained.pt", seed=0))
    arch = FlowArchitecture(transforms=2, hidden=(16, 16), samples=16)
    torch.manual_seed(0)
    head = FlowHead(arch)
    head.set_standardization(np.random.default_rng(0).normal(0, 0.2, (200, 2)), np.linspace(0.2, 2.5, 200))
    path = save_checkpoint(base / "with_flow.pt", Checkpoint({**plain.metadata, "flow": {"architecture":
                           arch.to_dict()}}, {**plain.state, "flow": head.state_dict()}))
    predictor = Predictor.from_checkpoint(path, device="cpu")
    result = evaluate_simulated(predictor, blends, ring_dataset=ring, snr_min=SNR_MIN, bootstrap=10, batch_size=7,
                                out_dir=base / "report")
    return blends, predictor, head, result, base / "report"


def test_posterior_rows_follow_the_estimators_and_match_the_head(flow_setup):
    blends, predictor, head, result, _ = flow_setup
    names = [r["estimator"] for r in result["table"]]
    assert names == [*ESTIMATORS, "flow: posterior mean", "flow: posterior draw"]
    idx = select_indices(blends, SNR_MIN)
    e1t, e2t = blends.read("e1", idx), blends.read("e2", idx)
    normed, mask = predictor.prepare(blends.read("blend", idx), blends.bands, blends.manifest["pixel_scale_arcsec"])
    latent, _, _ = predictor.encode_normalized(normed, mask)
    summary = head.summarize(latent, mask, idx.astype(np.int64))
    direct = metrics.shape_metrics(summary["e1_pred"], summary["e2_pred"], e1t, e2t, bootstrap=0)
    mean_row, draw_row = result["table"][-2], result["table"][-1]
    assert mean_row["rmse"] == pytest.approx(direct["rmse"], rel=1e-5)
    assert draw_row["roundness"] == pytest.approx(
        metrics.roundness_ratio(summary["e1_sample"], summary["e2_sample"], e1t, e2t), rel=1e-5)
    assert mean_row["z_sigma_nmad"] == pytest.approx(metrics.sigma_nmad(summary["z_pred"], blends.read("z", idx)))
    assert "ring_m1" in mean_row and np.isfinite(mean_row["ring_c1"])
    post = result["posterior"]
    assert post["roundness_sample"] == pytest.approx(draw_row["roundness"])
    for key in ("coverage_e_68", "coverage_e_95", "coverage_z_68", "coverage_z_95"):
        assert 0.0 <= post[key] <= 1.0
    assert post["coverage_e_68"] <= post["coverage_e_95"] and post["coverage_z_68"] <= post["coverage_z_95"]


def test_report_has_the_calibration_section_and_plots(flow_setup):
    _, _, _, result, out = flow_setup
    text = (out / "report.md").read_text()
    assert "Posterior calibration (flow head)" in text and "coverage" in text and "flow: posterior draw" in text
    for name in ("posterior_rank_pit.png", "posterior_coverage.png"):
        image = mpimg.imread(out / name)
        assert image.shape[0] > 200 and image.std() > 0.01
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["posterior"]["coverage_e_68"] == pytest.approx(result["posterior"]["coverage_e_68"])
    assert "posterior_rank_pit.png" in saved["figures"]


def test_flow_can_be_switched_off_or_demanded(flow_setup, tmp_path):
    blends, predictor, _, _, _ = flow_setup
    off = evaluate_simulated(predictor, blends, snr_min=SNR_MIN, bootstrap=0, flow=False)
    assert [r["estimator"] for r in off["table"]] == list(ESTIMATORS) and "posterior" not in off
    from survey_deblend.errors import InputError
    from survey_deblend.inference import Predictor
    from survey_deblend.models.checkpoint import write_untrained_checkpoint

    plain = Predictor.from_checkpoint(write_untrained_checkpoint(tmp_path / "plain.pt"), device="cpu")
    with pytest.raises(InputError, match="no flow head"):
        evaluate_simulated(plain, blends, snr_min=SNR_MIN, bootstrap=0, flow=True)

"""``train flow`` on a tiny GalSim set: the held-out likelihood improves, the run resumes, the checkpoint carries it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from survey_deblend.cli import main
from survey_deblend.config.training import DataConfig, FlowStageConfig, TrainingConfig
from survey_deblend.models.checkpoint import load_checkpoint
from survey_deblend.models.flow import SUMMARY_COLUMNS
from survey_deblend.training.flow import train_flow


def _config(data: Path, ckpt: Path, work: Path, epochs: int) -> TrainingConfig:
    return TrainingConfig(  # the flow's own data set (scenes the encoder never saw) overrides the top-level one
        data=DataConfig(path=work / "not-this-one"),
        flow=FlowStageConfig(epochs=epochs, batch_size=128, lr=3e-3, mask_draws=2, transforms=2, hidden=(16, 16),
                             samples=16, checkpoint=ckpt, output=work / "with_flow.pt",
                             data=DataConfig(path=data, val_fraction=0.25, max_samples=400)),
        work_dir=work, output=work / "unused.pt", progress=False, num_threads=2,
    )


@pytest.fixture(scope="module")
def trained(tiny_dataset, untrained_checkpoint, tmp_path_factory):
    work = tmp_path_factory.mktemp("flow")
    first = train_flow(_config(tiny_dataset, untrained_checkpoint, work, epochs=2))
    extended = train_flow(_config(tiny_dataset, untrained_checkpoint, work, epochs=3))
    return work, first, extended


def test_flow_stage_learns_and_an_extended_run_resumes(trained):
    work, first, extended = trained
    val = [h["val_loss"] for h in extended.history]
    assert len(val) == 3 and val[-1] < val[0]
    np.testing.assert_allclose(val[:2], [h["val_loss"] for h in first.history], rtol=1e-6)  # epochs 1-2 reused
    assert (work / "flow" / "state.pt").is_file() and len(list((work / "flow").glob("latents-train*.npz"))) == 2


def test_checkpoint_carries_the_flow_with_its_metadata(trained, untrained_checkpoint):
    work, _, extended = trained
    path = work / "with_flow.pt"
    payload = torch.load(path, weights_only=True)
    assert set(load_checkpoint(untrained_checkpoint).state) < set(payload["state"])
    flow = payload["metadata"]["flow"]
    assert flow["architecture"]["transforms"] == 2 and flow["architecture"]["hidden"] == [16, 16]
    assert flow["training"]["best_epoch"] == extended.best_epoch and flow["training"]["mask_draws"] == 2
    assert flow["training_data"]["n_samples"] == 400 and flow["training"]["settings"]["data"]["max_samples"] == 400
    figures = flow["metrics"]["all_bands"]
    for key in ("rmse_e", "roundness_sample", "coverage_e_68", "coverage_e_95", "coverage_z_68", "z_sigma_nmad",
                "rmse_e_regressor"):
        assert np.isfinite(figures[key])
    assert 0 <= figures["coverage_e_68"] <= figures["coverage_e_95"] <= 1
    # the e temperature is fitted on the held-out split after training and travels in the architecture
    calibration = flow["calibration"]
    assert flow["architecture"]["e_temperature"] == calibration["e_temperature"] > 0
    assert calibration["validation_rows"] == 100 and len(calibration["grid"]) == len(calibration["coverage_e_68_by_t"])
    head = load_checkpoint(path).build("flow")
    out = head.summarize(np.zeros((3, 32), np.float32), np.ones((3, 6), bool), np.arange(3))
    assert tuple(out) == SUMMARY_COLUMNS
    # the encoder and decoder are the source checkpoint's, untouched
    src = load_checkpoint(untrained_checkpoint).state["deblender"]
    for key, value in src.items():
        torch.testing.assert_close(payload["state"]["deblender"][key], value, rtol=0, atol=0)


def test_cli_train_flow_and_its_errors(tiny_dataset, untrained_checkpoint, tmp_path, capsys):
    common = ["--set", f"data.path={tiny_dataset}", "--set", "data.max_samples=120", "--set", f"work_dir={tmp_path}",
              "--set", "progress=false", "--set", "flow.epochs=1", "--set", "flow.mask_draws=1"]
    rc = main(["train", "flow", *common, "--set", f"flow.checkpoint={untrained_checkpoint}",
               "--set", f"flow.output={tmp_path / 'out.pt'}"])
    assert rc == 0 and load_checkpoint(tmp_path / "out.pt").has_flow
    assert f"checkpoint: {tmp_path / 'out.pt'}" in capsys.readouterr().out
    rc = main(["train", "flow", *common, "--set", f"flow.checkpoint={tmp_path / 'missing.pt'}"])
    err = capsys.readouterr().err
    assert rc != 0 and "checkpoint not found" in err and len(err.strip().splitlines()) == 1
    rc = main(["train", "flow", "--set", "flow.binz=3"])
    assert rc == 2 and "binz" in capsys.readouterr().err


def test_cli_flow_calibration_keeps_the_networks_and_the_posterior_mean(trained, tiny_dataset, tmp_path, capsys):
    work, _, _ = trained
    source = work / "with_flow.pt"
    common = ["--set", f"work_dir={work}", "--set", "progress=false", "--set", f"data.path={tiny_dataset}",
              "--set", "data.val_fraction=0.25", "--set", "data.max_samples=400"]
    out = tmp_path / "calibrated.pt"
    rc = main(["train", "flow-calibration", *common, "--set", f"flow.checkpoint={source}",
               "--set", f"flow.output={out}"])
    printed = capsys.readouterr().out
    assert rc == 0 and "flow calibration: e temperature" in printed and f"checkpoint: {out}" in printed
    before, after = load_checkpoint(source), load_checkpoint(out)
    for name, state in before.state.items():
        for key, value in state.items():
            torch.testing.assert_close(after.state[name][key], value, rtol=0, atol=0)
    flow = after.metadata["flow"]
    assert flow["architecture"]["e_temperature"] == flow["calibration"]["e_temperature"]
    assert flow["metrics_untempered"] == before.metadata["flow"]["metrics"] and flow["training"]
    latent = np.random.default_rng(0).normal(size=(50, 32)).astype(np.float32)
    mask = np.ones((50, 6), bool)
    a = before.build("flow").summarize(latent, mask, np.arange(50))
    b = after.build("flow").summarize(latent, mask, np.arange(50))
    np.testing.assert_array_equal(a["e1_pred"], b["e1_pred"])
    np.testing.assert_array_equal(a["z_pred"], b["z_pred"])
    rc = main(["train", "flow-calibration", *common, "--set", f"flow.checkpoint={tmp_path / 'missing.pt'}"])
    err = capsys.readouterr().err
    assert rc != 0 and "checkpoint not found" in err and len(err.strip().splitlines()) == 1

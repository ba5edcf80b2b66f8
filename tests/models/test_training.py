"""The three trainings on a tiny GalSim set: losses fall, resume reproduces, the regressor learns shapes."""

from __future__ import annotations

from pathlib import Path

import galsim
import numpy as np
import pytest
import torch

from survey_deblend.cli import main
from survey_deblend.config.training import DataConfig, StageConfig, TrainingConfig
from survey_deblend.inference import Predictor
from survey_deblend.models.checkpoint import load_checkpoint
from survey_deblend.shapes import measure_hsm_batch
from survey_deblend.training import loop, train_all, train_vae

from .simdata import NOISE_SIGMA, PSF_FWHM, write_tiny_dataset


def _config(data: Path, work: Path, n: int = 240, vae_epochs: int = 2, **kw) -> TrainingConfig:
    return TrainingConfig(
        data=DataConfig(path=data, val_fraction=0.25, max_samples=n),
        vae=StageConfig(seed_stream=1, epochs=vae_epochs, batch_size=32, lr=2e-3, kl_beta=1e-3),
        work_dir=work,
        output=work / "final.pt",
        progress=False,
        **kw,
    )


def test_vae_losses_decrease_and_an_interrupted_run_resumes_identically(tiny_dataset, tmp_path, monkeypatch):
    straight = train_vae(_config(tiny_dataset, tmp_path / "a", vae_epochs=3))
    train_loss = [h["train_loss"] for h in straight.history]
    val_loss = [h["val_loss"] for h in straight.history]
    assert train_loss[-1] < 0.7 * train_loss[0] and val_loss[-1] < val_loss[0]
    assert straight.best_epoch == int(np.argmin(val_loss)) + 1

    calls = {"n": 0}
    real_evaluate = loop.evaluate_loss

    def interrupt_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_loss", interrupt_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_vae(_config(tiny_dataset, tmp_path / "b", vae_epochs=3))
    monkeypatch.setattr(loop, "evaluate_loss", real_evaluate)
    assert (tmp_path / "b" / "vae" / "state.pt").is_file() and not (tmp_path / "b" / "vae.pt").exists()
    resumed = train_vae(_config(tiny_dataset, tmp_path / "b", vae_epochs=3))
    np.testing.assert_allclose([h["val_loss"] for h in resumed.history], val_loss, rtol=1e-4)
    a = load_checkpoint(tmp_path / "a" / "vae.pt").state["decoder"]
    b = load_checkpoint(tmp_path / "b" / "vae.pt").state["decoder"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_resume_refuses_other_settings(tiny_dataset, tmp_path):
    train_vae(_config(tiny_dataset, tmp_path, n=120, vae_epochs=1))
    with pytest.raises(Exception, match="other settings"):
        train_vae(_config(tiny_dataset, tmp_path, n=120, vae_epochs=1, seed=5))


def _hsm_rmse(images: np.ndarray, e_true: np.ndarray) -> float:
    psf = galsim.Moffat(beta=3.5, fwhm=PSF_FWHM).drawImage(nx=45, ny=45, scale=0.2).array
    e1, e2 = measure_hsm_batch(images, psf, 0.2, sky_var=NOISE_SIGMA**2)
    ok = np.isfinite(e1)
    rmse = np.sqrt(np.mean((np.stack([e1, e2], 1)[ok] - e_true[ok]) ** 2))
    # a failed measurement counts as predicting zero
    return float(np.sqrt((rmse**2 * ok.sum() + np.sum(e_true[~ok] ** 2)) / len(ok)))


def test_trained_regressor_beats_zero_and_hsm_on_blends(tiny_dataset, tmp_path):
    """Three trainings on 900 scenes (about 25 s on two idle cores), judged on 200 new scenes."""
    cfg = TrainingConfig(
        data=DataConfig(path=tiny_dataset, val_fraction=0.1),
        vae=StageConfig(seed_stream=1, epochs=8, batch_size=32, lr=2e-3, kl_beta=1e-3),
        deblender=StageConfig(seed_stream=2, epochs=4, batch_size=32, lr=1e-3, kl_beta=1e-3, latent_weight=0.1),
        regressor=StageConfig(seed_stream=3, init_seed=3, epochs=30, batch_size=64, lr=3e-3),
        work_dir=tmp_path / "work",
        output=tmp_path / "final.pt",
        progress=False,
    )
    results = train_all(cfg)
    for stage in ("vae", "deblender", "regressor"):
        history = results[stage].history
        assert history[-1]["train_loss"] < history[0]["train_loss"]
    ckpt = load_checkpoint(cfg.output)
    assert ckpt.metadata["trained"] and ckpt.metadata["metrics"]["all_bands"]["rmse_e"] > 0
    assert ckpt.metadata["training_data"]["n_train"] == 900

    held_out = write_tiny_dataset(tmp_path / "held_out", n=200, seed=7)
    from survey_deblend.sim.dataset import open_dataset

    ds = open_dataset(held_out)
    blended = ds.read("n_neighbours", slice(None)) > 0
    idx = np.nonzero(blended)[0]
    e_true = np.stack([ds.read("e1", idx), ds.read("e2", idx)], axis=1)
    stamps = ds.read("blend", idx)
    pred = Predictor.from_checkpoint(cfg.output, device="cpu").predict(
        stamps, ("u", "g", "r", "i", "z", "y"), 0.2, measure_recon=False
    )
    rmse_model = float(np.sqrt(np.mean((pred[["e1_pred", "e2_pred"]].to_numpy() - e_true) ** 2)))
    rmse_zero = float(np.sqrt(np.mean(e_true**2)))
    rmse_hsm_blend = _hsm_rmse(stamps[:, 3], e_true)
    assert rmse_model < 0.75 * rmse_zero
    assert rmse_model < rmse_hsm_blend


def test_cli_train_stage_and_clear_error(tiny_dataset, tmp_path, capsys):
    rc = main(
        [
            "train", "vae",
            "--set", f"data.path={tiny_dataset}", "--set", "data.max_samples=64", "--set", "vae.epochs=1",
            "--set", f"work_dir={tmp_path}", "--set", "progress=false", "--set", "num_threads=2",
        ]
    )
    assert rc == 0 and (tmp_path / "vae.pt").is_file()
    assert "vae: best held-out loss" in capsys.readouterr().out
    rc = main(["train", "regressor", "--set", f"data.path={tiny_dataset}", "--set", f"work_dir={tmp_path / 'x'}"])
    err = capsys.readouterr().err
    assert rc == 1 and "has not been trained yet" in err and len(err.strip().splitlines()) == 1
    rc = main(["train", "all", "--set", f"data.path={tmp_path / 'nothing'}"])
    err = capsys.readouterr().err
    assert rc != 0 and "no data set" in err
    rc = main(["train", "all", "--set", "vae.epochz=3"])
    assert rc == 2 and "epochz" in capsys.readouterr().err


def test_downstream_stage_does_not_resume_on_a_changed_upstream(tiny_dataset, tmp_path):
    from survey_deblend.training import train_deblender

    cfg = TrainingConfig(
        data=DataConfig(path=tiny_dataset, val_fraction=0.25, max_samples=80),
        vae=StageConfig(seed_stream=1, epochs=1, batch_size=40),
        deblender=StageConfig(seed_stream=2, epochs=1, batch_size=40),
        work_dir=tmp_path,
        progress=False,
    )
    train_vae(cfg)
    train_deblender(cfg)
    train_deblender(cfg)  # same upstream: resumes (nothing left to do)
    extended = StageConfig(seed_stream=1, epochs=2, batch_size=40)
    train_vae(TrainingConfig(**{**cfg.__dict__, "vae": extended}))  # VAE extended
    with pytest.raises(Exception, match="other settings"):
        train_deblender(cfg)


def test_simulate_step_makes_the_training_set(tmp_path):
    from survey_deblend.config.training import SimulateStep
    from survey_deblend.training.stages import ensure_dataset

    cfg = TrainingConfig(data=DataConfig(path=tmp_path / "made", simulate=SimulateStep(n=8, seed=4, workers=1)))
    path = ensure_dataset(cfg)
    from survey_deblend.sim.dataset import open_dataset

    ds = open_dataset(path)
    assert len(ds) == 8 and ds.read("blend", [0]).shape == (1, 6, 45, 45)


def _toy_stage(tmp_path: Path, name: str, **settings) -> tuple[loop.StageResult, float]:
    """One weight fitted to noisy targets drawn from the stage's random stream; returns the result and weight."""
    torch.manual_seed(0)
    module = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(module.weight)

    def loss_fn(idx: np.ndarray, rng: np.random.Generator, train: bool) -> torch.Tensor:
        noise = torch.from_numpy(rng.normal(size=len(idx))).float()
        return ((module.weight.sum() - 3.0 - noise) ** 2).mean()

    cfg = StageConfig(**{"seed_stream": 1, "epochs": 2, "batch_size": 8, "lr": 0.05, **settings})
    stage = loop.Stage(name, {"w": module}, [module], loss_fn, cfg, fingerprint=name)
    result = loop.run_stage(stage, np.arange(64), np.arange(16), seed=0, work_dir=tmp_path, progress=False)
    return result, float(module.weight.detach())


def test_stage_settings_reach_the_loop(tmp_path):
    """The seed stream and the gradient clip come from the stage's config, not from constants in the loop."""
    a, w_a = _toy_stage(tmp_path, "a")
    b, w_b = _toy_stage(tmp_path, "b")
    other, _ = _toy_stage(tmp_path, "c", seed_stream=2)
    assert a.history == b.history and w_a == w_b
    assert other.history[0]["train_loss"] != a.history[0]["train_loss"]
    _, w_clipped = _toy_stage(tmp_path, "d", grad_clip_norm=1e-10)  # steps shrink to ~1 % under Adam's epsilon
    assert 0 < w_clipped < 0.05 * w_a


def test_yaml_stage_sections_keep_their_stage_defaults(tmp_path):
    from survey_deblend.config import ConfigError, load

    cfg = load(TrainingConfig, None, ["deblender.epochs=1", "regressor.lr=0.01"])
    assert (cfg.deblender.epochs, cfg.deblender.latent_weight, cfg.deblender.seed_stream) == (1, 0.1, 2)
    assert (cfg.regressor.lr, cfg.regressor.epochs, cfg.regressor.seed_stream, cfg.regressor.init_seed) == (
        0.01, 20, 3, 3)  # fmt: skip
    shipped = load(TrainingConfig, Path(__file__).resolve().parents[2] / "pipelines" / "train_lsst.yaml")
    assert [s.seed_stream for s in (shipped.vae, shipped.deblender, shipped.regressor)] == [1, 2, 3]
    assert shipped.vae.grad_clip_norm == 10.0 and shipped.regressor.init_seed == 3
    with pytest.raises(ConfigError, match="different seed_stream"):
        load(TrainingConfig, None, ["regressor.seed_stream=1"])
    with pytest.raises(ConfigError, match="grad_clip_norm must be positive"):
        load(TrainingConfig, None, ["vae.grad_clip_norm=0"])

"""The three trainings and ``train_all`` (DESIGN.md, "training"; issue 5).

1. ``train_vae``: noisy isolated galaxy in, clean isolated galaxy as target; reconstruction + beta * KL.
2. ``train_deblender``: blended scene in, through the frozen decoder, clean isolated galaxy as target
   (plus an optional loss pulling its latent toward the training-1 encoder's latent of the isolated galaxy).
3. ``train_regressor``: the deblender's latent to ``(e1, e2, log sigma_e, z, log sigma_z)`` with a Gaussian NLL.

Each stage reads the previous stage's checkpoint from ``work_dir`` and writes its own; the regressor stage
writes the final checkpoint with held-out metrics to ``cfg.output``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from survey_deblend.config.hashing import hashed_values
from survey_deblend.config.training import TrainingConfig
from survey_deblend.errors import SurveyDeblendError
from survey_deblend.models.checkpoint import (
    Checkpoint,
    base_metadata,
    load_checkpoint,
    plain_metadata,
    save_checkpoint,
)
from survey_deblend.models.networks import Architecture, Decoder, Encoder, Regressor, gaussian_nll, kl_divergence
from survey_deblend.training.data import Normalizer, TrainingData, random_band_mask
from survey_deblend.training.loop import Stage, StageResult, autocast, config_fingerprint, run_stage
from survey_deblend.training.metrics import held_out_metrics


def _device(cfg: TrainingConfig) -> torch.device:
    if cfg.device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _setup(cfg: TrainingConfig) -> tuple[torch.device, TrainingData]:
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    ensure_dataset(cfg)
    data = TrainingData.open(cfg.data.path, cfg.data.val_fraction, cfg.seed, cfg.data.max_samples)
    return _device(cfg), data


def ensure_dataset(cfg: TrainingConfig) -> Path:
    """Make the training set with the simulation stage when ``data.path`` has none and ``data.simulate`` is set."""
    path = Path(cfg.data.path)
    if (path / "manifest.json").is_file():
        return path
    if cfg.data.simulate is None:
        raise SurveyDeblendError(
            f"{path}: no data set (manifest.json) here; make one with 'survey-deblend simulate lsst' "
            "or set data.simulate in the training config"
        )
    from survey_deblend.sim.lsst import make_lsst_dataset

    sim = cfg.data.simulate
    print(f"[data] simulating {sim.n} {sim.kind} samples into {path} (seed {sim.seed})", file=sys.stderr, flush=True)
    make_lsst_dataset(path, n=sim.n, seed=sim.seed, kind=sim.kind, workers=sim.workers)
    return path


def _architecture(cfg: TrainingConfig) -> Architecture:
    m = cfg.model
    return Architecture(
        latent_dim=m.latent_dim, channels=m.channels, hidden=m.hidden, regressor_hidden=m.regressor_hidden
    )


def _stage_path(cfg: TrainingConfig, name: str) -> Path:
    return Path(cfg.work_dir) / f"{name}.pt"


def _load_previous(cfg: TrainingConfig, name: str) -> Checkpoint:
    path = _stage_path(cfg, name)
    if not path.is_file():
        raise SurveyDeblendError(f"{path}: stage '{name}' has not been trained yet (run 'survey-deblend train {name}')")
    return load_checkpoint(path)


def _weights_hash(checkpoint: Checkpoint) -> str:
    """Hash of the weights alone (not the metadata): a downstream stage resumes only on the same upstream."""
    digest = hashlib.sha256()
    for name in sorted(checkpoint.state):
        for key in sorted(checkpoint.state[name]):
            digest.update(f"{name}.{key}".encode())
            digest.update(checkpoint.state[name][key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _fingerprint(cfg: TrainingConfig, stage: str, upstream: Checkpoint | None = None) -> str:
    # Everything that changes the result (fields not marked NOT_HASHED: not the epochs, so a finished run may be
    # extended; not progress, threads or the output path) and the upstream stage's weights.
    keep = hashed_values(cfg)
    upstream_hash = _weights_hash(upstream) if upstream is not None else None
    return config_fingerprint({"stage": stage, "config": keep, "upstream": upstream_hash})


def _pixels(data: TrainingData, field: str, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(data.read(field, idx)).to(device)


def _recon_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over bands and pixels, averaged over the batch."""
    return (recon.float() - target).pow(2).sum(dim=(1, 2, 3)).mean()


def _masks(n: int, rng: np.random.Generator, cfg: TrainingConfig, device: torch.device) -> torch.Tensor:
    mask = random_band_mask(n, 6, rng, cfg.band_dropout, cfg.u_dropout)
    return torch.from_numpy(mask).to(device, torch.float32)


def vae_loss(
    encoder: torch.nn.Module, decoder: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
    kl_beta: float, train: bool, bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The beta-VAE loss of trainings 1 and 2: ``(reconstruction + kl_beta * KL, latent mean)``.

    Training draws the latent from the posterior (one ``randn`` per latent value); evaluation decodes its mean.
    """
    with autocast(x.device, bf16):
        mu, logvar = encoder(x, mask)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if train else mu
        recon = decoder(z)
    return _recon_loss(recon, target) + kl_beta * kl_divergence(mu.float(), logvar.float()), mu


def train_vae(cfg: TrainingConfig) -> StageResult:
    """Training 1: the beta-VAE on isolated galaxies; writes ``work_dir/vae.pt`` (with ``M_b``)."""
    device, data = _setup(cfg)
    arch = _architecture(cfg)
    m_b = data.m_b()
    torch.manual_seed(cfg.seed + cfg.vae.init_seed)
    encoder, decoder = Encoder(arch).to(device), Decoder(arch).to(device)
    norm = Normalizer(m_b, cfg.beta).to(device)

    def loss_fn(idx: np.ndarray, rng: np.random.Generator, train: bool) -> torch.Tensor:
        mask = _masks(len(idx), rng, cfg, device)
        x = norm(_pixels(data, "isolated", idx, device), mask)
        target = norm(_pixels(data, "clean", idx, device))
        return vae_loss(encoder, decoder, x, mask, target, cfg.vae.kl_beta, train, cfg.bf16)[0]

    stage = Stage("vae", {"encoder": encoder, "decoder": decoder}, [encoder, decoder], loss_fn, cfg.vae,
                  _fingerprint(cfg, "vae"))  # fmt: skip
    result = run_stage(stage, data.train_idx, data.val_idx, cfg.seed, Path(cfg.work_dir), cfg.progress)
    metadata = base_metadata(arch, list(m_b), data.pixel_scale(), psf_fwhm_arcsec=data.psf_fwhm(), beta=cfg.beta)
    metadata["train_stats"] = {"median_max": [float(v) for v in data.median_max()]}
    metadata["training_data"] = data.describe()
    metadata["stages"] = {"vae": _stage_summary(result, cfg.vae)}
    state = {"vae_encoder": encoder.state_dict(), "decoder": decoder.state_dict()}
    save_checkpoint(_stage_path(cfg, "vae"), Checkpoint(metadata=metadata, state=state))
    return result


def train_deblender(cfg: TrainingConfig) -> StageResult:
    """Training 2: blended scenes through the frozen decoder; writes ``work_dir/deblender.pt``."""
    device, data = _setup(cfg)
    previous = _load_previous(cfg, "vae")
    vae_encoder, decoder = previous.build("vae_encoder").to(device), previous.build("decoder").to(device)
    for p in (*vae_encoder.parameters(), *decoder.parameters()):
        p.requires_grad_(False)
    deblender = previous.build("vae_encoder").to(device)  # starts from the VAE encoder
    for p in deblender.parameters():
        p.requires_grad_(True)
    norm = Normalizer(np.asarray(previous.metadata["m_b"]), float(previous.metadata["beta"])).to(device)
    stage = cfg.deblender

    def loss_fn(idx: np.ndarray, rng: np.random.Generator, train: bool) -> torch.Tensor:
        mask = _masks(len(idx), rng, cfg, device)
        x = norm(_pixels(data, "blend", idx, device), mask)
        target = norm(_pixels(data, "clean", idx, device))
        loss, mu = vae_loss(deblender, decoder, x, mask, target, stage.kl_beta, train, cfg.bf16)
        if stage.latent_weight > 0:
            with torch.no_grad(), autocast(device, cfg.bf16):
                mu_ref, _ = vae_encoder(norm(_pixels(data, "isolated", idx, device)), torch.ones_like(mask))
            loss = loss + stage.latent_weight * (mu.float() - mu_ref.float()).pow(2).sum(dim=1).mean()
        return loss

    spec = Stage("deblender", {"deblender": deblender}, [deblender], loss_fn, stage,
                 _fingerprint(cfg, "deblender", previous))  # fmt: skip
    result = run_stage(spec, data.train_idx, data.val_idx, cfg.seed, Path(cfg.work_dir), cfg.progress)
    metadata = dict(previous.metadata)
    metadata["stages"] = {**metadata.get("stages", {}), "deblender": _stage_summary(result, stage)}
    state = {**previous.state, "deblender": deblender.state_dict()}
    save_checkpoint(_stage_path(cfg, "deblender"), Checkpoint(metadata=metadata, state=state))
    return result


def train_regressor(cfg: TrainingConfig) -> StageResult:
    """Training 3: the regressor on the frozen deblender latent; writes the final checkpoint to ``cfg.output``."""
    device, data = _setup(cfg)
    previous = _load_previous(cfg, "deblender")
    deblender = previous.build("deblender").to(device)
    for p in deblender.parameters():
        p.requires_grad_(False)
    torch.manual_seed(cfg.seed + cfg.regressor.init_seed)
    regressor = Regressor(previous.architecture).to(device)
    norm = Normalizer(np.asarray(previous.metadata["m_b"]), float(previous.metadata["beta"])).to(device)
    stage = cfg.regressor

    def loss_fn(idx: np.ndarray, rng: np.random.Generator, train: bool) -> torch.Tensor:
        mask = _masks(len(idx), rng, cfg, device)
        x = norm(_pixels(data, "blend", idx, device), mask)
        e_true = torch.from_numpy(np.stack([data.read("e1", idx), data.read("e2", idx)], 1)).to(device).float()
        z_true = torch.from_numpy(data.read("z", idx)).to(device).float()
        with torch.no_grad(), autocast(device, cfg.bf16):
            mu, _ = deblender(x, mask)
        return gaussian_nll(regressor(mu.float()), e_true, z_true)

    spec = Stage("regressor", {"regressor": regressor}, [regressor], loss_fn, stage,
                 _fingerprint(cfg, "regressor", previous))  # fmt: skip
    result = run_stage(spec, data.train_idx, data.val_idx, cfg.seed, Path(cfg.work_dir), cfg.progress)
    metadata = dict(previous.metadata)
    metadata["stages"] = {**metadata.get("stages", {}), "regressor": _stage_summary(result, stage)}
    metadata["training_config"] = plain_metadata(dataclasses.asdict(cfg))
    state = {**previous.state, "regressor": regressor.state_dict()}
    final = Checkpoint(metadata=metadata, state=state)
    t0 = time.perf_counter()
    metadata["metrics"] = held_out_metrics(final, data, device)
    metadata["metrics"]["seconds"] = round(time.perf_counter() - t0, 1)
    metadata["trained"] = True
    metadata["training_seconds"] = round(sum(s["seconds"] for s in metadata["stages"].values()), 1)
    save_checkpoint(cfg.output, final)
    save_checkpoint(_stage_path(cfg, "final"), final)
    if cfg.progress:
        print(f"[regressor] wrote {cfg.output}; held-out: {metadata['metrics']}", file=sys.stderr, flush=True)
    return result


def train_all(cfg: TrainingConfig) -> dict[str, StageResult]:
    """The three trainings in order (each resumes or skips what its state file says is done)."""
    return {"vae": train_vae(cfg), "deblender": train_deblender(cfg), "regressor": train_regressor(cfg)}


def _stage_summary(result: StageResult, stage: Any) -> dict[str, Any]:
    return {
        "best_val_loss": float(result.best_val),
        "best_epoch": int(result.best_epoch),
        "history": result.history,
        "train_images_per_s": float(result.train_images_per_s),
        "seconds": round(float(result.seconds), 1),
        "settings": plain_metadata(dataclasses.asdict(stage)),
    }

"""``survey-deblend train flow``: the flow posterior head (``models.flow``) on the frozen deblender's latents.

The deblender of a trained checkpoint (weights untouched) encodes the training split ``flow.mask_draws`` times,
each time with fresh band-dropout masks (the dropout of the other trainings, u absent more often), once; the
flow then trains on those latents by maximum likelihood with the shared epoch loop (seeded, resumable per
epoch, best held-out loss kept). The checkpoint is written back with the flow's state dict, and its
architecture, training history and held-out figures in ``metadata["flow"]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from survey_deblend.config.training import TrainingConfig
from survey_deblend.errors import SurveyDeblendError
from survey_deblend.models.checkpoint import Checkpoint, load_checkpoint, plain_metadata, save_checkpoint
from survey_deblend.models.flow import FlowArchitecture, FlowHead, coverage_figures
from survey_deblend.training.data import Normalizer, TrainingData, random_band_mask
from survey_deblend.training.loop import Stage, StageResult, config_fingerprint, run_stage
from survey_deblend.training.metrics import redshift_figures, shape_figures

FLOW_STAGE_SEED = 7  # the flow's own random streams: band masks of its latents, initial weights


@dataclasses.dataclass
class Latents:
    """Deblender latent means with the band masks they were encoded with and the labels."""

    latent: np.ndarray  # (N, latent_dim) float32
    mask: np.ndarray  # (N, B) bool
    e: np.ndarray  # (N, 2) float32
    z: np.ndarray  # (N,) float32
    index: np.ndarray  # (N,) data-set index of each row

    def __len__(self) -> int:
        return len(self.latent)

    @staticmethod
    def concat(parts: list[Latents]) -> Latents:
        return Latents(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Latents)))


def flow_architecture(cfg: TrainingConfig, latent_dim: int, n_bands: int) -> FlowArchitecture:
    """The ``FlowArchitecture`` that ``cfg.flow`` describes."""
    f = cfg.flow
    return FlowArchitecture(latent_dim=latent_dim, n_bands=n_bands, context_dim=f.context_dim,
                            embed_hidden=f.embed_hidden, transforms=f.transforms, z_transforms=f.z_transforms,
                            bins=f.bins, hidden=tuple(f.hidden), samples=f.samples)


def encode_split(encoder: torch.nn.Module, norm: Normalizer, data: TrainingData, idx: np.ndarray,
                 masks: np.ndarray, device: torch.device, chunk: int = 1024) -> Latents:
    """Latent means of the blended scenes ``idx`` (sorted) under band masks ``masks`` ``(len(idx), B)``."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(idx), chunk):
            rows = idx[start : start + chunk]
            m = torch.from_numpy(masks[start : start + chunk]).to(device, torch.float32)
            x = norm(torch.from_numpy(data.read("blend", rows)).to(device), m)
            out.append(encoder(x, m)[0].float().cpu().numpy())
    latent = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    e = np.stack([data.read("e1", idx), data.read("e2", idx)], axis=1).astype(np.float32)
    return Latents(latent, masks.astype(bool), e, data.read("z", idx).astype(np.float32), np.asarray(idx))


def _dropout_masks(cfg: TrainingConfig, n: int, n_bands: int, stream: int) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, FLOW_STAGE_SEED, stream])
    return random_band_mask(n, n_bands, rng, cfg.band_dropout, cfg.u_dropout)


def _state_hash(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _cached_latents(path: Path, make) -> Latents:
    """Load the latents from ``path`` or make and store them (atomically): a resumed run skips the encoding."""
    if path.is_file():
        with np.load(path) as z:
            return Latents(**{f.name: z[f.name] for f in dataclasses.fields(Latents)})
    latents = make()
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **dataclasses.asdict(latents))
    os.replace(tmp, path)
    return latents


@dataclasses.dataclass
class FlowInputs:
    """What the flow stage and its calibration share: the frozen encoder and its latents' data and cache keys."""

    source: Path
    target: Path
    checkpoint: Checkpoint
    data: TrainingData
    encoder: torch.nn.Module
    norm: Normalizer
    device: torch.device
    stage_dir: Path
    data_key: dict
    upstream: str

    @property
    def n_bands(self) -> int:
        return len(self.checkpoint.metadata["bands"])

    @property
    def latent_key(self) -> str:
        return config_fingerprint({"data": self.data_key, "upstream": self.upstream})

    def val_latents(self, cfg: TrainingConfig) -> Latents:
        """The held-out split under its own band-dropout masks (cached): early stopping and the calibration."""
        idx = self.data.val_idx
        return _cached_latents(self.stage_dir / f"latents-val-{self.latent_key}.npz", lambda: encode_split(
            self.encoder, self.norm, self.data, idx, _dropout_masks(cfg, len(idx), self.n_bands, 10**6), self.device))


def flow_inputs(cfg: TrainingConfig) -> FlowInputs:
    """Open ``cfg.flow.checkpoint`` (default ``cfg.output``) and the flow's data set (simulated if missing)."""
    from survey_deblend.training.stages import ensure_dataset

    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    source = Path(cfg.flow.checkpoint or cfg.output)
    checkpoint = load_checkpoint(source)
    data_cfg = cfg.flow.data or cfg.data
    ensure_dataset(dataclasses.replace(cfg, data=data_cfg))
    data = TrainingData.open(data_cfg.path, data_cfg.val_fraction, cfg.seed, data_cfg.max_samples)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    meta = checkpoint.metadata
    encoder = checkpoint.build("deblender").to(device)
    for p in encoder.parameters():
        p.requires_grad_(False)
    data_key = {"path": str(data_cfg.path), "val_fraction": data_cfg.val_fraction, "max_samples": data_cfg.max_samples,
                "seed": cfg.seed, "band_dropout": cfg.band_dropout, "u_dropout": cfg.u_dropout}
    stage_dir = Path(cfg.work_dir) / "flow"
    stage_dir.mkdir(parents=True, exist_ok=True)
    return FlowInputs(source, Path(cfg.flow.output or source), checkpoint, data, encoder,
                      Normalizer(np.asarray(meta["m_b"]), float(meta["beta"])).to(device), device, stage_dir,
                      data_key, _state_hash(checkpoint.state["deblender"]))


def train_flow(cfg: TrainingConfig) -> StageResult:
    """Train the flow head on ``cfg.flow.checkpoint`` (default ``cfg.output``), calibrate its e temperature on
    the held-out split (``training.flow_calibration``) and write it to ``flow.output``."""
    from survey_deblend.training.flow_calibration import calibrate_head

    inputs = flow_inputs(cfg)
    checkpoint, data, encoder, norm, device = inputs.checkpoint, inputs.data, inputs.encoder, inputs.norm, inputs.device
    meta, n_bands, stage_dir, latent_key = checkpoint.metadata, inputs.n_bands, inputs.stage_dir, inputs.latent_key
    settings = {k: v for k, v in dataclasses.asdict(cfg.flow).items()
                if k not in ("epochs", "checkpoint", "output", "data")}
    fingerprint = config_fingerprint({"stage": "flow", "flow": settings, "data": inputs.data_key,
                                      "upstream": inputs.upstream})
    draws = max(1, int(cfg.flow.mask_draws))
    t0 = time.perf_counter()

    def make_draw(k: int):  # one band-mask realisation of the training split, cached on its own
        idx = data.train_idx
        return lambda: encode_split(encoder, norm, data, idx, _dropout_masks(cfg, len(idx), n_bands, k), device)

    train = Latents.concat([_cached_latents(stage_dir / f"latents-train{k}-{latent_key}.npz", make_draw(k))
                            for k in range(draws)])
    val = inputs.val_latents(cfg)
    if cfg.progress:
        print(f"[flow] latents of {len(train)} training rows ({draws} band-mask draws) and {len(val)} held-out "
              f"rows ready ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    table = Latents.concat([train, val])
    tensors = {
        "latent": torch.from_numpy(table.latent).to(device),
        "mask": torch.from_numpy(table.mask).to(device, torch.float32),
        "e": torch.from_numpy(table.e).to(device),
        "z": torch.from_numpy(table.z).to(device),
    }
    torch.manual_seed(cfg.seed * 100_003 + FLOW_STAGE_SEED)
    arch = flow_architecture(cfg, int(meta["latent_dim"]), n_bands)
    head = FlowHead(arch).to(device)
    head.set_standardization(train.e, train.z)

    def loss_fn(rows: np.ndarray, rng: np.random.Generator, training: bool) -> torch.Tensor:
        sel = torch.from_numpy(rows).to(device)
        t = {k: v[sel] for k, v in tensors.items()}
        return -head.log_prob(t["e"], t["z"], t["latent"], t["mask"]).mean()

    rows_train = np.arange(len(train))
    rows_val = len(train) + np.arange(len(val))
    stage = Stage("flow", {"flow": head}, [head], loss_fn, cfg.flow, fingerprint)
    result = run_stage(stage, rows_train, rows_val, cfg.seed, Path(cfg.work_dir), cfg.progress)
    head = head.cpu().eval()
    calibration = calibrate_head(head, val)
    t1 = time.perf_counter()
    figures = held_out_flow_figures(head, checkpoint, data, encoder.cpu(), norm.cpu())
    figures["seconds"] = round(time.perf_counter() - t1, 1)
    metadata = dict(meta)
    metadata["flow"] = {
        "architecture": head.arch.to_dict(),
        "calibration": calibration,
        "source_checkpoint": str(inputs.source),
        "training_data": data.describe(),
        "training": {
            "best_val_nll": float(result.best_val), "best_epoch": int(result.best_epoch),
            "history": result.history, "seconds": round(float(result.seconds), 1),
            "train_rows_per_s": float(result.train_images_per_s), "mask_draws": draws,
            "settings": plain_metadata(dataclasses.asdict(cfg.flow)),
        },
        "metrics": figures,
    }
    state = {**checkpoint.state, "flow": head.state_dict()}
    save_checkpoint(inputs.target, Checkpoint(metadata=metadata, state=state))
    if cfg.progress:
        print(f"[flow] wrote {inputs.target}; held-out: {figures}", file=sys.stderr, flush=True)
    return result


def held_out_flow_figures(head: FlowHead, checkpoint: Checkpoint, data: TrainingData, encoder: torch.nn.Module,
                          norm: Normalizer, snr_min: float = 20.0) -> dict[str, Any]:
    """Flow and Gaussian-regressor figures on the held-out split (SNR > ``snr_min``), all bands and without u."""
    idx = data.val_idx
    if "snr" in data.dataset.fields:
        idx = idx[data.read("snr", idx) > snr_min]
    if idx.size == 0:
        raise SurveyDeblendError(f"{data.path}: no held-out sample with snr > {snr_min}")
    regressor = checkpoint.build("regressor")
    n_bands = len(checkpoint.metadata["bands"])
    out: dict[str, Any] = {"n_held_out_snr_gt_20": int(idx.size)}
    for label, drop_u in (("all_bands", False), ("no_u", True)):
        masks = np.ones((idx.size, n_bands), bool)
        masks[:, 0] = not drop_u
        lat = encode_split(encoder, norm, data, idx, masks, torch.device("cpu"))
        out[label] = {k: round(float(v), 5) for k, v in flow_figures(head, lat, regressor).items()}
    return out


def flow_figures(head: FlowHead, lat: Latents, regressor: torch.nn.Module | None = None) -> dict[str, float]:
    """Posterior-mean and posterior-draw shape figures, redshift figures and coverage of the flow on ``lat``."""
    e_true, z_true = lat.e.astype(np.float64), lat.z.astype(np.float64)
    s = head.summarize(lat.latent, lat.mask, lat.index)
    mean = np.stack([s["e1_pred"], s["e2_pred"]], axis=1)
    draw = np.stack([s["e1_sample"], s["e2_sample"]], axis=1)
    fig = shape_figures(e_true, mean)
    fig["roundness_sample"] = shape_figures(e_true, draw)["roundness"]
    fig.update(redshift_figures(z_true, s["z_pred"]))
    fig.update(coverage_figures(head.calibration(lat.latent, lat.mask, e_true, z_true)))
    if regressor is not None:
        with torch.inference_mode():
            pred = regressor(torch.from_numpy(lat.latent)).double().numpy()
        gauss = {**shape_figures(e_true, pred[:, :2]), **redshift_figures(z_true, pred[:, 3])}
        fig.update({f"{k}_regressor": v for k, v in gauss.items() if k in ("rmse_e", "roundness", "z_sigma_nmad",
                                                                          "z_outliers")})
    return fig

"""The epoch loop shared by the three trainings: seeded epochs, validation, best weights, resume.

Each epoch draws its shuffling and noise from ``(seed, stage, epoch)`` alone, so a run resumed from the state
file of epoch k continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from survey_deblend.config.training import StageConfig
from survey_deblend.errors import SurveyDeblendError
from survey_deblend.training.data import iterate_batches

# loss_fn(batch_indices, rng, train) -> (loss tensor, number of images)
LossFn = Callable[[np.ndarray, np.random.Generator, bool], torch.Tensor]

STAGE_IDS = {"vae": 1, "deblender": 2, "regressor": 3}


@dataclass
class StageResult:
    """What a stage reports: best validation loss, per-epoch history, images per second, wall time."""

    best_val: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    train_images_per_s: float = float("nan")
    seconds: float = 0.0


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked; nothing on CPU."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def config_fingerprint(obj: Any) -> str:
    """Short hash of a JSON-able description: a state file is resumed only under the same settings."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_stage(
    name: str,
    modules: dict[str, torch.nn.Module],
    trainable: list[torch.nn.Module],
    loss_fn: LossFn,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    stage: StageConfig,
    seed: int,
    work_dir: Path,
    fingerprint: str,
    progress: bool = True,
) -> StageResult:
    """Train ``trainable`` for ``stage.epochs``; keep ``work_dir/<name>/best.pt``; resume from ``state.pt``.

    On return the modules hold the best weights (lowest held-out loss).
    """
    stage_dir = Path(work_dir) / name
    stage_dir.mkdir(parents=True, exist_ok=True)
    state_path, best_path = stage_dir / "state.pt", stage_dir / "best.pt"
    params = [p for m in trainable for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    result = StageResult(best_val=float("inf"), best_epoch=-1)
    start_epoch = 0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != fingerprint:
            raise SurveyDeblendError(
                f"{state_path}: left by a run with other settings; remove {stage_dir} to start this stage afresh"
            )
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"]) + 1
        result = StageResult(float(state["best_val"]), int(state["best_epoch"]), list(state["history"]))
        result.seconds = float(state.get("seconds", 0.0))
        result.train_images_per_s = float(state.get("train_images_per_s", float("nan")))
        if progress and start_epoch < stage.epochs:
            print(f"[{name}] resuming after epoch {start_epoch}/{stage.epochs}", file=sys.stderr, flush=True)
    stage_id = STAGE_IDS.get(name, 9)
    for epoch in range(start_epoch, stage.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(seed * 100_003 + stage_id * 1009 + epoch)
        rng = np.random.default_rng([seed, stage_id, epoch])
        for group in optimizer.param_groups:  # cosine decay over the stage; depends on the epoch alone
            group["lr"] = float(stage.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(stage.epochs, 1))))
        for m in trainable:
            m.train()
        total, count = 0.0, 0
        batches = iterate_batches(train_idx, stage.batch_size, rng)
        for k, batch in enumerate(batches):
            loss = loss_fn(batch, rng, True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
            if progress and (k + 1) % max(1, len(batches) // 5) == 0:
                rate = count / (time.perf_counter() - t0)
                print(
                    f"[{name}] epoch {epoch + 1}/{stage.epochs} batch {k + 1}/{len(batches)} "
                    f"loss {total / count:.4f} ({rate:.0f} img/s)",
                    file=sys.stderr,
                    flush=True,
                )
        train_seconds = time.perf_counter() - t0
        val_loss = evaluate_loss(loss_fn, val_idx, stage.batch_size, [seed, stage_id, 10**6], trainable)
        elapsed = time.perf_counter() - t0
        result.seconds += elapsed
        result.train_images_per_s = count / max(train_seconds, 1e-9)
        result.history.append({"epoch": epoch + 1, "train_loss": total / max(count, 1), "val_loss": val_loss})
        if val_loss < result.best_val:
            result.best_val, result.best_epoch = val_loss, epoch + 1
            _atomic_save({k: m.state_dict() for k, m in modules.items()}, best_path)
        _atomic_save(
            {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "modules": {k: m.state_dict() for k, m in modules.items()},
                "optimizer": optimizer.state_dict(),
                "best_val": result.best_val,
                "best_epoch": result.best_epoch,
                "history": result.history,
                "seconds": result.seconds,
                "train_images_per_s": result.train_images_per_s,
            },
            state_path,
        )
        if progress:
            print(
                f"[{name}] epoch {epoch + 1}/{stage.epochs} train {total / max(count, 1):.4f} "
                f"val {val_loss:.4f} best {result.best_val:.4f} ({elapsed:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    if best_path.is_file():
        best = torch.load(best_path, map_location="cpu", weights_only=True)
        for key, module in modules.items():
            module.load_state_dict(best[key])
    for m in modules.values():
        m.eval()
    return result


def evaluate_loss(
    loss_fn: LossFn, idx: np.ndarray, batch_size: int, rng_seed: list[int], trainable: list[torch.nn.Module]
) -> float:
    """Mean held-out loss with a fixed random stream (same band masks every epoch)."""
    for m in trainable:
        m.eval()
    rng = np.random.default_rng(rng_seed)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in iterate_batches(idx, batch_size, None):
            total += float(loss_fn(batch, rng, False)) * len(batch)
            count += len(batch)
    return total / max(count, 1)

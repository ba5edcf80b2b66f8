"""The epoch loop shared by the three trainings, in its seams: seeding, schedule, one epoch, state files, log.

Each epoch draws its shuffling and noise from ``(seed, stage.seed_stream, epoch)`` alone, so a run resumed from
the state file of epoch k continues exactly as the uninterrupted run would have.
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

# loss_fn(batch_indices, rng, train) -> mean loss over the batch
LossFn = Callable[[np.ndarray, np.random.Generator, bool], torch.Tensor]

HELD_OUT_DRAW = 10**6  # the held-out loss draws from (seed, stream, HELD_OUT_DRAW): the same masks every epoch


@dataclass
class StageResult:
    """What a stage reports: best validation loss, per-epoch history, images per second, wall time."""

    best_val: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    train_images_per_s: float = float("nan")
    seconds: float = 0.0


@dataclass
class Stage:
    """One training stage: what it trains with which loss, its settings, and the fingerprint it resumes under."""

    name: str
    modules: dict[str, torch.nn.Module]  # saved in the state and best files, restored from them
    trainable: list[torch.nn.Module]  # what the optimizer steps
    loss_fn: LossFn
    config: StageConfig
    fingerprint: str  # a state file is resumed only when it was written under the same one

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.trainable for p in m.parameters()]

    def state_dicts(self) -> dict[str, dict[str, Any]]:
        return {k: m.state_dict() for k, m in self.modules.items()}

    def load_state_dicts(self, states: dict[str, dict[str, Any]]) -> None:
        for key, module in self.modules.items():
            module.load_state_dict(states[key])


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked; nothing on CPU."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def config_fingerprint(obj: Any) -> str:
    """Short hash of a JSON-able description: a state file is resumed only under the same settings."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- seeding and schedule -------------------------------------------------------------------------------------


def epoch_rng(seed: int, stream: int, epoch: int) -> np.random.Generator:
    """Seed torch for one epoch and return its numpy generator; both depend on ``(seed, stream, epoch)`` alone."""
    torch.manual_seed(seed * 100_003 + stream * 1009 + epoch)
    return np.random.default_rng([seed, stream, epoch])


def cosine_lr(stage: StageConfig, epoch: int) -> float:
    """Learning rate of ``epoch``: cosine decay from ``stage.lr`` over the stage, a function of the epoch alone."""
    return float(stage.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(stage.epochs, 1))))


# --- printing -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageLog:
    """Progress lines of one stage on stderr (nothing when disabled)."""

    name: str
    epochs: int
    enabled: bool = True

    def _print(self, text: str) -> None:
        if self.enabled:
            print(f"[{self.name}] {text}", file=sys.stderr, flush=True)

    def resuming(self, start_epoch: int) -> None:
        if start_epoch < self.epochs:
            self._print(f"resuming after epoch {start_epoch}/{self.epochs}")

    def batch(self, epoch: int, k: int, n_batches: int, mean_loss: float, images_per_s: float) -> None:
        if (k + 1) % max(1, n_batches // 5) == 0:
            self._print(
                f"epoch {epoch + 1}/{self.epochs} batch {k + 1}/{n_batches} "
                f"loss {mean_loss:.4f} ({images_per_s:.0f} img/s)"
            )

    def epoch(self, epoch: int, train_loss: float, val_loss: float, best_val: float, seconds: float) -> None:
        self._print(
            f"epoch {epoch + 1}/{self.epochs} train {train_loss:.4f} val {val_loss:.4f} best {best_val:.4f} "
            f"({seconds:.0f} s)"
        )


# --- state files: resume and checkpointing --------------------------------------------------------------------


@dataclass(frozen=True)
class StageFiles:
    """``work_dir/<name>/state.pt`` (everything to resume after an epoch) and ``best.pt`` (the best weights)."""

    state: Path
    best: Path

    @classmethod
    def under(cls, work_dir: Path, name: str) -> StageFiles:
        stage_dir = Path(work_dir) / name
        stage_dir.mkdir(parents=True, exist_ok=True)
        return cls(stage_dir / "state.pt", stage_dir / "best.pt")


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def resume(files: StageFiles, stage: Stage, optimizer: torch.optim.Optimizer) -> tuple[StageResult, int]:
    """The result so far and the first epoch to run: from the state file when there is one, else a fresh start.

    A state file written under another fingerprint is refused (one line naming it), never silently mixed in.
    """
    if not files.state.is_file():
        return StageResult(best_val=float("inf"), best_epoch=-1), 0
    state = torch.load(files.state, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != stage.fingerprint:
        raise SurveyDeblendError(
            f"{files.state}: left by a run with other settings; remove {files.state.parent} to start this stage afresh"
        )
    stage.load_state_dicts(state["modules"])
    optimizer.load_state_dict(state["optimizer"])
    result = StageResult(float(state["best_val"]), int(state["best_epoch"]), list(state["history"]))
    result.seconds = float(state.get("seconds", 0.0))
    result.train_images_per_s = float(state.get("train_images_per_s", float("nan")))
    return result, int(state["epoch"]) + 1


def save_epoch(
    files: StageFiles, stage: Stage, optimizer: torch.optim.Optimizer, epoch: int, result: StageResult,
    improved: bool,
) -> None:
    """After an epoch: the best weights when it improved, then the state file (atomically, in that order)."""
    if improved:
        _atomic_save(stage.state_dicts(), files.best)
    _atomic_save(
        {
            "fingerprint": stage.fingerprint,
            "epoch": epoch,
            "modules": stage.state_dicts(),
            "optimizer": optimizer.state_dict(),
            "best_val": result.best_val,
            "best_epoch": result.best_epoch,
            "history": result.history,
            "seconds": result.seconds,
            "train_images_per_s": result.train_images_per_s,
        },
        files.state,
    )


def restore_best(files: StageFiles, stage: Stage) -> None:
    """Load the best epoch's weights into the modules (when any epoch ran) and leave them in eval mode."""
    if files.best.is_file():
        stage.load_state_dicts(torch.load(files.best, map_location="cpu", weights_only=True))
    for m in stage.modules.values():
        m.eval()


# --- the loop -------------------------------------------------------------------------------------------------


def train_epoch(
    stage: Stage, optimizer: torch.optim.Optimizer, train_idx: np.ndarray, rng: np.random.Generator, epoch: int,
    log: StageLog,
) -> tuple[float, int]:
    """One pass over the training set: ``(summed loss times batch sizes, images seen)``."""
    params = stage.parameters()
    for m in stage.trainable:
        m.train()
    total, count = 0.0, 0
    t0 = time.perf_counter()
    batches = iterate_batches(train_idx, stage.config.batch_size, rng)
    for k, batch in enumerate(batches):
        loss = stage.loss_fn(batch, rng, True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, stage.config.grad_clip_norm)
        optimizer.step()
        total += float(loss.detach()) * len(batch)
        count += len(batch)
        log.batch(epoch, k, len(batches), total / count, count / (time.perf_counter() - t0))
    return total, count


def run_stage(
    stage: Stage, train_idx: np.ndarray, val_idx: np.ndarray, seed: int, work_dir: Path, progress: bool = True
) -> StageResult:
    """Train ``stage`` for ``stage.config.epochs``; keep ``work_dir/<name>/best.pt``; resume from ``state.pt``.

    On return the modules hold the best weights (lowest held-out loss).
    """
    cfg = stage.config
    files = StageFiles.under(work_dir, stage.name)
    log = StageLog(stage.name, cfg.epochs, progress)
    optimizer = torch.optim.AdamW(stage.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    result, start_epoch = resume(files, stage, optimizer)
    if start_epoch > 0:
        log.resuming(start_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        rng = epoch_rng(seed, cfg.seed_stream, epoch)
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(cfg, epoch)
        total, count = train_epoch(stage, optimizer, train_idx, rng, epoch, log)
        train_seconds = time.perf_counter() - t0
        val_loss = evaluate_loss(stage.loss_fn, val_idx, cfg.batch_size, [seed, cfg.seed_stream, HELD_OUT_DRAW],
                                 stage.trainable)  # fmt: skip
        result.seconds += time.perf_counter() - t0
        result.train_images_per_s = count / max(train_seconds, 1e-9)
        result.history.append({"epoch": epoch + 1, "train_loss": total / max(count, 1), "val_loss": val_loss})
        improved = val_loss < result.best_val
        if improved:
            result.best_val, result.best_epoch = val_loss, epoch + 1
        save_epoch(files, stage, optimizer, epoch, result, improved)
        log.epoch(epoch, total / max(count, 1), val_loss, result.best_val, time.perf_counter() - t0)
    restore_best(files, stage)
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

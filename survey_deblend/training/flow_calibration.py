"""Calibration of the flow head's (e1, e2) posterior: a temperature on the e flow's base, fitted on held-out data.

Why: the flow is fitted by maximum likelihood on a finite training split; on new scenes its (e1, e2) posterior
came out slightly too narrow (68 % HPD coverage 0.655, draws 2 % too round). A temperature T maps the base
points ``eps`` to ``T * eps`` before the flow (``FlowHead.sample_e``; density of the tempered flow in
``FlowHead.log_prob_e``): one number that widens (T > 1) or narrows the posterior without touching the networks,
so the posterior mean (``e1_pred``, ``e2_pred``, from untempered draws) does not move.

How: on a validation split (the flow stage's held-out split, never the benchmark's test sets), the fraction of
truths inside the tempered 68 % highest-density region is measured on a grid of T with common random numbers
(``FlowHead.calibration``), and T is where that curve crosses 0.68 (linear interpolation); its standard error is
a bootstrap over galaxies. The held-out negative log-likelihood at T = 1 and at the fitted T is stored too: the
likelihood-optimal temperature (temperature scaling) is a cross-check on the coverage fit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from survey_deblend.models.flow import FlowHead, coverage_figures

if TYPE_CHECKING:
    from survey_deblend.training.flow import Latents

__all__ = ["calibrate_flow", "calibrate_head", "coverage_matrix", "crossing", "fit_temperature"]

LEVEL = 0.68  # the credible level whose coverage is made nominal
START = (0.9, 1.0, 1.1)  # the first temperatures; a crossing outside is bracketed by OUTER, one side at a time
OUTER = ((0.75, 1.25), (0.6, 1.5), (0.45, 2.0), (0.3, 3.0))
REFINE = 3  # points inside the bracketing pair
N_SAMPLES = 256  # draws per galaxy for each HPD level
BOOTSTRAP = 200


def coverage_matrix(head: FlowHead, lat: Latents, temperatures: tuple[float, ...], level: float = LEVEL,
                    n_samples: int = N_SAMPLES, seed: int = 0) -> np.ndarray:
    """``(N, G)`` bool: truth inside the ``level`` HPD region of the posterior tempered by each temperature."""
    z = np.ones(len(lat), np.float32)  # z does not enter the e statistics
    cols = [head.calibration(lat.latent, lat.mask, lat.e, z, n_samples=n_samples, seed=seed,
                             temperature=t)["e_hpd_level"] <= level for t in temperatures]
    return np.stack(cols, axis=1) if cols else np.zeros((len(lat), 0), bool)


def crossing(temperatures: np.ndarray, coverage: np.ndarray, level: float = LEVEL) -> tuple[float, bool]:
    """``(T, clipped)``: where the coverage curve (made non-decreasing) reaches ``level``; the grid end if never."""
    t, c = np.asarray(temperatures, float), np.maximum.accumulate(np.asarray(coverage, float))
    above = np.flatnonzero(c >= level)
    if above.size == 0:
        return float(t[-1]), True
    g = int(above[0])
    if g == 0:
        return float(t[0]), bool(c[0] > level)
    return float(t[g - 1] + (level - c[g - 1]) * (t[g] - t[g - 1]) / (c[g] - c[g - 1])), False


def fit_temperature(inside: np.ndarray, temperatures: np.ndarray, level: float = LEVEL, bootstrap: int = BOOTSTRAP,
                    seed: int = 0) -> tuple[float, float, bool]:
    """``(T, standard error, clipped)`` from ``coverage_matrix`` columns on sorted ``temperatures``."""
    t, clipped = crossing(temperatures, inside.mean(axis=0), level)
    rng = np.random.default_rng(seed)
    n = len(inside)
    boot = [crossing(temperatures, inside[rng.integers(0, n, n)].mean(axis=0), level)[0] for _ in range(bootstrap)]
    return t, float(np.std(boot, ddof=1)) if bootstrap > 1 else float("nan"), clipped


def _nll(head: FlowHead, lat: Latents, temperature: float) -> float:
    with torch.inference_mode():
        ctx = head.context(torch.from_numpy(lat.latent), torch.from_numpy(lat.mask).float())
        return float(-head.log_prob_e(torch.from_numpy(lat.e), ctx, temperature=temperature).mean())


def _scan(head: FlowHead, val: Latents, level: float, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted temperatures and their ``coverage_matrix`` columns: a bracket of the crossing around T = 1, widened
    until it holds (up to ``OUTER``), then ``REFINE`` points inside it."""
    grid: dict[float, np.ndarray] = {}

    def add(ts: tuple[float, ...]) -> None:
        ts = tuple(t for t in ts if t not in grid)
        grid.update(zip(ts, coverage_matrix(head, val, ts, level, n_samples).T, strict=True))

    add(START)
    for lo, hi in OUTER:
        cov = {t: float(col.mean()) for t, col in grid.items()}
        if max(cov.values()) >= level and min(cov.values()) <= level:
            break
        add((lo,) if min(cov.values()) > level else (hi,))
    t = np.asarray(sorted(grid))
    t0, clipped = crossing(t, np.asarray([grid[x].mean() for x in t]), level)
    if not clipped:
        g = int(np.clip(np.searchsorted(t, t0), 1, len(t) - 1))
        add(tuple(round(float(x), 4) for x in np.linspace(t[g - 1], t[g], REFINE + 2)[1:-1]))
    t = np.asarray(sorted(grid))
    return t, np.stack([grid[x] for x in t], axis=1)


def calibrate_head(head: FlowHead, val: Latents, level: float = LEVEL, n_samples: int = N_SAMPLES) -> dict[str, Any]:
    """Fit the e temperature on ``val``, set it on ``head.arch`` (rounded to 1e-3), return the metadata record."""
    grid, inside = _scan(head, val, level, n_samples)
    temperature, err, clipped = fit_temperature(inside, grid, level)
    temperature = round(temperature, 3)
    nll_before = _nll(head, val, 1.0)
    head.arch = dataclasses.replace(head.arch, e_temperature=temperature)
    after = coverage_figures(head.calibration(val.latent, val.mask, val.e, np.ones(len(val), np.float32),
                                              n_samples=n_samples, seed=1))
    return {
        "e_temperature": temperature,
        "e_temperature_err": round(err, 4) if math.isfinite(err) else None,
        "clipped_to_grid": clipped,
        "method": f"T where the fraction of truths inside the tempered {level:.0%} (e1, e2) HPD region crosses "
                  f"{level} on the validation split (grid of T, common random numbers, {n_samples} draws per "
                  "galaxy); error: bootstrap over galaxies",
        "validation_rows": len(val),
        "grid": [round(float(x), 4) for x in grid],
        "coverage_e_68_by_t": [round(float(x), 4) for x in inside.mean(axis=0)],
        "val_nll_e_untempered": round(nll_before, 5),
        "val_nll_e_tempered": round(_nll(head, val, temperature), 5),
        "val_coverage_e_68": round(after["coverage_e_68"], 4),
        "val_coverage_e_95": round(after["coverage_e_95"], 4),
    }


def calibrate_flow(cfg: Any) -> dict[str, Any]:
    """``survey-deblend train flow-calibration``: fit the e temperature of the flow in ``cfg.flow.checkpoint``
    (default ``cfg.output``) on its data set's held-out split, no retraining, and write it to ``flow.output``.

    The networks are copied unchanged (so are ``e1_pred``, ``e2_pred``); the metadata gets the temperature
    (``flow.architecture.e_temperature``), the fit (``flow.calibration``) and the held-out figures re-measured
    (``flow.metrics``; the previous ones kept as ``flow.metrics_untempered``).
    """
    from survey_deblend.models.checkpoint import Checkpoint, save_checkpoint
    from survey_deblend.training.flow import flow_inputs, held_out_flow_figures

    inputs = flow_inputs(cfg)
    checkpoint = inputs.checkpoint
    head = checkpoint.build("flow")  # a one-line error when the checkpoint has no flow
    head.arch = dataclasses.replace(head.arch, e_temperature=1.0)
    record = calibrate_head(head, inputs.val_latents(cfg))
    figures = held_out_flow_figures(head, checkpoint, inputs.data, inputs.encoder.cpu(), inputs.norm.cpu())
    flow = dict(checkpoint.metadata["flow"])
    if "metrics" in flow and "metrics_untempered" not in flow:
        flow["metrics_untempered"] = flow["metrics"]
    flow.update({"architecture": head.arch.to_dict(), "calibration": record, "metrics": figures})
    metadata = {**checkpoint.metadata, "flow": flow}
    save_checkpoint(inputs.target, Checkpoint(metadata=metadata, state=checkpoint.state))
    return {"checkpoint": str(inputs.target), **record, "held_out": figures}

"""Shear response of a shape estimator measured on metacalibration images, and calibrated ensemble shear.

``R_ij = [e_i(+delta_j) - e_i(-delta_j)] / (2 delta)`` per galaxy from the four sheared images; the shapes are
those of the unsheared reconvolved image; the ensemble shear is ``<R>^-1 <e>`` (Huff & Mandelbaum 2017,
Sheldon & Huff 2017). The estimator is any callable ``shapes(images, band_mask) -> (e1, e2)`` that takes a
stack of stamps: the network runs once over the 5N metacal images of a batch.

``symmetrize`` removes an additive bias of the estimator itself (a network's constant ``c`` on a round PSF,
which metacalibration would only divide by <R>): ``e_sym(x) = [e(x) - e(rot90(x))] / 2``. A 90-degree turn maps
``e -> -e`` (spin 2; either direction), so a constant ``c`` cancels exactly while the signal adds. The turn is
applied to the reconvolved images, whose PSF is the round target, so the turned image is a valid image of the
turned galaxy. ``"noshear"`` turns the noshear image only (one more image per galaxy): R from the sheared images
does not see a constant c, and the rotated galaxy's R has the same ensemble mean for a population without a
preferred direction (the 90-degree-symmetric sky). ``"all"`` turns all five (twice the network's work) so that R
is, galaxy by galaxy, the response of the symmetrized estimator (it also trims R's scatter a little).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from survey_deblend.calibration.metacal import DEFAULT_DELTA, SHEAR_TYPES, metacal_images
from survey_deblend.calibration.noise import border_noise_sigma
from survey_deblend.calibration.psf import PSFModel
from survey_deblend.errors import InputError

ShapesFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Symmetrize = bool | Literal["none", "noshear", "all"]
SYMMETRIZE_MODES = ("none", "noshear", "all")


@dataclass(frozen=True)
class MetacalResult:
    """Per galaxy: shapes on the unsheared reconvolved image, the response matrix, and all five shapes.

    Rows whose PSF was unusable (``ok`` False) are NaN. ``e1, e2, R`` are those of the (symmetrized) estimator;
    ``sheared`` and ``rotated`` the estimator's raw output on the five images and on their 90-degree turns."""

    e1: np.ndarray  # (N,)
    e2: np.ndarray  # (N,)
    R: np.ndarray  # (N, 2, 2): R[:, i, j] = d e_i / d g_j
    sheared: np.ndarray  # (5, N, 2) shapes on each image of SHEAR_TYPES
    ok: np.ndarray  # (N,) bool
    rotated: np.ndarray | None = None  # (5, N, 2) shapes on the turned images (NaN where not turned)
    symmetrize: str = "none"

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The Parquet columns of DESIGN.md: ``r11, r12, r21, r22`` (and the noshear shapes)."""
        return {"e1_mcal": self.e1, "e2_mcal": self.e2, "r11": self.R[:, 0, 0], "r12": self.R[:, 0, 1],
                "r21": self.R[:, 1, 0], "r22": self.R[:, 1, 1]}  # fmt: skip


def response_matrix(sheared: np.ndarray, delta: float = DEFAULT_DELTA) -> np.ndarray:
    """``R (N, 2, 2)`` from shapes ``(5, N, 2)`` on the images of SHEAR_TYPES (central finite differences)."""
    e = np.asarray(sheared, dtype=np.float64)
    plus, minus = e[[1, 3]], e[[2, 4]]  # (2 = j, N, 2 = i)
    return ((plus - minus) / (2.0 * delta)).transpose(1, 2, 0)


def symmetrize_mode(symmetrize: Symmetrize) -> str:
    """``"none"``, ``"noshear"`` or ``"all"`` from the option (True means ``"noshear"``, False ``"none"``)."""
    mode = ("noshear" if symmetrize else "none") if isinstance(symmetrize, bool) else symmetrize
    if mode not in SYMMETRIZE_MODES:
        raise InputError(f"metacal symmetrize: expected one of {SYMMETRIZE_MODES} or a bool, got {symmetrize!r}")
    return str(mode)


def symmetrized(sheared: np.ndarray, rotated: np.ndarray, mode: str) -> np.ndarray:
    """Shapes ``(5, N, 2)`` of the symmetrized estimator: ``[e(x) - e(rot90 x)] / 2`` on the images ``mode`` turns."""
    out = np.array(sheared, dtype=np.float64)
    turned = {"none": [], "noshear": [0], "all": list(range(len(SHEAR_TYPES)))}[mode]
    out[turned] = 0.5 * (out[turned] - np.asarray(rotated, dtype=np.float64)[turned])
    return out


def metacal_response(
    images: np.ndarray,
    psf: PSFModel,
    pixel_scale: float,
    shapes: ShapesFn,
    band_mask: np.ndarray | None = None,
    noise_sigma: np.ndarray | None = None,
    delta: float = DEFAULT_DELTA,
    fixnoise: bool = True,
    seed: int = 0,
    noise: np.ndarray | None = None,
    order: int = 2,
    device: str | torch.device | None = None,
    batch: int = 1024,
    symmetrize: Symmetrize = False,
    margin: int = 0,
) -> MetacalResult:
    """Metacalibrate stamps ``(N, B, S, S)`` (model or source frame, sky-subtracted) and run ``shapes`` on the
    five images of each batch of ``batch`` galaxies in one call (5 x batch stamps, grouped by image type, then
    the 90-degree turns of the images ``symmetrize`` names: module docstring). ``margin``: the stamps are cut that
    many pixels wider on every side than what ``shapes`` reads; the five images are cropped after the shear
    (``calibration.batch``); ``noise_sigma`` defaults to the border of the whole cut.

    ``noise_sigma`` (N, B) defaults to the border MAD of each stamp (``calibration.noise``); absent bands
    (``band_mask`` False) get no noise and stay zero."""
    mode = symmetrize_mode(symmetrize)
    n_turn = {"none": 0, "noshear": 1, "all": len(SHEAR_TYPES)}[mode]
    images = np.asarray(images, dtype=np.float32)
    n, b = images.shape[:2]
    mask = np.ones((n, b), dtype=bool) if band_mask is None else np.asarray(band_mask, dtype=bool)
    if mask.shape != (n, b):
        raise InputError(f"band_mask: expected shape ({n}, {b}), got {mask.shape}")
    if noise_sigma is None:
        noise_sigma = border_noise_sigma(images)
    noise_sigma = np.where(mask, np.asarray(noise_sigma, dtype=np.float64), 0.0)
    ok = np.all(psf.usable | ~mask, axis=1)
    sheared = np.full((len(SHEAR_TYPES), n, 2), np.nan)
    rotated = np.full((len(SHEAR_TYPES), n, 2), np.nan)
    for start in range(0, n, batch):
        sl = slice(start, min(start + batch, n))
        mc = metacal_images(
            images[sl], psf.subset(sl), pixel_scale, noise_sigma[sl], delta=delta, fixnoise=fixnoise,
            seed=seed + start, noise=None if noise is None else noise[sl], order=order, device=device, margin=margin,
        )  # fmt: skip
        k = sl.stop - sl.start
        if n_turn:  # the turned images after the five, in the same call (one network pass)
            mc = torch.cat([mc, torch.rot90(mc[:n_turn], 1, dims=(-2, -1))])
        stack = mc.reshape(len(mc) * k, *mc.shape[2:]).cpu().numpy()
        e1, e2 = shapes(stack, np.tile(mask[sl], (len(mc), 1)))
        e = np.stack([np.asarray(e1, dtype=np.float64), np.asarray(e2, dtype=np.float64)], -1).reshape(len(mc), k, 2)
        sheared[:, sl], rotated[:n_turn, sl] = e[: len(SHEAR_TYPES)], e[len(SHEAR_TYPES) :]
    sheared[:, ~ok] = np.nan
    rotated[:, ~ok] = np.nan
    est = symmetrized(sheared, rotated, mode)
    return MetacalResult(est[0, :, 0], est[0, :, 1], response_matrix(est, delta), sheared, ok, rotated, mode)


def ensemble_shear(
    e: np.ndarray, R: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(<R>^-1 <e>, <R>)`` over the rows where ``e`` (N, 2) and ``R`` (N, 2, 2) are finite."""
    e, R = np.asarray(e, dtype=np.float64), np.asarray(R, dtype=np.float64)
    good = np.all(np.isfinite(e), axis=1) & np.all(np.isfinite(R), axis=(1, 2))
    w = np.ones(len(e)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.where(good, w, 0.0)
    if w.sum() <= 0:
        return np.full(2, np.nan), np.full((2, 2), np.nan)
    e_mean = np.einsum("n,ni->i", w, np.where(good[:, None], e, 0.0)) / w.sum()
    r_mean = np.einsum("n,nij->ij", w, np.where(good[:, None, None], R, 0.0)) / w.sum()
    return np.linalg.solve(r_mean, e_mean), r_mean


def _paired_estimate(e: np.ndarray, R: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``(m1, m2, c1, c2)`` from shapes, responses and applied shears of balanced +g/-g sets."""
    r_inv = np.linalg.inv(R.mean(axis=0))
    out = np.full(4, np.nan)
    m = np.zeros(2)
    for j in range(2):
        plus, minus = g[:, j] > 0, g[:, j] < 0
        if plus.any() and minus.any():
            diff = r_inv @ (e[plus].mean(axis=0) - e[minus].mean(axis=0))
            m[j] = diff[j] / (g[plus, j].mean() - g[minus, j].mean()) - 1.0
            out[j] = m[j]
    out[2:] = r_inv @ e.mean(axis=0) - (1.0 + m) * g.mean(axis=0)
    return out


def _finite_pairs(pair_id: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    """Stamps (bool) of the pairs whose every member is finite in every array (a pair is kept or dropped whole)."""
    good = np.ones(len(pair_id), dtype=bool)
    for a in arrays:
        good &= np.all(np.isfinite(a.reshape(len(a), -1)), axis=1)
    return ~np.isin(pair_id, np.unique(pair_id[~good]))


def _jackknife(estimate, pair_id: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """``estimate(mask)`` on all stamps and its delete-one-block jackknife error over blocks of pair ids."""
    full = estimate(np.ones(len(pair_id), dtype=bool))
    _, rank = np.unique(pair_id, return_inverse=True)
    k = int(min(n_blocks, rank.max() + 1)) if len(rank) else 0
    err = np.full(len(full), np.nan)
    if k > 1:
        block = rank * k // (rank.max() + 1)
        jack = np.array([estimate(block != i) for i in range(k)])
        err = np.sqrt((k - 1) / k * np.sum((jack - jack.mean(axis=0)) ** 2, axis=0))
    return full, err


def _as_inputs(e, g_applied, pair_id, R):
    e, g = np.asarray(e, dtype=np.float64), np.asarray(g_applied, dtype=np.float64)
    R = np.broadcast_to(np.eye(2), (len(e), 2, 2)) if R is None else np.asarray(R, dtype=np.float64)
    return e, g, np.asarray(pair_id), R


def paired_shear_bias(
    e: np.ndarray, g_applied: np.ndarray, pair_id: np.ndarray, R: np.ndarray | None = None, n_blocks: int = 100
) -> dict[str, float]:
    """m and c of a paired shear test: sets that differ only in the sign of one constant shear.

    ``e`` (n, 2) shapes, ``g_applied`` (n, 2), ``pair_id`` (n,) groups the stamps made from one base scene
    (kept or dropped together), ``R`` (n, 2, 2) per-stamp responses (None: raw, R = 1). ``m_j = (g_hat_j(+) -
    g_hat_j(-)) / (2 g) - 1`` with ``g_hat = <R>^-1 <e>`` and ``<R>`` over all stamps; ``c`` from the mean of
    all stamps (the applied shears cancel). Errors: delete-one-block jackknife over pair ids."""
    e, g, pair_id, R = _as_inputs(e, g_applied, pair_id, R)
    keep = _finite_pairs(pair_id, e, R)  # a pair with one failed member is dropped whole (no selection bias)
    e, g, R, pair_id = e[keep], g[keep], R[keep], pair_id[keep]
    full, err = _jackknife(lambda m: _paired_estimate(e[m], R[m], g[m]), pair_id, n_blocks)
    names = ("m1", "m2", "c1", "c2")
    result = {name: float(v) for name, v in zip(names, full, strict=True)}
    result.update({f"{name}_err": float(v) for name, v in zip(names, err, strict=True)})
    result["n_pairs"] = int(len(np.unique(pair_id)))
    result["R_mean"] = R.mean(axis=0).tolist() if len(R) else [[np.nan] * 2] * 2
    return result


def paired_bias_difference(
    e: np.ndarray, R: np.ndarray, e_ref: np.ndarray, R_ref: np.ndarray, g_applied: np.ndarray, pair_id: np.ndarray,
    n_blocks: int = 100,
) -> dict[str, float]:
    """``dm1, dm2, dc1, dc2`` = (m, c of ``e, R``) - (m, c of ``e_ref, R_ref``): two estimators on the same stamps,
    with the jackknife error of the difference (most of the noise is shared, so it is far smaller than either's)."""
    e, g, pair_id, R = _as_inputs(e, g_applied, pair_id, R)
    e_ref, R_ref = np.asarray(e_ref, dtype=np.float64), np.asarray(R_ref, dtype=np.float64)
    keep = _finite_pairs(pair_id, e, R, e_ref, R_ref)
    e, R, e_ref, R_ref, g, pair_id = e[keep], R[keep], e_ref[keep], R_ref[keep], g[keep], pair_id[keep]
    full, err = _jackknife(
        lambda m: _paired_estimate(e[m], R[m], g[m]) - _paired_estimate(e_ref[m], R_ref[m], g[m]), pair_id, n_blocks
    )
    names = ("dm1", "dm2", "dc1", "dc2")
    result = {name: float(v) for name, v in zip(names, full, strict=True)}
    result.update({f"{name}_err": float(v) for name, v in zip(names, err, strict=True)})
    result["n_pairs"] = int(len(np.unique(pair_id)))
    return result

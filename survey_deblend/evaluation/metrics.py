"""Statistics of shape and redshift estimates: bias m and c, RMSE, roundness, ring response, SSIM, photo-z.

Pure numpy/scipy/scikit-image (no torch), so the benchmarks, the report and the training stage share one
definition of every figure. Ellipticities are in the shear convention (DESIGN.md, "Conventions"). Every
function that averages accepts optional weights (im3shape's ``W``); NaN entries are dropped pairwise.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

__all__ = [
    "correlation",
    "cosine_similarity_batch",
    "fit_m_c",
    "nbc_corrected",
    "outlier_fraction",
    "ring_response",
    "ring_response_from_labels",
    "rmse",
    "roundness_ratio",
    "shape_metrics",
    "sigma_nmad",
    "ssim_batch",
    "weighted_mean",
]


def _finite(*arrays: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
    """The arrays as float64, restricted to the rows where every given (non-None) one is finite."""
    arrs = [None if a is None else np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    sizes = {a.size for a in arrs if a is not None}
    if len(sizes) > 1:
        raise ValueError(f"arrays of different lengths {sorted(sizes)}")
    keep = None
    for a in arrs:
        if a is None:
            continue
        ok = np.isfinite(a)
        keep = ok if keep is None else keep & ok
    return tuple(None if a is None else a[keep] for a in arrs)


def _pair(pred, true, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite pred/true (and weights, default 1) with non-positive weights removed."""
    p, t, w = _finite(pred, true, weights)
    if w is None:
        w = np.ones_like(p)
    else:
        pos = w > 0
        p, t, w = p[pos], t[pos], w[pos]
    return p, t, w


def weighted_mean(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean of the finite values, weighted if ``weights`` is given; NaN when nothing is left."""
    v, w = _finite(values, weights)
    if w is None:
        w = np.ones_like(v)
    return float(np.sum(w * v) / np.sum(w)) if v.size and np.sum(w) > 0 else float("nan")


def rmse(pred: np.ndarray, true: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Root-mean-square difference pred - true (weighted if ``weights`` is given)."""
    p, t, w = _pair(pred, true, weights)
    if p.size == 0:
        return float("nan")
    return float(np.sqrt(np.sum(w * (p - t) ** 2) / np.sum(w)))


def correlation(pred: np.ndarray, true: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Pearson correlation coefficient of pred and true (weighted if ``weights`` is given)."""
    p, t, w = _pair(pred, true, weights)
    if p.size < 2:
        return float("nan")
    w = w / w.sum()
    dp, dt = p - np.sum(w * p), t - np.sum(w * t)
    denom = np.sqrt(np.sum(w * dp**2) * np.sum(w * dt**2))
    return float(np.sum(w * dp * dt) / denom) if denom > 0 else float("nan")


def _wls_line(p: np.ndarray, t: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares slope and intercept of p = slope * t + intercept."""
    sw = w.sum()
    mt, mp = np.sum(w * t) / sw, np.sum(w * p) / sw
    var = np.sum(w * (t - mt) ** 2)
    if var <= 0:
        return float("nan"), float("nan")
    slope = np.sum(w * (t - mt) * (p - mp)) / var
    return float(slope), float(mp - slope * mt)


GROUPED_BOOTSTRAP_ABOVE = 20_000  # objects; above this the bootstrap resamples random groups of objects
BOOTSTRAP_GROUPS = 2_000


def _grouped_bootstrap(p: np.ndarray, t: np.ndarray, w: np.ndarray, bootstrap: int, rng: np.random.Generator,
                       n_groups: int = BOOTSTRAP_GROUPS) -> np.ndarray:
    """Bootstrap (slope, intercept) by resampling random groups of objects, from per-group sufficient statistics.

    Objects are independent, so random groups are too and resampling them estimates the same variance as
    resampling objects, at a cost of O(bootstrap * groups) instead of O(bootstrap * objects).
    """
    t0, p0 = np.average(t, weights=w), np.average(p, weights=w)  # centre for numerical safety
    dt, dp = t - t0, p - p0
    group = rng.integers(0, n_groups, size=t.size)
    stats = np.stack([np.bincount(group, weights=x, minlength=n_groups) for x in (w, w * dt, w * dp, w * dt * dt,
                                                                                   w * dt * dp)])
    picks = rng.integers(0, n_groups, size=(bootstrap, n_groups))
    sw, st, sp, stt, stp = (stats[k][picks].sum(axis=1) for k in range(5))
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (stp - st * sp / sw) / (stt - st * st / sw)
        intercept = (sp - slope * st) / sw + p0 - slope * t0
    return np.column_stack([slope, intercept])


def fit_m_c(
    pred: np.ndarray,
    true: np.ndarray,
    bootstrap: int = 200,
    seed: int = 0,
    weights: np.ndarray | None = None,
    grouped_above: int = GROUPED_BOOTSTRAP_ABOVE,
) -> dict[str, float]:
    """Fit ``pred = (1 + m) * true + c`` by (weighted) least squares; errors from a bootstrap over objects.

    Returns ``dict(m, c, m_err, c_err, n)``; errors are the standard deviation of ``bootstrap`` resamples
    (0 resamples: NaN errors). Above ``grouped_above`` objects, random groups of objects are resampled
    instead (same variance, survey-size catalogs in a second).
    """
    p, t, w = _pair(pred, true, weights)
    n = int(p.size)
    if n < 2:
        return {"m": float("nan"), "c": float("nan"), "m_err": float("nan"), "c_err": float("nan"), "n": n}
    slope, c = _wls_line(p, t, w)
    m_err = c_err = float("nan")
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        if n > grouped_above:
            samples = _grouped_bootstrap(p, t, w, bootstrap, rng)
        else:
            samples = np.empty((bootstrap, 2))
            for k in range(bootstrap):
                idx = rng.integers(0, n, size=n)
                samples[k] = _wls_line(p[idx], t[idx], w[idx])
        m_err, c_err = (float(s) for s in np.nanstd(samples, axis=0, ddof=1))
    return {"m": slope - 1.0, "c": c, "m_err": m_err, "c_err": c_err, "n": n}


def roundness_ratio(e1p: np.ndarray, e2p: np.ndarray, e1t: np.ndarray, e2t: np.ndarray) -> float:
    """Median |e_pred| over median |e_true|: below 1 means predictions rounder than the reference."""
    e1p, e2p, e1t, e2t = _finite(e1p, e2p, e1t, e2t)
    if e1p.size == 0:
        return float("nan")
    ref = np.median(np.hypot(e1t, e2t))
    return float(np.median(np.hypot(e1p, e2p)) / ref) if ref > 0 else float("nan")


def ring_response(e_plus: np.ndarray, e_minus: np.ndarray, g: float) -> dict[str, float]:
    """Shear response from ring sets sheared by +g and -g (same galaxies, 90-degree pairs cancel shape noise).

    ``m = (<e(+g)> - <e(-g)>) / (2g) - 1`` and ``c = (<e(+g)> + <e(-g)>) / 2`` for one component. When both
    arrays have the same length they are taken as matched (the same galaxy under +g and -g) and the errors
    come from the per-galaxy differences; otherwise from the two means independently.
    """
    if g == 0:
        raise ValueError("ring_response needs a non-zero applied shear g")
    ep = np.asarray(e_plus, dtype=np.float64).ravel()
    em = np.asarray(e_minus, dtype=np.float64).ravel()
    if ep.size == em.size:
        ok = np.isfinite(ep) & np.isfinite(em)
        ep, em = ep[ok], em[ok]
        n = int(ep.size)
        if n == 0:
            return {"m": float("nan"), "c": float("nan"), "m_err": float("nan"), "c_err": float("nan"), "n": 0}
        diff, mean = (ep - em) / (2 * g), (ep + em) / 2
        err = (lambda x: float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else float("nan"))  # noqa: E731
        return {"m": float(diff.mean() - 1), "c": float(mean.mean()), "m_err": err(diff), "c_err": err(mean), "n": n}
    ep, em = ep[np.isfinite(ep)], em[np.isfinite(em)]
    if ep.size < 2 or em.size < 2:
        return {"m": float("nan"), "c": float("nan"), "m_err": float("nan"), "c_err": float("nan"), "n": 0}
    sem_p, sem_m = np.std(ep, ddof=1) / np.sqrt(ep.size), np.std(em, ddof=1) / np.sqrt(em.size)
    both = float(np.hypot(sem_p, sem_m))
    return {
        "m": float((ep.mean() - em.mean()) / (2 * g) - 1),
        "c": float((ep.mean() + em.mean()) / 2),
        "m_err": both / (2 * abs(g)),
        "c_err": both / 2,
        "n": int(min(ep.size, em.size)),
    }


def _per_pair_means(values: np.ndarray, pair_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the finite ``values`` per pair id: (sorted unique ids, means)."""
    ok = np.isfinite(values)
    ids, inverse = np.unique(pair_id[ok], return_inverse=True)
    sums = np.bincount(inverse, weights=values[ok], minlength=ids.size)
    counts = np.bincount(inverse, minlength=ids.size)
    return ids, sums / counts


def ring_response_from_labels(
    e_measured: np.ndarray, g_applied: np.ndarray, pair_id: np.ndarray | None = None, atol: float = 1e-6
) -> dict[str, float]:
    """Ring response of one component from a ring set's per-sample applied shear (``g1_applied``/``g2_applied``).

    Samples with the applied component equal to +g and -g (g the largest |g_applied|) are compared; samples
    with zero applied shear on this component are ignored. With ``pair_id`` (the base scene of each ring
    variant), each base scene's estimates are averaged over its orientations under +g and under -g, and the
    scenes present in both are matched, so that the per-scene differences give the error.
    """
    e = np.asarray(e_measured, dtype=np.float64).ravel()
    ga = np.asarray(g_applied, dtype=np.float64).ravel()
    if e.size != ga.size:
        raise ValueError(f"e_measured ({e.size}) and g_applied ({ga.size}) differ in length")
    g = float(np.max(np.abs(ga))) if ga.size else 0.0
    if g == 0:
        return {"m": float("nan"), "c": float("nan"), "m_err": float("nan"), "c_err": float("nan"), "n": 0, "g": 0.0}
    plus, minus = np.isclose(ga, g, atol=atol, rtol=0), np.isclose(ga, -g, atol=atol, rtol=0)
    ep, em = e[plus], e[minus]
    if pair_id is not None:
        pid = np.asarray(pair_id).ravel()
        if pid.size != e.size:
            raise ValueError(f"pair_id ({pid.size}) and e_measured ({e.size}) differ in length")
        ids_p, mean_p = _per_pair_means(ep, pid[plus])
        ids_m, mean_m = _per_pair_means(em, pid[minus])
        _, ip, im = np.intersect1d(ids_p, ids_m, return_indices=True)
        ep, em = mean_p[ip], mean_m[im]
    out = ring_response(ep, em, g)
    out["g"] = g
    return out


def _image_range(img: np.ndarray) -> float:
    return float(np.max(img) - np.min(img))


def ssim_batch(recon: np.ndarray, truth: np.ndarray, data_range: float | np.ndarray | None = None) -> np.ndarray:
    """Structural similarity of each reconstruction with its truth, one value per sample.

    ``recon``, ``truth``: ``(N, S, S)`` or ``(N, B, S, S)`` (bands are channels). ``data_range`` is passed to
    scikit-image explicitly: a number, one per sample, or None for each truth image's max - min (the
    images are not in [0, 1], and scikit-image would otherwise guess from the dtype). Flat truths give NaN.
    """
    recon = np.asarray(recon, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if recon.shape != truth.shape:
        raise ValueError(f"recon {recon.shape} and truth {truth.shape} differ in shape")
    if recon.ndim not in (3, 4):
        raise ValueError(f"expected (N, S, S) or (N, B, S, S), got {recon.shape}")
    n = recon.shape[0]
    ranges = np.broadcast_to(np.asarray(data_range, dtype=np.float64), (n,)) if data_range is not None else None
    out = np.full(n, np.nan)
    side = min(recon.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    for i in range(n):
        dr = float(ranges[i]) if ranges is not None else _image_range(truth[i])
        if not np.isfinite(dr) or dr <= 0 or win < 3:
            continue
        kwargs = {"channel_axis": 0} if recon.ndim == 4 else {}
        out[i] = structural_similarity(recon[i], truth[i], data_range=dr, win_size=win, **kwargs)
    return out


def cosine_similarity_batch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair of samples flattened to vectors (NaN where either is all zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes {a.shape} and {b.shape} differ")
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, np.sum(a * b, axis=1) / denom, np.nan)


def sigma_nmad(z_pred: np.ndarray, z_true: np.ndarray) -> float:
    """Normalised median absolute deviation of photo-z: 1.4826 * median(|dz - median(dz)| / (1 + z_true))."""
    zp, zt = _finite(z_pred, z_true)
    if zp.size == 0:
        return float("nan")
    dz = zp - zt
    return float(1.4826 * np.median(np.abs(dz - np.median(dz)) / (1 + zt)))


def outlier_fraction(z_pred: np.ndarray, z_true: np.ndarray, threshold: float = 0.15) -> float:
    """Fraction of catastrophic photo-z outliers, |z_pred - z_true| / (1 + z_true) > threshold."""
    zp, zt = _finite(z_pred, z_true)
    if zp.size == 0:
        return float("nan")
    return float(np.mean(np.abs(zp - zt) / (1 + zt) > threshold))


def nbc_corrected(
    e: np.ndarray, nbc_c: np.ndarray, nbc_m: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """im3shape's ensemble noise-bias calibration: ``(E - NBC_C) / (1 + mean NBC_M)``.

    The multiplicative term is averaged over the ensemble (weighted by ``W`` if given), as DES SVA1 requires:
    dividing each galaxy by its own (1 + m) would be noisy and biased.
    """
    e = np.asarray(e, dtype=np.float64)
    mean_m = weighted_mean(nbc_m, weights)
    return (e - np.asarray(nbc_c, dtype=np.float64)) / (1.0 + mean_m)


def shape_metrics(
    e1p: np.ndarray,
    e2p: np.ndarray,
    e1t: np.ndarray,
    e2t: np.ndarray,
    weights: np.ndarray | None = None,
    bootstrap: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """The standard row of figures for predicted vs reference ellipticities, as a flat dict.

    Keys: ``n``, ``m1, m1_err, c1, c1_err, m2, m2_err, c2, c2_err, rmse1, rmse2, rmse`` (both components),
    ``corr1, corr2``, ``roundness``. Rows with any non-finite value are left out of every figure.
    """
    cols = [np.asarray(x, dtype=np.float64).ravel() for x in (e1p, e2p, e1t, e2t)]
    keep = np.logical_and.reduce([np.isfinite(c) for c in cols])
    w = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).ravel()
        keep &= np.isfinite(w) & (w > 0)
        w = w[keep]
    e1p, e2p, e1t, e2t = (c[keep] for c in cols)
    out: dict[str, float] = {"n": int(keep.sum())}
    for k, (p, t) in enumerate(((e1p, e1t), (e2p, e2t)), start=1):
        fit = fit_m_c(p, t, bootstrap=bootstrap, seed=seed, weights=w)
        out.update({f"m{k}": fit["m"], f"m{k}_err": fit["m_err"], f"c{k}": fit["c"], f"c{k}_err": fit["c_err"]})
        out[f"rmse{k}"] = rmse(p, t, w)
        out[f"corr{k}"] = correlation(p, t, w)
    both_w = None if w is None else np.concatenate([w, w])
    out["rmse"] = rmse(np.concatenate([e1p, e2p]), np.concatenate([e1t, e2t]), both_w)
    out["roundness"] = roundness_ratio(e1p, e2p, e1t, e2t)
    return out

"""PNG figures of the report (matplotlib, Agg): 2-D histograms, residuals, |e| distributions, a gallery.

Each function writes one PNG and returns its path; axes carry labels and units. Ellipticities are
dimensionless, in the shear convention (DESIGN.md).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

__all__ = ["calibration_histograms", "coverage_curve", "e_distribution", "gallery", "pred_vs_ref", "residual_hist",
           "residuals_vs_snr", "response_histogram"]

E_LABEL = "(shear convention, dimensionless)"
DPI = 90


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # the figures use layout="tight"; bbox_inches="tight" would lay out twice
    plt.close(fig)
    return path


def _finite_pairs(*arrays: np.ndarray) -> list[np.ndarray]:
    arrs = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrs])
    return [a[keep] for a in arrs]


def pred_vs_ref(e1p, e2p, e1r, e2r, path: Path, est_name: str, ref_name: str, fits: dict | None = None) -> Path:
    """Estimate against reference e1 and e2 as a 2-D histogram (log counts) with the 1:1 and fitted lines."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="tight")
    lim = 0.8
    edges = np.linspace(-lim, lim, 61)
    for k, (ax, p, r) in enumerate(zip(axes, (e1p, e2p), (e1r, e2r), strict=True), start=1):
        p, r = _finite_pairs(p, r)
        counts, _, _ = np.histogram2d(r, p, bins=(edges, edges))
        if counts.max() > 0:
            img = ax.imshow(np.ma.masked_equal(counts.T, 0), origin="lower", extent=(-lim, lim, -lim, lim),
                            norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)), cmap="viridis", aspect="auto",
                            interpolation="nearest")
            fig.colorbar(img, ax=ax, label="galaxies per cell")
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=1, label="1:1")
        if fits and np.isfinite(fits.get(f"m{k}", np.nan)):
            m, c = fits[f"m{k}"], fits[f"c{k}"]
            xs = np.array([-lim, lim])
            ax.plot(xs, (1 + m) * xs + c, "r-", lw=1.2, label=f"fit: 1+m = {1 + m:.3f}, c = {c:+.4f}")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel(f"{ref_name} e{k} {E_LABEL}")
        ax.set_ylabel(f"{est_name} e{k} {E_LABEL}")
        ax.set_title(f"e{k}: {est_name} vs {ref_name} (N = {p.size})")
        ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def residual_hist(e1p, e2p, e1r, e2r, path: Path, est_name: str, ref_name: str) -> Path:
    """Histograms of the residuals estimate - reference for both components."""
    fig, ax = plt.subplots(figsize=(6.5, 4.4), layout="tight")
    bins = np.linspace(-1, 1, 81)
    for k, (p, r) in enumerate(((e1p, e1r), (e2p, e2r)), start=1):
        p, r = _finite_pairs(p, r)
        d = p - r
        label = f"e{k}: median {np.median(d):+.4f}, std {np.std(d):.4f}" if d.size else f"e{k}: no data"
        ax.hist(np.clip(d, -1, 1), bins=bins, histtype="step", lw=1.5, label=label)
    ax.set_xlabel(f"{est_name} - {ref_name} {E_LABEL}")
    ax.set_ylabel("galaxies per bin")
    ax.set_title(f"Residuals: {est_name} - {ref_name}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def residuals_vs_snr(e1p, e2p, e1r, e2r, snr, path: Path, est_name: str, ref_name: str) -> Path:
    """Median and 16-84 % band of the residuals in logarithmic bins of SNR_W."""
    fig, ax = plt.subplots(figsize=(6.5, 4.4), layout="tight")
    for k, (p, r) in enumerate(((e1p, e1r), (e2p, e2r)), start=1):
        p, r, s = _finite_pairs(p, r, snr)
        s_pos = s > 0
        p, r, s = p[s_pos], r[s_pos], s[s_pos]
        if s.size == 0:
            continue
        d = p - r
        top = max(s.max(), s.min() * 1.01) * 1.0001
        edges = np.geomspace(s.min(), top, 9)
        idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, edges.size - 2)
        centres, med, lo, hi = [], [], [], []
        for b in range(edges.size - 1):
            sel = d[idx == b]
            if sel.size:
                centres.append(np.sqrt(edges[b] * edges[b + 1]))
                q = np.percentile(sel, [16, 50, 84])
                lo.append(q[0])
                med.append(q[1])
                hi.append(q[2])
        shift = 1.0 + 0.02 * (k - 1.5)
        centres = np.asarray(centres) * shift
        ax.errorbar(centres, med, yerr=[np.subtract(med, lo), np.subtract(hi, med)], fmt="o-", capsize=3,
                    label=f"e{k} (median, 16-84 %)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("SNR_W (im3shape signal-to-noise, dimensionless)")
    ax.set_ylabel(f"{est_name} - {ref_name} {E_LABEL}")
    ax.set_title("Residuals against signal-to-noise")
    ax.legend(fontsize=8)
    return _save(fig, path)


def e_distribution(samples: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Distributions of |e| for several estimators: rounder predictions show as a left-shifted curve."""
    fig, ax = plt.subplots(figsize=(6.5, 4.4), layout="tight")
    bins = np.linspace(0, 1, 51)
    for name, (e1, e2) in samples.items():
        e1, e2 = _finite_pairs(e1, e2)
        mod = np.hypot(e1, e2)
        if mod.size:
            ax.hist(np.clip(mod, 0, 1), bins=bins, histtype="step", lw=1.5, density=True,
                    label=f"{name}: median {np.median(mod):.3f}")
    ax.set_xlabel(f"|e| {E_LABEL}")
    ax.set_ylabel("probability density (per unit |e|)")
    ax.set_title("Ellipticity modulus: roundness at a glance")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _stretch(img: np.ndarray, scale: float) -> np.ndarray:
    """Arcsinh stretch with softening at 5 % of ``scale`` (display only)."""
    return np.arcsinh(img / (0.05 * scale)) if scale > 0 else img


def gallery(columns: dict[str, np.ndarray], path: Path, band_name: str, pixel_scale_arcsec: float,
            titles: list[str] | None = None) -> Path:
    """Rows of galaxies, columns of images (e.g. blended scene / reconstruction / truth) in one band.

    ``columns`` maps a column title to ``(n, S, S)`` images; each row shares one colour scale (the last
    column's, the truth's, stretch limits) so that the panels compare.
    """
    names = list(columns)
    n = min(len(v) for v in columns.values())
    if n == 0:
        raise ValueError("gallery needs at least one galaxy")
    fig, axes = plt.subplots(n, len(names), figsize=(2.6 * len(names), 2.5 * n), squeeze=False,
                             layout="tight")
    for i in range(n):
        truth = np.asarray(columns[names[-1]][i], dtype=np.float64)
        scale = float(np.percentile(np.abs(truth), 99.5))
        ref = _stretch(truth, scale)
        vmin, vmax = float(np.min(ref)), float(np.max(ref)) or 1.0
        for j, name in enumerate(names):
            img = np.asarray(columns[name][i], dtype=np.float64)
            side = img.shape[-1] * pixel_scale_arcsec
            ax = axes[i, j]
            ax.imshow(_stretch(img, scale), origin="lower", cmap="magma", vmin=vmin, vmax=vmax,
                      extent=(0, side, 0, side))
            if i == 0:
                ax.set_title(name)
            if j == 0:
                ax.set_ylabel((titles[i] + "\n" if titles else "") + "y [arcsec] (north up)")
            if i == n - 1:
                ax.set_xlabel("x [arcsec] (west right)")
    fig.suptitle(f"{band_name} band, flux units of the data set, arcsinh stretch shared along each row")
    return _save(fig, path)


def calibration_histograms(stats: dict[str, np.ndarray], path: Path, bins: int = 20) -> Path:
    """Rank / PIT histograms of the posterior: flat when calibrated, U-shaped when too narrow, domed when too wide.

    ``stats``: ``e_hpd_level`` (posterior mass of the (e1, e2) highest-density region reaching the truth),
    ``e1_rank``, ``e2_rank`` (fraction of draws below the truth) and ``z_pit`` (posterior CDF at the truth).
    """
    panels = [("e_hpd_level", "(e1, e2): HPD level of the truth"), ("e1_rank", "e1: rank of the truth"),
              ("e2_rank", "e2: rank of the truth"), ("z_pit", "z: PIT")]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), layout="tight")
    edges = np.linspace(0, 1, bins + 1)
    for ax, (key, title) in zip(axes, panels, strict=True):
        values = np.asarray(stats.get(key, []), dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            ax.hist(values, bins=edges, density=True, histtype="stepfilled", alpha=0.6)
            sigma = np.sqrt(bins / values.size)  # Poisson scatter of a flat histogram, in density units
            ax.axhspan(1 - sigma, 1 + sigma, color="grey", alpha=0.25, label="flat ± 1 sigma")
        ax.axhline(1.0, color="k", lw=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("level (0-1)")
        ax.set_ylabel("density")
        ax.set_title(f"{title} (N = {values.size})", fontsize=9)
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def coverage_curve(stats: dict[str, np.ndarray], path: Path) -> Path:
    """Empirical against nominal coverage of the credible regions of (e1, e2) (HPD) and z (central intervals)."""
    levels = np.linspace(0.0, 1.0, 101)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), layout="tight")
    hpd = np.asarray(stats.get("e_hpd_level", []), dtype=np.float64)
    pit = np.asarray(stats.get("z_pit", []), dtype=np.float64)
    pit = pit[np.isfinite(pit)]
    if hpd.size:
        ax.plot(levels, [np.mean(hpd <= p) for p in levels], label="(e1, e2) highest-density regions")
    if pit.size:
        ax.plot(levels, [np.mean(np.abs(pit - 0.5) <= p / 2) for p in levels], label="z central intervals")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for p in (0.68, 0.95):
        ax.axvline(p, color="grey", lw=0.6)
    ax.set_xlabel("nominal credibility")
    ax.set_ylabel("fraction of truths inside")
    ax.set_title("Coverage of the posterior credible regions")
    ax.legend(fontsize=8)
    return _save(fig, path)


def response_histogram(r11: np.ndarray, r22: np.ndarray, path: Path, bins: int = 40) -> Path:
    """Distribution of the metacalibration response R11, R22 per galaxy (dimensionless), with their means: the
    per-galaxy spread is wide (noise), the ensemble mean is what calibrates the shear."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="tight")
    r11, r22 = (np.asarray(r, dtype=np.float64) for r in (r11, r22))
    r11, r22 = r11[np.isfinite(r11)], r22[np.isfinite(r22)]
    both = np.concatenate([r11, r22])
    lo, hi = (np.percentile(both, [1, 99]) if both.size else (0.0, 2.0))
    edges = np.linspace(min(lo, 0.0), max(hi, 1.5), bins + 1)
    for values, name, colour in ((r11, "R11", "C0"), (r22, "R22", "C1")):
        if values.size:
            ax.hist(np.clip(values, edges[0], edges[-1]), bins=edges, histtype="step", lw=1.5, color=colour,
                    label=f"{name}: mean {values.mean():.3f}, median {np.median(values):.3f}")
            ax.axvline(values.mean(), color=colour, ls="--", lw=1)
    ax.axvline(1.0, color="k", lw=0.8, label="R = 1 (unbiased estimator)")
    ax.set_xlabel("response R per galaxy (dimensionless; 1-99 % range)")
    ax.set_ylabel("galaxies per bin")
    ax.set_title(f"Metacalibration response (N = {r11.size})")
    ax.legend(fontsize=8)
    return _save(fig, path)

"""Streamed paired-shear shards for ``benchmarks/metacal.py``: simulate, measure, keep a small ``.npz``, delete.

A shard is one paired LSST set (``simulate lsst --kind paired``, seed ``s``): its stamps are simulated, run
through the network on the original stamps (raw) and through metacalibration (the five images, and the
90-degree turns of the five for the symmetrized estimator), and only the per-stamp results are kept (a few MB);
the images are deleted before the next seed. All figures come from the kept results, combined over however
many shards have finished (``paired_shear_bias``: jackknife over base scenes), so the run is resumable and can
be stopped at any time. Pair ids are made global (``seed * PAIR_STRIDE + pair_id``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

BANDS = ("u", "g", "r", "i", "z", "y")
STAMP = 45  # the model's stamp; a shard with a margin is simulated STAMP + 2 margin wide (the same scenes)
PAIR_STRIDE = 10**7  # base scenes per seed are far fewer: global pair id = seed * PAIR_STRIDE + pair_id
VARIANTS = {"raw": "network on the original stamps", "cal": "metacal", "sym_noshear": "noshear image symmetrized",
            "sym_all": "all five symmetrized"}  # fmt: skip
Shapes = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def weighted_moments(stack: np.ndarray, mask: np.ndarray | None = None, sigma_pix: float = 3.0):
    """A smooth reference estimator: Gaussian-weighted (``sigma_pix``) quadrupole moments of the i band about the
    stamp centre, ``(e1, e2)`` in the distortion convention. Exactly equivariant under quarter turns; used to
    tell the metacal images' own bias from the network's (``--estimator moments``) and in the tests."""
    img = np.asarray(stack)[:, BANDS.index("i")].astype(np.float64)
    s = img.shape[-1]
    y, x = np.mgrid[:s, :s] - (s // 2)
    w = np.exp(-(x**2 + y**2) / (2 * sigma_pix**2))
    xx, yy, xy = (np.einsum("nij,ij->n", img, w * f) for f in (x * x, y * y, x * y))
    return (xx - yy) / (xx + yy), 2 * xy / (xx + yy)


def _tag(n: int, shear: float, margin: int) -> str:
    return f"{n}-{shear:g}" + (f"-m{margin}" if margin else "")


def shard_path(work: Path, seed: int, n: int, shear: float, margin: int = 0) -> Path:
    """The kept results of the shard ``seed`` (its existence means the shard is done)."""
    return work / "results" / f"shard-{seed}-{_tag(n, shear, margin)}.npz"


def simulate(work: Path, n: int, seed: int, shear: float, workers: int = 2, margin: int = 0) -> Path:
    """A paired set of ``n`` stamps (``n / 8`` base scenes) made with the project's generator; with ``margin``
    the same scenes (neighbours drawn in the model's stamp) rendered ``margin`` pixels wider on every side."""
    from survey_deblend.config.sim import LsstSimConfig
    from survey_deblend.sim.lsst import make_lsst_dataset

    out = work / f"paired-{seed}-{_tag(n, shear, margin)}"
    if not (out / "manifest.json").is_file():
        shutil.rmtree(out, ignore_errors=True)  # a half-written set of a stopped run
        cfg = LsstSimConfig(n=n, seed=seed, kind="paired", workers=workers, shard_size=4000, ring_shear=shear,
                            stamp_size=STAMP + 2 * margin, neighbour_field_pix=STAMP if margin else None)
        make_lsst_dataset(out, config=cfg)
    return out


def selected_stamps(ds, snr_min: float) -> np.ndarray:
    """Indices of the stamps whose pair (8 variants of one base scene) has mean central SNR > ``snr_min``."""
    pair = ds.read("pair_id", slice(None))
    snr = ds.read("snr", slice(None)).astype(np.float64)
    ids, inverse = np.unique(pair, return_inverse=True)
    mean_snr = np.bincount(inverse, snr) / np.bincount(inverse)
    return np.nonzero(mean_snr[inverse] > snr_min)[0]


def pair_noise(pair_id: np.ndarray, variant_turn: np.ndarray, sigma: np.ndarray, seed: int,
               size: int = STAMP) -> np.ndarray:  # fmt: skip
    """Fixnoise fields ``(n, B, size, size)``: one unit field per base scene, turned with the variant, times sigma."""
    out = np.empty((len(pair_id), sigma.shape[1], size, size), dtype=np.float32)
    for p in np.unique(pair_id):
        field = np.random.default_rng([seed, int(p)]).standard_normal((sigma.shape[1], size, size), dtype=np.float32)
        for i in np.nonzero(pair_id == p)[0]:
            out[i] = np.rot90(field, -int(variant_turn[i]), axes=(-2, -1))
    return out * sigma[:, :, None, None].astype(np.float32)


def measure(ds, idx: np.ndarray, shapes: Shapes, seed: int, chunk: int, turn_all: bool,
            raw: bool = True, margin: int = 0, crop_first: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """Per selected stamp: raw shapes (``raw``; else NaN), the five metacal shapes and those of their turns
    (``turn_all``: all five, else the noshear image only), applied shear, truth, SNR and the global pair id.
    ``margin``: the stamps are that much wider than the model's; the network reads the central STAMP pixels (of
    the original stamp, and of the five images after the shear: ``metacal_response(margin=)``, as the run).
    ``crop_first``: also metacal of the model's stamp alone (cut first, no margin: the run before the margin),
    its five shapes and the turned noshear one in ``crop_first`` (6, n, 2), on the same stamps and noise."""
    from survey_deblend.calibration import border_noise_sigma, metacal_response
    from survey_deblend.calibration.psf import sim_psf_model
    from survey_deblend.cutouts.base import crop_margin

    n = len(idx)
    pair = ds.read("pair_id", idx).astype(np.int64)
    out = {
        "pair": seed * PAIR_STRIDE + pair,
        "turn": (idx % 2).astype(np.int8),
        "g": np.stack([ds.read("g1_applied", idx), ds.read("g2_applied", idx)], 1).astype(np.float64),
        "truth": np.stack([ds.read("e1", idx), ds.read("e2", idx)], 1).astype(np.float64),
        "snr": ds.read("snr", idx).astype(np.float64),
        "e_raw": np.full((n, 2), np.nan),
        "sheared": np.empty((5, n, 2)),
        "rotated": np.full((5, n, 2), np.nan),
        "crop_first": np.full((6, n, 2), np.nan),
    }
    for lo in range(0, n, chunk):
        sl = slice(lo, min(lo + chunk, n))
        blend = ds.read("blend", idx[sl])
        core = np.ascontiguousarray(crop_margin(blend, margin))
        psf = sim_psf_model("LSST", BANDS, len(blend))
        if raw:
            out["e_raw"][sl] = np.stack(shapes(core, np.ones((len(blend), len(BANDS)), bool)), 1)
        sigma = border_noise_sigma(blend)
        noise = pair_noise(pair[sl], idx[sl] % 2, sigma, seed, blend.shape[-1])
        res = metacal_response(blend, psf, 0.2, shapes, noise_sigma=sigma,
                               noise=noise, symmetrize="all" if turn_all else "noshear", margin=margin)  # fmt: skip
        out["sheared"][:, sl], out["rotated"][:, sl] = res.sheared, res.rotated
        if crop_first and margin:
            first = metacal_response(core, psf, 0.2, shapes, noise_sigma=sigma,
                                     noise=np.ascontiguousarray(crop_margin(noise, margin)), symmetrize="noshear")
            out["crop_first"][:5, sl], out["crop_first"][5, sl] = first.sheared, first.rotated[0]
    return out


def run_shard(work: Path, n: int, seed: int, shear: float, snr_min: float, shapes: Shapes, chunk: int,
              turn_all: bool, raw: bool = True, keep_images: bool = False, margin: int = 0,
              crop_first: bool = False) -> dict[str, float]:  # fmt: skip
    """Simulate, measure and save one shard (atomically), then delete its images; returns its timings."""
    from survey_deblend.sim.dataset import open_dataset

    t0 = time.perf_counter()
    data = simulate(work, n, seed, shear, margin=margin)
    t1 = time.perf_counter()
    ds = open_dataset(data)
    if abs(float(ds.manifest["config"]["ring_shear"]) - shear) > 1e-12:
        raise SystemExit(f"{data}: ring_shear {ds.manifest['config']['ring_shear']} is not --shear {shear}")
    idx = selected_stamps(ds, snr_min)
    result = measure(ds, idx, shapes, seed, chunk, turn_all, raw, margin, crop_first)
    t2 = time.perf_counter()
    path = shard_path(work, seed, n, shear, margin)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **result, shear=shear, seed=seed, n_simulated=n, snr_min=snr_min, margin=margin)
    tmp.replace(path)
    if not keep_images:
        shutil.rmtree(data, ignore_errors=True)
    return {"sim_seconds": round(t1 - t0, 1), "measure_seconds": round(t2 - t1, 1), "n_stamps": len(idx)}


def stream(work: Path, n: int, seeds: list[int], shear: float, snr_min: float, shapes: Shapes, chunk: int = 2048,
           turn_all_shards: int = 0, raw_shards: int = 10**6, margin: int = 0,
           crop_first_shards: int = 0) -> Iterator[tuple[int, dict[str, float]]]:  # fmt: skip
    """Run the shards of ``seeds`` in order, skipping those already kept; yields ``(seed, timings)`` per new one.
    The first ``turn_all_shards`` turn all five images, the first ``raw_shards`` measure the original stamps,
    the first ``crop_first_shards`` also metacalibrate the model's stamp without the margin (``measure``)."""
    for i, seed in enumerate(seeds):
        if shard_path(work, seed, n, shear, margin).is_file():
            continue
        yield seed, run_shard(work, n, seed, shear, snr_min, shapes, chunk, turn_all=i < turn_all_shards,
                              raw=i < raw_shards, margin=margin, crop_first=i < crop_first_shards)  # fmt: skip


def finished(work: Path, n: int, shear: float, margin: int = 0) -> list[Path]:
    """The kept results of every finished shard of this size, shear and margin."""
    return sorted((work / "results").glob(f"shard-*-{_tag(n, shear, margin)}.npz"))


def load_results(paths: list[Path]) -> dict[str, np.ndarray]:
    """The kept results of several shards, concatenated along the stamps."""
    parts = [dict(np.load(p)) for p in paths]
    if not parts:
        raise SystemExit("metacal: no finished shard to combine")
    out = {k: np.concatenate([p[k] for p in parts], axis=0) for k in ("pair", "turn", "g", "truth", "snr", "e_raw")}
    for k in ("sheared", "rotated", "crop_first"):
        out[k] = np.concatenate([p.get(k, np.full((6, len(p["pair"]), 2), np.nan)) for p in parts], axis=1)
    out["n_shards"] = np.array(len(parts))
    return out


def subset(res: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The results of the stamps ``keep`` (bool over stamps)."""
    out = {k: (v[:, keep] if k in ("sheared", "rotated", "crop_first") else v[keep]) for k, v in res.items() if v.ndim}
    out["n_shards"] = res["n_shards"]
    return out


def turned_all(res: dict[str, np.ndarray]) -> np.ndarray:
    """Stamps (bool) whose five images were all turned and measured (shards run with ``--turn-all``)."""
    return np.all(np.isfinite(res["rotated"]), axis=(0, 2)) | ~np.all(np.isfinite(res["sheared"]), axis=(0, 2))


def variant_estimates(res: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """``(e (n, 2), R (n, 2, 2) or None)`` of each estimator of ``VARIANTS`` (``sym_all`` only when every
    stamp has all five turns measured)."""
    from survey_deblend.calibration.response import response_matrix, symmetrized

    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"raw": (res["e_raw"], None)}
    for name, mode in (("cal", "none"), ("sym_noshear", "noshear"), ("sym_all", "all")):
        if mode == "all" and not np.all(turned_all(res)):
            continue
        est = symmetrized(res["sheared"], res["rotated"], mode)
        out[name] = (est[0], response_matrix(est))
    return out


def scene_scatter(res: dict[str, np.ndarray], e: np.ndarray, R: np.ndarray) -> dict[str, float]:
    """Per base scene, component 1 (the +g1/-g1 variants): the spread of ``(<e>(+g) - <e>(-g)) / 2g``, of
    ``<R11>`` (over the 4 g1 variants) and of their difference (what sets m's error), and their correlation."""
    g1 = res["g"][:, 0]
    on = g1 != 0
    _, scene = np.unique(res["pair"][on], return_inverse=True)
    k = scene.max() + 1
    sign = np.sign(g1[on])
    count = np.bincount(scene, minlength=k) / 2.0
    de = np.bincount(scene, sign * e[on, 0], k) / count / (2 * np.abs(g1[on]).max())
    r11 = np.bincount(scene, R[on, 0, 0], k) / (2 * count)
    return {"de_dg": float(np.std(de)), "R11": float(np.std(r11)), "de_dg_minus_R11": float(np.std(de - r11)),
            "corr": float(np.corrcoef(de, r11)[0, 1]) if np.std(r11) > 0 else float("nan")}  # fmt: skip


def noshear_symmetrized(six: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(e, R)`` of the symmetrized estimator from ``(6, n, 2)`` shapes: the five images, then the turned
    noshear one (how ``crop_first`` and ``metacal_margins`` keep them)."""
    from survey_deblend.calibration.response import response_matrix, symmetrized

    turned = np.full((5, *six.shape[1:]), np.nan)
    turned[0] = six[5]
    est = symmetrized(six[:5], turned, "noshear")
    return est[0], response_matrix(est)


def crop_first_figures(res: dict[str, np.ndarray]) -> dict[str, float]:
    """m of metacal on the model's stamp alone (cut first, no margin; symmetrized) on the stamps that have it,
    and the margin's estimator minus it on the same stamps (``dm1``: what the margin changes, with its error)."""
    from survey_deblend.calibration import paired_bias_difference, paired_shear_bias

    e_first, r_first = noshear_symmetrized(res["crop_first"])
    e_margin, r_margin = variant_estimates(res)["sym_noshear"]
    d = paired_shear_bias(e_first, res["g"], res["pair"], r_first)
    diff = paired_bias_difference(e_margin, r_margin, e_first, r_first, res["g"], res["pair"])
    return {**{k: d[k] for k in ("m1", "m1_err", "m2", "m2_err", "c1", "c2", "n_pairs")},
            "R_mean": [[round(v, 4) for v in row] for row in d["R_mean"]],
            "margin_minus_crop_first": {k: v for k, v in diff.items() if k != "n_pairs"}}  # fmt: skip


def figures(res: dict[str, np.ndarray], compare_subset: bool = True) -> dict[str, object]:
    """m, c and errors of every estimator, the per-scene scatter and the RMSE against the truth; where only
    some shards turned all five images, the estimators again on those shards' stamps (``turned_all_subset``)."""
    from survey_deblend.calibration import paired_shear_bias

    keep = turned_all(res)
    if compare_subset and keep.any() and not keep.all():
        return {**figures(res, False), "turned_all_subset": figures(subset(res, keep), False)}
    worse = lambda d, k: d[f"{k}1"] if abs(d[f"{k}1"]) >= abs(d[f"{k}2"]) else d[f"{k}2"]  # noqa: E731
    rmse = lambda e: float(np.sqrt(np.nanmean((e - res["truth"]) ** 2)))  # noqa: E731
    out: dict[str, object] = {"n_shards": int(res["n_shards"]), "n_stamps": len(res["pair"])}
    for name, (e, R) in variant_estimates(res).items():
        if name == "raw":  # measured on the first shards only (--raw-shards)
            has = np.all(np.isfinite(e), axis=1)
            if not has.all():
                out["raw"] = figures(subset(res, has), False)["raw"] if has.any() else {}
                continue
        d = paired_shear_bias(e, res["g"], res["pair"], R)
        out[name] = {"m": worse(d, "m"), "m_err": max(d["m1_err"], d["m2_err"]), "c": worse(d, "c"),
                     "c_err": max(d["c1_err"], d["c2_err"]), "m1": d["m1"], "m2": d["m2"], "c1": d["c1"],
                     "c2": d["c2"], "n_pairs": d["n_pairs"], "rmse_e": rmse(e)}  # fmt: skip
        if R is not None:
            out[name]["R_mean"] = [[round(v, 4) for v in row] for row in d["R_mean"]]
            out[name]["R_diag_std"] = float(np.std(R[:, [0, 1], [0, 1]]))
            out[name]["scene_scatter"] = scene_scatter(res, e, R)
        else:
            out[name]["scene_scatter"] = scene_scatter(res, e, np.broadcast_to(np.eye(2), (len(e), 2, 2)))
    first = res.get("crop_first")
    if first is not None and np.isfinite(first).any():
        out["crop_first"] = crop_first_figures(subset(res, np.all(np.isfinite(first), axis=(0, 2))))
    return out

"""The model-stage figures on simulated sets, against HSM baselines, as one table.

Estimators, each compared with the PSF-free truth labels ``e1, e2`` of the central galaxy:

- ``model``: the regressor's ``e1_pred, e2_pred`` (and ``z_pred`` for the redshift figures);
- ``HSM on reconstruction``: GalSim's PSF-corrected HSM on the deblender's reconstruction (the VAE approach);
- ``HSM on isolated``: HSM on the central galaxy alone with noise (what blending costs a classic method);
- ``HSM on blend``: HSM on the noisy blended scene (the classic method facing blends).

Ring sets (``g1_applied``/``g2_applied``, ``pair_id``) give the shear response m and c with shape noise
cancelled; the labels themselves are run through the same ring test as a reference.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from survey_deblend.errors import InputError
from survey_deblend.evaluation import metrics
from survey_deblend.shapes import measure_hsm_batch

__all__ = ["ESTIMATORS", "evaluate_simulated", "select_indices"]

ESTIMATORS = ("model", "HSM on reconstruction", "HSM on isolated", "HSM on blend")
_EST_KEYS = {"model": "model", "HSM on reconstruction": "hsm_recon", "HSM on isolated": "hsm_isolated",
             "HSM on blend": "hsm_blend"}


def _frame(dataset, prefix: str) -> dict[str, Any]:
    """Bands, pixel scale, PSF model and sky sigma of the LSST stamps (``prefix=""``) or the DES pairs."""
    man = dataset.manifest
    block = man if prefix == "" else man.get(prefix.rstrip("_"))
    if not isinstance(block, dict) or "bands" not in block or "pixel_scale_arcsec" not in block:
        raise InputError(f"{dataset.path}: manifest has no bands/pixel_scale_arcsec for the '{prefix or 'LSST'}' "
                         "stamps")
    from survey_deblend.sim.lsst import stamps_frame

    photometric = stamps_frame(man, prefix)
    return {
        "survey": photometric.survey,
        "bands": photometric.bands,
        "pixel_scale": photometric.pixel_scale_arcsec,
        "zeropoints": photometric.zeropoints,
        "psf_model": block.get("psf_model", man.get("psf_model", "moffat")),
        "psf_fwhm": block.get("psf_fwhm_arcsec", {}),
        "sky_sigma": block.get("sky_sigma", {}),
    }


def _psf_image(frame: dict, band: str, size: int) -> np.ndarray:
    """The dataset's PSF in ``band`` at its pixel scale: the simulation's own PSF model (truncation included)."""
    from survey_deblend.sim.psf import psf_image

    return psf_image(frame["survey"], band, size, frame["psf_model"]).array


def select_indices(dataset, snr_min: float, snr_field: str = "snr", max_samples: int | None = None,
                   by_pair: bool = False) -> np.ndarray:
    """Samples with truth SNR >= ``snr_min``; with ``by_pair`` whole ring scenes (min SNR over the pair) are kept."""
    n = len(dataset)
    if snr_field not in dataset.fields:
        idx = np.arange(n)
    else:
        snr = dataset.read(snr_field, slice(None)).astype(np.float64)
        if by_pair and "pair_id" in dataset.fields:
            pid = dataset.read("pair_id", slice(None))
            ids, inverse = np.unique(pid, return_inverse=True)
            pair_min = np.full(ids.size, np.inf)
            np.minimum.at(pair_min, inverse, snr)
            keep = pair_min[inverse] >= snr_min
        else:
            keep = snr >= snr_min
        idx = np.flatnonzero(keep)
    return idx[:max_samples] if max_samples is not None else idx


def _estimate(predictor, dataset, idx: np.ndarray, frame: dict, prefix: str, band: str, batch_size: int,
              keep_images: int = 0) -> dict[str, Any]:
    """Run every estimator on samples ``idx``; returns shapes per estimator, z, image metrics and a few stamps."""
    b = frame["bands"].index(band)
    psf = None
    sky_var = float(frame["sky_sigma"].get(band, 0.0)) ** 2
    predict_kwargs = {}
    if "measure_recon" in inspect.signature(predictor.predict).parameters:
        predict_kwargs["measure_recon"] = not hasattr(predictor, "reconstruct")
    # the reconstruction is in the model's frame: comparable pixel by pixel only when the data set shares it
    same_frame = np.isclose(float(getattr(predictor, "pixel_scale", frame["pixel_scale"])), frame["pixel_scale"])
    shapes = {k: ([], []) for k in _EST_KEYS.values()}
    z_pred, ssim_r, ssim_b, cos_r, cos_b = [], [], [], [], []
    gallery: dict[str, list[np.ndarray]] = {"blend": [], "reconstruction": [], "truth (noiseless)": []}
    for start in range(0, idx.size, batch_size):
        chunk = idx[start : start + batch_size]
        blend = dataset.read(f"{prefix}blend", chunk)
        isolated = dataset.read(f"{prefix}isolated", chunk)
        clean = dataset.read(f"{prefix}clean", chunk)
        if psf is None:
            psf = _psf_image(frame, band, blend.shape[-1])
            if sky_var == 0.0:  # noise variance straight from the isolated-minus-clean residual
                sky_var = float(np.var(isolated[:, b] - clean[:, b]))
        pred = predictor.predict(blend, frame["bands"], frame["pixel_scale"], zeropoints=frame["zeropoints"],
                                 survey=frame["survey"], **predict_kwargs)
        for k, col in enumerate(("e1_pred", "e2_pred")):
            shapes["model"][k].append(pred[col].to_numpy(dtype=np.float64))
        z_pred.append(pred["z_pred"].to_numpy(dtype=np.float64) if "z_pred" in pred else np.full(len(chunk), np.nan))
        recon = predictor.reconstruct(blend, frame["bands"], frame["pixel_scale"], zeropoints=frame["zeropoints"],
                                      survey=frame["survey"]) if hasattr(predictor, "reconstruct") else None
        comparable = recon is not None and same_frame and recon.shape == clean.shape
        if comparable:
            r1, r2 = measure_hsm_batch(recon[:, b], psf, frame["pixel_scale"])
            ssim_r.append(metrics.ssim_batch(recon[:, b], clean[:, b]))
            cos_r.append(metrics.cosine_similarity_batch(recon, clean))
        elif recon is not None and hasattr(predictor, "measure_reconstruction"):
            r1, r2 = predictor.measure_reconstruction(recon, band)  # model frame differs from the data set's
        else:
            r1 = pred.get("e1_recon", np.full(len(chunk), np.nan))
            r2 = pred.get("e2_recon", np.full(len(chunk), np.nan))
        shapes["hsm_recon"][0].append(np.asarray(r1, dtype=np.float64))
        shapes["hsm_recon"][1].append(np.asarray(r2, dtype=np.float64))
        ssim_b.append(metrics.ssim_batch(blend[:, b], clean[:, b]))
        cos_b.append(metrics.cosine_similarity_batch(blend, clean))
        for key, images in (("hsm_isolated", isolated), ("hsm_blend", blend)):
            g1, g2 = measure_hsm_batch(images[:, b], psf, frame["pixel_scale"], sky_var=sky_var)
            shapes[key][0].append(g1)
            shapes[key][1].append(g2)
        room = keep_images - len(gallery["blend"])
        if room > 0 and comparable:
            gallery["blend"] += list(blend[:room, b])
            gallery["reconstruction"] += list(recon[:room, b])
            gallery["truth (noiseless)"] += list(clean[:room, b])

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0)

    return {
        "shapes": {k: (cat(v[0]), cat(v[1])) for k, v in shapes.items()},
        "z_pred": cat(z_pred),
        "ssim_recon": cat(ssim_r), "ssim_blend": cat(ssim_b), "cosine_recon": cat(cos_r), "cosine_blend": cat(cos_b),
        "gallery": {k: np.asarray(v) for k, v in gallery.items()},
    }


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _ring(predictor, ring_dataset, snr_min: float, band: str, batch_size: int, max_samples: int | None) -> dict:
    """Shear response m, c per estimator (and for the labels) on a ring set, whole ring scenes kept."""
    frame = _frame(ring_dataset, "")
    for needed in ("g1_applied", "g2_applied", "e1", "e2"):
        if needed not in ring_dataset.fields:
            raise InputError(f"{ring_dataset.path}: not a ring set (no field '{needed}')")
    idx = select_indices(ring_dataset, snr_min, max_samples=max_samples, by_pair=True)
    est = _estimate(predictor, ring_dataset, idx, frame, "", band, batch_size)
    g1a, g2a = ring_dataset.read("g1_applied", idx), ring_dataset.read("g2_applied", idx)
    pid = ring_dataset.read("pair_id", idx) if "pair_id" in ring_dataset.fields else None
    series = {"labels": (ring_dataset.read("e1", idx), ring_dataset.read("e2", idx))}
    series.update({name: est["shapes"][_EST_KEYS[name]] for name in ESTIMATORS})
    out = {"n": int(idx.size)}
    for name, (e1, e2) in series.items():
        r1 = metrics.ring_response_from_labels(e1, g1a, pid)
        r2 = metrics.ring_response_from_labels(e2, g2a, pid)
        out[name] = {"m1": r1["m"], "m1_err": r1["m_err"], "c1": r1["c"], "c1_err": r1["c_err"],
                     "m2": r2["m"], "m2_err": r2["m_err"], "c2": r2["c"], "c2_err": r2["c_err"],
                     "g": r1.get("g", float("nan")), "n_scenes": r1["n"]}
    return out


def evaluate_simulated(predictor, dataset, ring_dataset=None, snr_min: float = 20, max_samples: int | None = None,
                       band: str = "i", batch_size: int = 256, prefix: str = "", bootstrap: int = 200,
                       out_dir: str | Path | None = None, n_gallery: int = 4, flow: bool | None = None) -> dict:
    """The model-stage figures of ``predictor`` on a held-out ``dataset`` (and ``ring_dataset``), as one table.

    ``dataset``/``ring_dataset``: ``SimDataset`` objects or folders; ``prefix="des_"`` evaluates the paired DES
    renders (domain shift). Samples with truth SNR below ``snr_min`` are left out (ring sets: whole scenes).
    Returns a dict with ``table`` (one row per estimator), ``reconstruction``, ``redshift`` and ``ring``; with
    ``out_dir`` the plots, ``report.md``, ``report.html`` and ``metrics.json`` are written there too.
    ``flow`` (None: when the checkpoint carries a flow head) adds the posterior rows and ``posterior`` figures.
    """
    from survey_deblend.sim.dataset import open_dataset

    ds = open_dataset(dataset) if isinstance(dataset, (str, Path)) else dataset
    frame = _frame(ds, prefix)
    if band not in frame["bands"]:
        raise InputError(f"{ds.path}: band '{band}' not among the data set's bands {frame['bands']}")
    snr_field = "des_snr" if prefix == "des_" and "des_snr" in ds.fields else "snr"
    idx = select_indices(ds, snr_min, snr_field=snr_field, max_samples=max_samples)
    if idx.size == 0:
        raise InputError(f"{ds.path}: no sample with {snr_field} >= {snr_min}")
    est = _estimate(predictor, ds, idx, frame, prefix, band, batch_size, keep_images=n_gallery)
    e1t, e2t = ds.read("e1", idx).astype(np.float64), ds.read("e2", idx).astype(np.float64)
    z_true = ds.read("z", idx).astype(np.float64) if "z" in ds.fields else np.full(idx.size, np.nan)
    redshift = {"sigma_nmad": metrics.sigma_nmad(est["z_pred"], z_true),
                "outlier_fraction": metrics.outlier_fraction(est["z_pred"], z_true),
                "bias": metrics.weighted_mean(est["z_pred"] - z_true)}
    recon = {"ssim_recon": _nanmean(est["ssim_recon"]), "ssim_blend": _nanmean(est["ssim_blend"]),
             "cosine_recon": _nanmean(est["cosine_recon"]), "cosine_blend": _nanmean(est["cosine_blend"])}
    ring = _ring(predictor, ring_dataset if not isinstance(ring_dataset, (str, Path)) else open_dataset(ring_dataset),
                 snr_min, band, batch_size, max_samples) if ring_dataset is not None else None
    table = []
    for name in ESTIMATORS:
        e1, e2 = est["shapes"][_EST_KEYS[name]]
        row = {"estimator": name, **metrics.shape_metrics(e1, e2, e1t, e2t, bootstrap=bootstrap),
               "failure_fraction": float(np.mean(~(np.isfinite(e1) & np.isfinite(e2)))) if e1.size else float("nan")}
        if ring is not None:
            row.update({f"ring_{k}": v for k, v in ring[name].items() if k in ("m1", "m1_err", "c1", "c1_err", "m2",
                                                                              "m2_err", "c2", "c2_err")})
        if name == "model":
            row.update({"z_sigma_nmad": redshift["sigma_nmad"], "z_outlier_fraction": redshift["outlier_fraction"]})
        if name == "HSM on reconstruction":
            row.update({"ssim": recon["ssim_recon"], "cosine": recon["cosine_recon"]})
        if name == "HSM on blend":
            row.update({"ssim": recon["ssim_blend"], "cosine": recon["cosine_blend"]})
        table.append(row)
    posterior = _posterior(predictor, ds, idx, frame, prefix, batch_size, bootstrap, ring_dataset, snr_min,
                           max_samples, flow)
    if posterior is not None:
        table.extend(posterior.pop("table"))
    result = {
        "dataset": str(ds.path), "ring_dataset": None if ring_dataset is None else str(getattr(
            ring_dataset, "path", ring_dataset)), "model": getattr(predictor, "model_id", None),
        "n_total": len(ds), "n_used": int(idx.size), "snr_min": snr_min, "band": band, "frame": frame["survey"],
        "table": table, "reconstruction": recon, "redshift": redshift, "ring": ring,
    }
    if posterior is not None:
        result["posterior"] = posterior["figures"]
    if out_dir is not None:
        from survey_deblend.evaluation.sim_report import write_simulated_report

        arrays = {"truth": (e1t, e2t), "snr": ds.read(snr_field, idx).astype(np.float64) if snr_field in ds.fields
                  else np.full(idx.size, np.nan), "shapes": est["shapes"], "gallery": est["gallery"],
                  "pixel_scale": frame["pixel_scale"], "posterior": posterior}
        result["report_dir"] = str(write_simulated_report(result, arrays, Path(out_dir)))
    return result


def _posterior(predictor, ds, idx: np.ndarray, frame: dict, prefix: str, batch_size: int, bootstrap: int,
               ring_dataset, snr_min: float, max_samples: int | None, flow: bool | None) -> dict | None:
    """Flow-head rows (posterior mean, posterior draw) and figures, or None without a flow (evaluation.posterior)."""
    from survey_deblend.evaluation import posterior

    head = posterior.flow_head(predictor) if flow is not False else None
    if head is None:
        if flow:
            raise InputError("evaluate: the checkpoint has no flow head (run 'survey-deblend train flow')")
        return None
    lat, mask = posterior.latents(predictor, ds, idx, frame, prefix, batch_size)
    e_true = np.stack([ds.read("e1", idx), ds.read("e2", idx)], axis=1).astype(np.float64)
    z_true = ds.read("z", idx).astype(np.float64) if "z" in ds.fields else np.full(idx.size, np.nan)
    out = posterior.posterior_figures(head, lat, mask, idx.astype(np.int64), e_true, z_true, bootstrap)
    ring = None
    if ring_dataset is not None:
        from survey_deblend.sim.dataset import open_dataset

        rds = open_dataset(ring_dataset) if isinstance(ring_dataset, (str, Path)) else ring_dataset
        ring_idx = select_indices(rds, snr_min, max_samples=max_samples, by_pair=True)
        ring = posterior.ring_posterior(head, predictor, rds, ring_idx, _frame(rds, ""), batch_size)
    table = []
    for name, row in out["rows"].items():
        row = {"estimator": name, **row, "failure_fraction": 0.0}
        if ring is not None:
            row.update({f"ring_{k}": v for k, v in ring[name].items()})
        if name == "flow: posterior mean":
            row.update({"z_sigma_nmad": out["figures"]["z_sigma_nmad"],
                        "z_outlier_fraction": out["figures"]["z_outliers"]})
        table.append(row)
    out["figures"]["ring"] = ring
    return {"table": table, **out}

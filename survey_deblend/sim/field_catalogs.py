"""Catalogs of a simulated field in the exact DES SVA1 schema, written by the catalog stage's writer
(``catalog.synthetic.write_catalogs``) from the objects this module measures.

im3shape-like measurement model (documented, not fitted): E_1/E_2 = the true sheared shape plus Gaussian
noise of spread ``min(0.4, 2.5 / SNR_W)`` per component (kept inside |E| < 0.99); SNR_W is the optimal r-band
SNR from the galaxy's rendered flux profile and the sky noise; objects with SNR_W < 8 and a random
``unmeasured_fraction`` are unmeasured (-9999 rows); random fractions of the measured rows carry ERROR_FLAG /
INFO_FLAG bits; NBC_M falls with SNR like im3shape's noise bias. Catalog magnitudes are the true DES
magnitudes plus photometric noise; MEAN_PHOTOZ is a noisy photo-z, never the true redshift; MEAN_PSF_* describe
the simulated r-band PSF (round, surveycodex FWHM in DES pixels). The truth
(shapes, shear, redshift) stays in ``truth.parquet``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from survey_deblend.catalog.synthetic import write_catalogs
from survey_deblend.config.sim import FieldSimConfig
from survey_deblend.sim.scenes import sample_rng
from survey_deblend.surveys import band_facts

SHEAR_BAND = "r"  # im3shape measured SVA1 shapes in r (DES_SVA1.md)

MIN_MEASURED_SNR = 8.0


def _flag_bits(rng: np.random.Generator, n: int, fraction: float, bits: int) -> np.ndarray:
    """``fraction`` of ``n`` rows get one random bit among the lowest ``bits``; the rest 0."""
    flags = np.zeros(n, dtype=np.int32)
    hit = rng.random(n) < fraction
    flags[hit] = 2 ** rng.integers(0, bits, int(hit.sum()))
    return flags


def catalog_objects(truth: pd.DataFrame, cfg: FieldSimConfig) -> pd.DataFrame:
    """The detected objects (r-band SNR >= ``detection_snr``) as a measurement pipeline would report them."""
    det = truth[truth["snr_r"] >= cfg.detection_snr].reset_index(drop=True)
    rng = sample_rng(cfg.seed, 2)
    n = len(det)
    snr = det["snr_r"].to_numpy(float)
    sigma_m = np.minimum(0.4, 2.5 / np.maximum(snr, 1e-3))
    e = det[["e1", "e2"]].to_numpy(float) + rng.normal(0.0, 1.0, (n, 2)) * sigma_m[:, None]
    norm = np.hypot(e[:, 0], e[:, 1])
    e *= np.where(norm >= 0.99, 0.99 / np.maximum(norm, 1e-12), 1.0)[:, None]
    mags = {}
    for b in "griz":
        err = np.minimum(1.0857 / np.maximum(det[f"snr_{b}"].to_numpy(float), 1e-3), 2.0)
        mags[f"mag_{b}"] = det[f"mag_{b}"].to_numpy(float) + rng.normal(0.0, 1.0, n) * err
    z = det["z"].to_numpy(float)
    return pd.DataFrame(
        {
            "coadd_objects_id": det["coadd_objects_id"].to_numpy(np.int64),
            "ra": det["ra"].to_numpy(float),
            "dec": det["dec"].to_numpy(float),
            "e1": e[:, 0],
            "e2": e[:, 1],
            "snr_w": snr,
            **mags,
            "measured": (snr >= MIN_MEASURED_SNR) & (rng.random(n) >= cfg.unmeasured_fraction),
            "error_flag": _flag_bits(rng, n, cfg.error_flag_fraction, 8),
            "info_flag": _flag_bits(rng, n, cfg.info_flag_fraction, 12),
            "w": 1.0 / (0.24**2 + sigma_m**2),
            "nbc_m": -0.5 * np.maximum(snr, 1.0) ** -0.7 - 0.02 * rng.random(n),
            "nbc_c1": rng.normal(0.0, 5e-4, n),
            "nbc_c2": rng.normal(0.0, 5e-4, n),
            "z": np.clip(z + rng.normal(0.0, 1.0, n) * 0.08 * (1 + z), 0.0, None),  # photo-z, not the truth
            "radius_arcsec": det["hlr_arcsec"].to_numpy(float),
            **psf_columns(n),
            "modest_class": np.ones(n, dtype=np.int16),
            "flags_i": np.where(rng.random(n) < 0.01, 4, 0).astype(np.int16),
        }
    )


def psf_columns(n: int) -> dict[str, np.ndarray]:
    """im3shape's MEAN_PSF_* for ``n`` galaxies of the field: the simulated r-band PSF (one round profile with the
    surveycodex FWHM, ``sim.psf``), its FWHM in DES pixels as im3shape reports it."""
    facts = band_facts("DES", SHEAR_BAND)
    return {
        "psf_fwhm": np.full(n, facts.psf_fwhm_arcsec / facts.pixel_scale_arcsec),
        "psf_e1": np.zeros(n),
        "psf_e2": np.zeros(n),
    }


def write_field_catalogs(out_dir: str | Path, objects: pd.DataFrame, cfg: FieldSimConfig) -> dict[str, Path]:
    """Write ``im3shape.fits``, ``gold.fits`` and ``wlinfo.fits`` (row-matched) for ``objects``."""
    paths = write_catalogs(out_dir, objects=objects, seed=cfg.seed)
    return {"im3shape": paths.im3shape, "gold": paths.gold, "wlinfo": paths.wlinfo}

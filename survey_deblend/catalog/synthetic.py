"""Synthetic DES SVA1 catalogs (im3shape, gold, wlinfo) in the exact real schema, for tests, demo, benchmarks.

Without ``objects`` the population is random but shaped like the real files: unmeasured rows (every float
-9999, ERROR_FLAG = 2**30, INFO_FLAG = 2**25), flagged rows, low-SNR rows, a few |e| >= 1 and NaN shapes, a
gold catalog that misses a few objects and holds extra stars and junk, all in the SVA1 SPT-E region. With
``objects`` (e.g. the galaxies a simulated field rendered) exactly those rows are written. Vectorised numpy:
5 M rows take seconds plus the write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from survey_deblend.catalog.schema import (
    ERROR_FLAG_UNMEASURED,
    GOLD_COLUMNS,
    IM3SHAPE_COLUMNS,
    INFO_FLAG_UNMEASURED,
    UNMEASURED,
    WLINFO_COLUMNS,
    FitsTableWriter,
    write_fits_table,
)

FIRST_ID = 3_000_000_000
SPT_E_RA = (55.0, 95.0)  # inside the SVA1 SPT-E region, 50 < RA < 100
SPT_E_DEC = (-60.0, -40.0)  # DEC < -35
DEFAULT_COLOURS = {"g": 1.2, "r": 0.5, "i": 0.0, "z": -0.3}  # MAG_AUTO_X - MAG_AUTO_I of a typical galaxy


@dataclass(frozen=True)
class CatalogPaths:
    im3shape: Path
    gold: Path
    wlinfo: Path


@dataclass
class CatalogFrames:
    """The three catalogs as DataFrames with the real upper-case columns (edit them, then ``write_frames``)."""

    im3shape: pd.DataFrame
    gold: pd.DataFrame
    wlinfo: pd.DataFrame


def random_objects(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` random objects with the columns ``catalog_frames`` reads, including the problem rows."""
    rng = np.random.default_rng(seed)
    ids = FIRST_ID + np.cumsum(rng.integers(1, 4, n, dtype=np.int64))
    sin_dec = rng.uniform(np.sin(np.radians(SPT_E_DEC[0])), np.sin(np.radians(SPT_E_DEC[1])), n)
    e_mod = np.minimum(np.abs(rng.normal(0.0, 0.25, n)), 0.95)
    angle = rng.uniform(0.0, np.pi, n)
    snr = 10.0 ** rng.normal(np.log10(18.0), 0.35, n)
    kind = rng.random(n)  # one problem per row at most, so that each shows up in one cut
    e1, e2 = e_mod * np.cos(2 * angle), e_mod * np.sin(2 * angle)
    big_e = (kind >= 0.22) & (kind < 0.23)
    e1 = np.where(big_e, rng.uniform(1.0, 1.5, n), e1)
    nan_e = (kind >= 0.23) & (kind < 0.232)
    e2 = np.where(nan_e, np.nan, e2)
    return pd.DataFrame(
        {
            "coadd_objects_id": ids,
            "ra": rng.uniform(*SPT_E_RA, n),
            "dec": np.degrees(np.arcsin(sin_dec)),
            "e1": e1,
            "e2": e2,
            "snr_w": snr,
            "mag_i": 24.0 - 2.5 * np.log10(snr / 10.0) + rng.normal(0.0, 0.3, n),
            "measured": kind >= 0.08,
            "error_flag": np.where((kind >= 0.08) & (kind < 0.12), 2 ** rng.integers(0, 20, n), 0).astype(np.int32),
            "info_flag": np.where((kind >= 0.12) & (kind < 0.22), 2 ** rng.integers(0, 20, n), 0).astype(np.int32),
            "modest_class": np.where(rng.random(n) < 0.05, 0, 1).astype(np.int16),
            "flags_i": np.where(rng.random(n) < 0.05, 4, 0).astype(np.int16),
            "z": rng.uniform(0.2, 1.3, n),
        }
    )


def _column(objects: pd.DataFrame, name: str, default, dtype=None) -> np.ndarray:
    values = objects[name].to_numpy() if name in objects.columns else np.broadcast_to(default, len(objects))
    return np.asarray(values, dtype=dtype)


def catalog_frames(
    objects: pd.DataFrame | None = None,
    n: int = 1000,
    seed: int = 0,
    gold_missing: float = 0.02,
    gold_extra: float = 0.1,
) -> CatalogFrames:
    """The three catalogs for ``objects`` (or ``n`` random ones).

    ``objects`` needs ``coadd_objects_id, ra, dec, e1, e2, snr_w, mag_i``; optional ``measured`` (bool),
    ``error_flag``, ``info_flag``, ``w``, ``nbc_m``, ``nbc_c1``, ``nbc_c2``, ``psf_fwhm`` (DES pixels),
    ``psf_e1``, ``psf_e2``, ``mag_g/r/z``, ``modest_class``, ``flags_i``, ``z``, ``radius_arcsec``. Given
    objects, the gold catalog holds exactly them; random ones add ``gold_extra * n`` stars/junk to gold and leave
    ``gold_missing`` of the galaxies out of it.
    """
    rng = np.random.default_rng(seed + 1)
    randomised = objects is None
    if objects is None:
        objects = random_objects(n, seed)
    required = ["coadd_objects_id", "ra", "dec", "e1", "e2", "snr_w", "mag_i"]
    missing = [c for c in required if c not in objects.columns]
    if missing:
        raise KeyError(f"objects: missing column {missing[0]}")
    n = len(objects)
    snr = _column(objects, "snr_w", 0.0, np.float64)
    measured = _column(objects, "measured", True, bool)
    mag = {
        b: _column(objects, f"mag_{b}", objects["mag_i"].to_numpy() + c, np.float64) for b, c in DEFAULT_COLOURS.items()
    }
    ids = objects["coadd_objects_id"].to_numpy().astype(np.int64)
    ra, dec = objects["ra"].to_numpy(np.float64), objects["dec"].to_numpy(np.float64)
    im3 = {
        "COADD_OBJECTS_ID": ids,
        "E_1": objects["e1"].to_numpy(np.float64),
        "E_2": objects["e2"].to_numpy(np.float64),
        "NBC_M": _column(objects, "nbc_m", -0.05 - 0.5 / np.maximum(snr, 1.0), np.float64),
        "NBC_C1": _column(objects, "nbc_c1", rng.normal(0.0, 2e-4, n), np.float64),
        "NBC_C2": _column(objects, "nbc_c2", rng.normal(0.0, 2e-4, n), np.float64),
        "W": _column(objects, "w", 1.0 / (0.25**2 + 1.0 / np.maximum(snr, 1.0) ** 2), np.float64),
        "SNR_W": snr,
        "SNR_R": snr * 0.9,
        "FLUX_R": 10.0 ** (-0.4 * (mag["r"] - 30.0)),
        "RADIUS": _column(objects, "radius_arcsec", rng.lognormal(np.log(0.5), 0.4, n), np.float64),
        "MEAN_RGPP_RP": rng.uniform(1.2, 1.6, n),
        "MEAN_PSF_E1": _column(objects, "psf_e1", rng.normal(0.0, 0.01, n), np.float64),
        "MEAN_PSF_E2": _column(objects, "psf_e2", rng.normal(0.0, 0.01, n), np.float64),
        "MEAN_PSF_FWHM": _column(objects, "psf_fwhm", rng.normal(3.6, 0.3, n), np.float64),  # DES pixels
        "RA_SHIFT": rng.normal(0.0, 0.05, n),
        "DEC_SHIFT": rng.normal(0.0, 0.05, n),
        "CHI2": rng.normal(1.0, 0.05, n),
        "LIKELIHOOD": rng.normal(-1000.0, 50.0, n),
    }
    for name in IM3SHAPE_COLUMNS:
        if IM3SHAPE_COLUMNS[name] in ("f4", "f8") and name != "COADD_OBJECTS_ID":
            im3[name] = np.where(measured, im3[name], UNMEASURED)
    im3["ERROR_FLAG"] = np.where(measured, _column(objects, "error_flag", 0, np.int32), ERROR_FLAG_UNMEASURED)
    im3["INFO_FLAG"] = np.where(measured, _column(objects, "info_flag", 0, np.int32), INFO_FLAG_UNMEASURED)
    im3["IS_BULGE"] = rng.integers(0, 2, n)
    im3["STAMP_SIZE"] = rng.choice([32, 48, 64], n)
    im3["N_EXPOSURE"] = rng.integers(3, 11, n)
    photoz = _column(objects, "z", rng.uniform(0.2, 1.3, n), np.float64)
    wlinfo = {
        "COADD_OBJECTS_ID": ids,
        "RA": ra,
        "DEC": dec,
        **{f"MAG_AUTO_{b.upper()}": mag[b] for b in "griz"},
        "PHOTOZ_BIN": np.clip(np.digitize(photoz, [0.3, 0.55, 0.83, 1.3]), 0, 3),
        "MEAN_PHOTOZ": photoz,
        "SVA1_FLAG": np.zeros(n, np.int32),
        "IM3SHAPE_FLAG": (im3["ERROR_FLAG"] != 0).astype(np.int32),
        "NGMIX_FLAG": np.zeros(n, np.int32),
    }
    gold = {
        "COADD_OBJECTS_ID": ids,
        "RA": ra,
        "DEC": dec,
        "MODEST_CLASS": _column(objects, "modest_class", 1, np.int16),
        **{f"FLAGS_{b}": np.zeros(n, np.int16) for b in "GRZ"},
        "FLAGS_I": _column(objects, "flags_i", 0, np.int16),
        **{f"MAG_AUTO_{b.upper()}": mag[b] for b in "griz"},
        **{f"MAGERR_AUTO_{b.upper()}": 1.0857 / np.maximum(snr, 1.0) for b in "GRIZ"},
    }
    gold_frame = pd.DataFrame(gold)
    if randomised:
        gold_frame = gold_frame[rng.random(n) >= gold_missing]
        gold_frame = pd.concat([gold_frame, _extra_gold(int(gold_extra * n), int(ids.max(initial=FIRST_ID)), rng)])
        gold_frame = gold_frame.sort_values("COADD_OBJECTS_ID", kind="stable")
    return CatalogFrames(
        im3shape=pd.DataFrame(im3)[list(IM3SHAPE_COLUMNS)],
        gold=gold_frame[list(GOLD_COLUMNS)].reset_index(drop=True),
        wlinfo=pd.DataFrame(wlinfo)[list(WLINFO_COLUMNS)],
    )


def _extra_gold(n: int, max_id: int, rng: np.random.Generator) -> pd.DataFrame:
    """Gold objects that im3shape never measured: stars (MODEST_CLASS 2) and junk (0), fresh IDs."""
    sin_dec = rng.uniform(np.sin(np.radians(SPT_E_DEC[0])), np.sin(np.radians(SPT_E_DEC[1])), n)
    mag_i = rng.uniform(16.0, 24.0, n)
    return pd.DataFrame(
        {
            "COADD_OBJECTS_ID": max_id + 1 + np.arange(n, dtype=np.int64),
            "RA": rng.uniform(*SPT_E_RA, n),
            "DEC": np.degrees(np.arcsin(sin_dec)),
            "MODEST_CLASS": np.where(rng.random(n) < 0.8, 2, 0).astype(np.int16),
            **{f"FLAGS_{b}": np.zeros(n, np.int16) for b in "GRIZ"},
            **{f"MAG_AUTO_{b.upper()}": mag_i + c for b, c in DEFAULT_COLOURS.items()},
            **{f"MAGERR_AUTO_{b}": np.full(n, 0.02) for b in "GRIZ"},
        }
    )


def write_frames(out_dir: str | Path, frames: CatalogFrames, fmt: str = "fits") -> CatalogPaths:
    """Write the three catalogs as ``im3shape``, ``gold``, ``wlinfo`` ``.fits`` (HDU 1) or ``.parquet``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    schemas = {"im3shape": IM3SHAPE_COLUMNS, "gold": GOLD_COLUMNS, "wlinfo": WLINFO_COLUMNS}
    paths = {}
    for name, columns in schemas.items():
        frame = getattr(frames, name)
        if fmt == "fits":
            paths[name] = write_fits_table(out_dir / f"{name}.fits", frame, columns)
        elif fmt == "parquet":
            table = pd.DataFrame({c: np.asarray(frame[c]).astype(t) for c, t in columns.items()})
            paths[name] = out_dir / f"{name}.parquet"
            table.to_parquet(paths[name], index=False, row_group_size=262_144)
        else:
            raise ValueError(f"fmt: expected 'fits' or 'parquet', got {fmt!r}")
    return CatalogPaths(**paths)


def write_catalogs(
    out_dir: str | Path, objects: pd.DataFrame | None = None, n: int = 1000, seed: int = 0, fmt: str = "fits"
) -> CatalogPaths:
    """Write synthetic im3shape, gold and wlinfo catalogs for ``objects`` (or ``n`` random objects)."""
    return write_frames(out_dir, catalog_frames(objects, n=n, seed=seed), fmt=fmt)


def write_catalogs_streamed(
    out_dir: str | Path, n: int, seed: int = 0, chunk_rows: int = 500_000, gold_missing: float = 0.02,
    gold_extra: float = 0.1,
) -> dict[str, Path]:
    """The im3shape and gold FITS catalogs of ``n`` random objects, written chunk by chunk (memory: one chunk,
    whatever ``n``): for ``benchmarks/scale.py``'s 100 M rows. The population is ``catalog_frames``' (problem rows,
    ``gold_missing`` of the galaxies left out of gold, ``gold_extra * n`` stars and junk appended to it), IDs
    increasing through the chunks; the rows differ from ``write_catalogs(n=n)``'s (each chunk has its own seed).
    """
    out_dir = Path(out_dir)
    last_id = FIRST_ID
    with FitsTableWriter(out_dir / "im3shape.fits", IM3SHAPE_COLUMNS) as im3, \
            FitsTableWriter(out_dir / "gold.fits", GOLD_COLUMNS) as gold:
        for chunk, start in enumerate(range(0, n, chunk_rows)):
            chunk_seed = seed * 1_000_003 + chunk
            objects = random_objects(min(chunk_rows, n - start), chunk_seed)
            objects["coadd_objects_id"] += last_id - FIRST_ID
            last_id = int(objects["coadd_objects_id"].iloc[-1])
            frames = catalog_frames(objects, seed=chunk_seed)
            im3.write(frames.im3shape)
            rng = np.random.default_rng(chunk_seed + 7)
            gold.write(frames.gold[rng.random(len(objects)) >= gold_missing])
        rng = np.random.default_rng(seed + 11)
        n_extra = int(gold_extra * n)
        for start in range(0, n_extra, chunk_rows):
            extra = _extra_gold(min(chunk_rows, n_extra - start), last_id + start, rng)
            gold.write(extra[list(GOLD_COLUMNS)])
    return {"im3shape": im3.path, "gold": gold.path}

"""Reading what evaluation consumes: a run folder (Parquet parts + ``manifest.json``) and an optional truth file.

A run folder holds one Parquet file per partition with the columns of DESIGN.md "Output columns" and a
``_manifest.json`` (or ``manifest.json``). Bad input
becomes one ``InputError`` line naming the file or column, never a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from survey_deblend.catalog.match import ID as CATALOG_ID
from survey_deblend.catalog.schema import UNMEASURED
from survey_deblend.errors import InputError
from survey_deblend.schema import OUTPUT_COLUMNS, PREDICTED

__all__ = [
    "MAG_COLUMNS",
    "REQUIRED_COLUMNS",
    "USABLE_STATUSES",
    "RunData",
    "attach_truth",
    "load_run",
    "magnitudes_from_catalogs",
    "read_truth",
    "usable_rows",
]

REQUIRED_COLUMNS = ("coadd_objects_id", "status", "snr_w", "e1_im3shape", "e2_im3shape", "e1_pred", "e2_pred")
USABLE_STATUSES = tuple(sorted(PREDICTED))  # rows with predictions (ok, padded, no_psf: no calibration)
NUMERIC_COLUMNS = tuple(c.name for c in OUTPUT_COLUMNS if c.dtype == "float64")
MISSING_SENTINEL = UNMEASURED  # DES SVA1's value for "not measured"
MAG_COLUMNS = ("MAG_AUTO_I",)  # the i magnitude of the gold and wlinfo catalogs (catalog.schema)
MANIFEST_NAMES = ("_manifest.json", "manifest.json")  # the pipeline writes _manifest.json (pyarrow skips it)


@dataclass
class RunData:
    """The rows of one run (every status) and its manifest (None when the folder has none)."""

    out_dir: Path
    table: pd.DataFrame
    manifest: dict | None
    parts: list[Path]


def _parquet_parts(out_dir: Path) -> list[Path]:
    """Parquet files of a run, skipping hidden/temporary ones (``.x``, ``_x``) and the report folder."""
    parts = []
    for path in sorted(out_dir.rglob("*.parquet")):
        rel = path.relative_to(out_dir).parts
        if any(p.startswith((".", "_")) for p in rel) or rel[0] in ("report", "_report"):
            continue
        parts.append(path)
    return parts


def load_run(out_dir: str | Path) -> RunData:
    """Read every Parquet part of ``out_dir`` and its ``manifest.json``; checks the required columns."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(f"run folder {out_dir} does not exist or is not a folder")
    parts = _parquet_parts(out_dir)
    if not parts:
        raise InputError(f"run folder {out_dir} holds no Parquet parts (*.parquet): nothing to evaluate")
    frames = []
    for path in parts:
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
            raise InputError(f"cannot read Parquet part {path}: {exc}".splitlines()[0]) from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(f"Parquet part {path} lacks column(s) {', '.join(missing)} (DESIGN.md output columns)")
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    manifest = None
    manifest_path = next((out_dir / name for name in MANIFEST_NAMES if (out_dir / name).is_file()), None)
    if manifest_path is not None:
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{manifest_path} is not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict):
            raise InputError(f"{manifest_path} is not a JSON object")
    return RunData(out_dir=out_dir, table=table, manifest=manifest, parts=parts)


def _clean(values: pd.Series) -> np.ndarray:
    """Float array with nulls and the -9999 sentinel as NaN."""
    arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    arr[arr == MISSING_SENTINEL] = np.nan
    return arr


def usable_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with the model's predictions (status ok/padded/no_psf) and finite predictions and im3shape shapes.

    Numeric shape columns come back as float64 with -9999 turned into NaN.
    """
    out = table[table["status"].astype(str).isin(USABLE_STATUSES)].copy()
    for col in NUMERIC_COLUMNS:
        if col in out.columns:
            out[col] = _clean(out[col])
    keep = np.isfinite(out["e1_pred"]) & np.isfinite(out["e2_pred"])
    keep &= np.isfinite(out["e1_im3shape"]) & np.isfinite(out["e2_im3shape"])
    return out[keep.to_numpy()].reset_index(drop=True)


def read_truth(path: str | Path) -> pd.DataFrame:
    """Read a truth table (Parquet, CSV or FITS) into ``coadd_objects_id`` plus the canonical truth columns.

    Canonical names: ``e1_true``, ``e2_true`` (required), ``z_true``, ``mag_true``, ``n_neighbours``, read from
    the columns the simulation writes (``sim.field.TRUTH_COLUMNS``, one spelling each).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"truth file {path} does not exist")
    try:
        if path.suffix in (".csv", ".txt"):
            raw = pd.read_csv(path)
        elif path.suffix in (".fits", ".fit", ".gz"):
            from astropy.table import Table

            raw = Table.read(path).to_pandas()
        else:
            raw = pd.read_parquet(path)
    except Exception as exc:
        raise InputError(f"cannot read truth file {path}: {exc}".splitlines()[0]) from exc
    from survey_deblend.sim.field import TRUTH_COLUMNS, TRUTH_ID

    if TRUTH_ID not in raw.columns:
        raise InputError(f"truth file {path} has no {TRUTH_ID} column")
    out = pd.DataFrame({"coadd_objects_id": pd.to_numeric(raw[TRUTH_ID], errors="coerce")})
    if out["coadd_objects_id"].isna().any():
        raise InputError(f"truth file {path}: column {TRUTH_ID} has missing or non-integer values")
    out["coadd_objects_id"] = out["coadd_objects_id"].astype(np.int64)
    for canon, name in TRUTH_COLUMNS.items():
        if name in raw.columns:
            out[canon] = _clean(raw[name])
    for needed in ("e1_true", "e2_true"):
        if needed not in out.columns:
            raise InputError(f"truth file {path} has no {TRUTH_COLUMNS[needed]} column")
    dup = out["coadd_objects_id"].duplicated()
    if dup.any():
        first = int(out.loc[dup, "coadd_objects_id"].iloc[0])
        raise InputError(f"truth file {path}: coadd_objects_id {first} appears more than once")
    return out


def attach_truth(usable: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Left-join the truth onto the usable rows by ``coadd_objects_id``; returns the table and the unmatched count.

    Columns already present in the run table (e.g. ``n_neighbours``) are kept from the run.
    """
    ids = pd.to_numeric(usable["coadd_objects_id"], errors="coerce").astype("Int64")
    truth_cols = [c for c in truth.columns if c == "coadd_objects_id" or c not in usable.columns]
    merged = usable.assign(coadd_objects_id=ids).merge(
        truth[truth_cols].assign(coadd_objects_id=truth["coadd_objects_id"].astype("Int64")),
        on="coadd_objects_id",
        how="left",
        validate="many_to_one",
        indicator=True,
    )
    unmatched = int((merged.pop("_merge") == "left_only").sum())
    return merged, unmatched


def magnitudes_from_catalogs(manifest: dict | None, ids: np.ndarray, chunk_rows: int = 2_000_000,
                             ) -> tuple[pd.Series | None, str]:
    """i-band ``MAG_AUTO_I`` of ``ids`` from the run's gold (or wlinfo) catalog named in the manifest's config.

    Returns the magnitudes (indexed by id, NaN where not found) and a sentence for the report saying where
    they came from or why there are none. The catalog is streamed in row chunks, keeping only ``ids``.
    """
    from survey_deblend.catalog.readers import open_catalog

    catalog_cfg = ((manifest or {}).get("config") or {}).get("catalog") or {}
    tried = []
    for role in ("gold", "wlinfo"):
        path = catalog_cfg.get(role)
        if not path:
            continue
        try:
            reader = open_catalog(path, role=f"{role} catalog")
        except InputError as exc:
            tried.append(str(exc))
            continue
        id_col = CATALOG_ID if CATALOG_ID in reader.columns else None
        mag_col = next((c for c in MAG_COLUMNS if c in reader.columns), None)
        if id_col is None or mag_col is None:
            tried.append(f"{path}: no {'id' if id_col is None else 'MAG_AUTO_I'} column")
            continue
        wanted = np.unique(np.asarray(ids, dtype=np.int64))
        found = []
        for start, stop in reader.chunk_ranges(chunk_rows):
            chunk = reader.read([id_col, mag_col], start, stop)
            found.append(chunk[chunk[id_col].astype(np.int64).isin(wanted)])
        table = pd.concat(found, ignore_index=True).drop_duplicates(id_col)
        mags = _clean(table[mag_col])
        mags[(mags >= 99) | (mags <= -99)] = np.nan  # DES "not measured" magnitudes
        series = pd.Series(mags, index=table[id_col].astype(np.int64).to_numpy())
        return series, f"magnitudes: {mag_col} from the {role} catalog {path}"
    why = "; ".join(tried) if tried else "no truth magnitude and no gold/wlinfo catalog in the run's manifest"
    return None, f"no magnitudes: {why}"

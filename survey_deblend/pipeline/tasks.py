"""The stage functions of a run: plain values in, plain values out, testable without a cluster.

``fetch_stamps`` -> ``predict_shapes`` -> ``write_partition``; the futures graph in ``run.py`` chains them per
partition. The output columns and types are DESIGN.md's "Output columns", held once in ``OUTPUT_SCHEMA``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from survey_deblend.pipeline.plan import TMP_PREFIX, ResumePlan

CATALOG_COLUMNS = (
    "coadd_objects_id",
    "ra",
    "dec",
    "snr_w",
    "e1_im3shape",
    "e2_im3shape",
    "nbc_m",
    "nbc_c1",
    "nbc_c2",
    "w",
)
PREDICTION_COLUMNS = ("e1_pred", "e2_pred", "e_sigma_pred", "z_pred", "e1_recon", "e2_recon")

OUTPUT_SCHEMA = pa.schema(
    [
        ("coadd_objects_id", pa.int64()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("tile", pa.string()),
        ("snr_w", pa.float64()),
        ("e1_im3shape", pa.float64()),
        ("e2_im3shape", pa.float64()),
        ("nbc_m", pa.float64()),
        ("nbc_c1", pa.float64()),
        ("nbc_c2", pa.float64()),
        ("w", pa.float64()),
        *[(name, pa.float64()) for name in PREDICTION_COLUMNS],
        ("status", pa.string()),
        ("model", pa.string()),
        ("run_id", pa.string()),
    ]
)


def fetch_stamps(source: Any, ra: np.ndarray, dec: np.ndarray, size_pix: int) -> Any:
    """All bands of the stamps of one partition from a ``CutoutSource`` (one tile read serves many)."""
    return source.fetch(np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64), int(size_pix))


def predict_shapes(
    batch: Any, batch_size: int = 1024, measure_recon: bool = True, predictor: Any = None
) -> pd.DataFrame:
    """Predictions for the usable stamps of a ``CutoutBatch``; other rows get NaN. Adds the stamp ``status``.

    ``predictor`` defaults to the one the worker plugin keeps on this worker (loaded once per worker).
    """
    from survey_deblend.cutouts.status import USABLE

    status = np.asarray(batch.status).astype(str)
    result = pd.DataFrame({name: np.full(len(status), np.nan) for name in PREDICTION_COLUMNS})
    usable = np.flatnonzero(np.isin(status, list(USABLE)))
    if len(usable):
        if predictor is None:
            from survey_deblend.pipeline.plugin import worker_predictor

            predictor = worker_predictor()
        for start in range(0, len(usable), batch_size):
            chunk = usable[start : start + batch_size]
            predicted = predictor.predict(
                batch.images[chunk],
                bands=tuple(batch.bands),
                pixel_scale=float(batch.pixel_scale_arcsec),
                band_mask=batch.band_mask[chunk],
                measure_recon=measure_recon,
            )
            for name in PREDICTION_COLUMNS:
                result.loc[chunk, name] = np.asarray(predicted[name], dtype=np.float64)
    result["status"] = status
    return result


def assemble_partition(
    rows: pd.DataFrame, tile: str, predictions: pd.DataFrame, model_id: str, run_id: str
) -> pd.DataFrame:
    """The output rows of one partition, in the column order and types of ``OUTPUT_SCHEMA``."""
    if len(rows) != len(predictions):
        raise ValueError(f"partition of {len(rows)} galaxies got {len(predictions)} predictions")
    frame = pd.DataFrame({name: rows[name].to_numpy() for name in CATALOG_COLUMNS})
    frame.insert(3, "tile", tile)
    for name in PREDICTION_COLUMNS:
        frame[name] = predictions[name].to_numpy(dtype=np.float64)
    frame["status"] = predictions["status"].to_numpy().astype(str)
    frame["model"] = model_id
    frame["run_id"] = run_id
    return frame


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` with ``OUTPUT_SCHEMA`` under a temporary name beside ``path``, fsync, then rename."""
    table = pa.Table.from_pandas(frame, schema=OUTPUT_SCHEMA, preserve_index=False)
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}.parquet")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_partition(
    out_dir: str | Path,
    partition_id: str,
    rows: pd.DataFrame,
    tile: str,
    predictions: pd.DataFrame,
    model_id: str,
    run_id: str,
) -> dict[str, Any]:
    """Write one partition's Parquet file atomically, then its done-marker; returns counts per status."""
    frame = assemble_partition(rows, tile, predictions, model_id, run_id)
    plan = ResumePlan(out_dir)
    write_parquet_atomic(frame, plan.part_path(partition_id))
    counts = {str(k): int(v) for k, v in frame["status"].value_counts().sort_index().items()}
    info = {"partition_id": partition_id, "tile": tile, "n_rows": len(frame), "counts": counts}
    plan.mark_done(partition_id, info)
    return info

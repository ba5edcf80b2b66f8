"""The stage functions of a run: plain values in, plain values out, testable without a cluster.

``fetch_stamps`` -> ``predict_shapes`` -> ``write_partition``. On CPU workers ``run.py`` submits them fused as
one task per partition (``process_partition``: the stamps never leave the worker that cut them); with GPU
workers it chains them as three tasks so that only inference holds the GPU resource.
The output columns, their types, units and descriptions are owned by ``survey_deblend.schema``.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from survey_deblend.pipeline.plan import TMP_PREFIX, ResumePlan, id_checksum
from survey_deblend.schema import (
    CATALOG_COLUMNS,
    CUTOUT_COLUMNS,
    NO_PSF,
    OUTPUT_NAMES,
    PREDICTION_COLUMNS,
    PSF_COLUMNS,
    arrow_schema,
)


def fetch_stamps(source: Any, ra: np.ndarray, dec: np.ndarray, size_pix: int, choice: Any = None) -> Any:
    """All bands of the stamps of one partition from a ``CutoutSource`` (one tile read serves many), cut from
    the tiles of ``choice`` (the planner's ``TileChoice`` for these rows) so the worker never chooses again."""
    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    if choice is None:
        return source.fetch(ra, dec, int(size_pix))
    return source.fetch(ra, dec, int(size_pix), choice=choice)


def partition_rows(rows: Any) -> pd.DataFrame:
    """A partition's rows: the DataFrame shipped with its task, or read here from the staging area
    (``pipeline.staging.StagedRows``), so that a large selection never travels from the client."""
    return rows.read() if hasattr(rows, "read") else rows


def fetch_partition(source: Any, rows: Any, size_pix: int, choice: Any = None, margin_arcsec: float = 0.0) -> Any:
    """``fetch_stamps`` of a partition's rows (a DataFrame or ``StagedRows``): the chain's fetch, staged rows.
    ``margin_arcsec``: cut that much wider on every side, in whole source pixels (``model.fetch_margin_arcsec``:
    metacalibration shears the wider cut; the model reads ``CutoutBatch.core``)."""
    rows = partition_rows(rows)
    margin = margin_pixels(margin_arcsec, float(source.pixel_scale_arcsec))
    batch = fetch_stamps(source, rows["ra"].to_numpy(), rows["dec"].to_numpy(), size_pix + 2 * margin, choice)
    batch.margin_pix = margin
    return batch


def margin_pixels(margin_arcsec: float, pixel_scale_arcsec: float) -> int:
    """Whole pixels of ``pixel_scale_arcsec`` that cover ``margin_arcsec`` (0 for no margin)."""
    return int(math.ceil(margin_arcsec / pixel_scale_arcsec - 1e-9)) if margin_arcsec > 0 else 0


def predict_partition(
    batch: Any, measure_recon: bool, rows: Any, metacal: bool = False, symmetrize: bool = True,
    predictor: Any = None,
) -> pd.DataFrame:
    """``predict_shapes`` seeded by a partition's ids, with its rows' PSFs when ``metacal`` (rows: a DataFrame or
    ``StagedRows``)."""
    rows = partition_rows(rows)
    psf = rows[list(PSF_COLUMNS)].to_numpy(dtype=np.float64) if metacal else None
    return predict_shapes(batch, measure_recon, predictor=predictor, ids=rows["coadd_objects_id"].to_numpy(),
                          psf=psf, metacal=metacal, symmetrize=symmetrize)


def predict_shapes(
    batch: Any, measure_recon: bool = True, predictor: Any = None, ids: np.ndarray | None = None,
    psf: np.ndarray | None = None, metacal: bool = False, symmetrize: bool = True,
) -> pd.DataFrame:
    """``Predictor.predict_batch`` of a ``CutoutBatch``'s model stamps (``core``) plus what the batch says of each
    row (``bands_used``, ``status``). ``predictor`` defaults to the one the worker plugin keeps on this worker
    (loaded once); ``ids`` (the rows' ``coadd_objects_id``) seed each galaxy's posterior draw and fixnoise field,
    so a re-run reproduces them. With ``metacal``, ``psf`` (N, 3) holds the rows' ``psf_fwhm, psf_e1, psf_e2`` and
    the calibration columns are filled (``calibration.batch``; ``symmetrize``: the 90-degree symmetrized noshear
    shape); a usable row without a usable PSF gets the ``no_psf`` status."""
    if predictor is None:
        from survey_deblend.pipeline.plugin import worker_predictor

        predictor = worker_predictor()
    predictions = predictor.predict_batch(batch.core(), measure_recon=measure_recon, ids=ids)
    status = np.asarray(batch.status).astype(str)
    if metacal:
        from survey_deblend.calibration.batch import calibrate_batch

        if psf is None:
            raise ValueError("predict_shapes: metacal needs the rows' psf_fwhm, psf_e1, psf_e2")
        calibrated, psf_ok = calibrate_batch(predictor, batch, psf, np.arange(len(batch)) if ids is None else ids,
                                             symmetrize=symmetrize)
        predictions[list(calibrated.columns)] = calibrated.to_numpy()
        status = np.where(np.asarray(batch.usable) & ~psf_ok, NO_PSF, status)
    return predictions.assign(bands_used=batch.bands_used(), status=status)


def assemble_partition(
    rows: pd.DataFrame, tile: str, predictions: pd.DataFrame, model_id: str, run_id: str
) -> pd.DataFrame:
    """The output rows of one partition, in the column order and types of the output schema."""
    if len(rows) != len(predictions):
        raise ValueError(f"partition of {len(rows)} galaxies got {len(predictions)} predictions")
    columns: dict[str, Any] = {name: rows[name].to_numpy() for name in CATALOG_COLUMNS}
    columns.update({name: predictions[name].to_numpy() for name in CUTOUT_COLUMNS})
    columns.update({name: predictions[name].to_numpy(dtype=np.float64) for name in PREDICTION_COLUMNS})
    columns.update(tile=tile, model=model_id, run_id=run_id)
    return pd.DataFrame({name: columns[name] for name in OUTPUT_NAMES})


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` with the output schema under a temporary name beside ``path``, fsync, then rename."""
    table = pa.Table.from_pandas(frame, schema=arrow_schema(), preserve_index=False)
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
    info = {"partition_id": partition_id, "tile": tile, "n_rows": len(frame), "counts": counts,
            "id_checksum": id_checksum(frame["coadd_objects_id"].to_numpy())}
    plan.mark_done(partition_id, info)
    return info


def process_partition(
    source: Any,
    rows: pd.DataFrame,
    choice: Any,
    size_pix: int,
    measure_recon: bool,
    out_dir: str | Path,
    partition_id: str,
    tile: str,
    model_id: str,
    run_id: str,
    predictor: Any = None,
    metacal: bool = False,
    symmetrize: bool = True,
    margin_arcsec: float = 0.0,
) -> dict[str, Any]:
    """Fetch, predict (and metacalibrate, with ``metacal``) and write one partition in one task (CPU workers):
    the stamps stay in this process.

    ``rows``: a DataFrame, or ``StagedRows`` read here. ``choice``: the planner's tile choice for these rows, or
    None (the source chooses in ``fetch``, as for staged rows). ``margin_arcsec``: ``fetch_partition``'s. Returns
    ``write_partition``'s info plus the seconds of each stage (``fetch_s``, ``predict_s``, ``write_s``).
    """
    t0 = time.perf_counter()
    rows = partition_rows(rows)
    batch = fetch_partition(source, rows, size_pix, choice, margin_arcsec)
    t1 = time.perf_counter()
    predictions = predict_partition(batch, measure_recon, rows, metacal, symmetrize, predictor=predictor)
    t2 = time.perf_counter()
    info = write_partition(out_dir, partition_id, rows, tile, predictions, model_id, run_id)
    t3 = time.perf_counter()
    return {**info, "fetch_s": t1 - t0, "predict_s": t2 - t1, "write_s": t3 - t2}

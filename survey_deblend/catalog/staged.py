"""The ID-match selection in chunks on the workers, through files: no process ever holds a whole catalog.

``select.select_galaxies`` gathers the selected shear rows in one process to match them with the gold catalog.
At survey scale (DES Y6: 100 M gold objects) that process is the client, so here the same selection is split into
three kinds of task, each reading and writing its own files (``pipeline.staging`` submits them):

1. ``stage_shear_chunk``: one row range of the shear catalog, cut (per-cut counts come back), the passing rows in
   the selection's dtypes sorted by ID into a file, plus a sample of their IDs;
2. ``stage_position_chunk``: one row range of the gold (or wlinfo) catalog, positions checked, ID, row number,
   RA/DEC (and the gold quality columns) sorted by ID into a file;
3. ``join_bucket``: one range of IDs (bounds chosen on the client from the chunks' ID spans, ``lo``/``hi``, or
   from the samples, ``pipeline.stream``): the slice of that range of every shear and gold file that can hold
   those IDs (binary search on memory-mapped files), the repeated-ID check, the join
   (first gold occurrence wins, repeats counted), the gold quality cut. Every copy of an ID lies in one range,
   so the counts summed over ranges are those of ``select_galaxies`` on the whole catalog, and so are the rows.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from survey_deblend.catalog.cuts import GOLD_QUALITY_COLUMNS, POSITION_COLUMNS, SHEAR_COLUMNS, Cut, apply_cuts
from survey_deblend.catalog.match import ID, check_positions
from survey_deblend.catalog.readers import CatalogReader
from survey_deblend.catalog.select import _FROM_SHEAR
from survey_deblend.errors import InputError
from survey_deblend.schema import SELECTION_DTYPES

ROW = "row"  # the row number in the catalog file, kept to find the first repeated ID and the first gold copy
SHEAR_DTYPE = np.dtype([(name, SELECTION_DTYPES[name]) for name in _FROM_SHEAR] + [(ROW, "i8")])
SELECTION_DTYPE = np.dtype(list(SELECTION_DTYPES.items()))
N_SAMPLES = 256  # IDs sampled per shear chunk, to place the ID ranges of the join


def save_atomic(path: Path, array: np.ndarray) -> Path:
    """``np.save`` under a temporary name beside ``path``, then rename: a killed task leaves no half file."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | Path) -> np.ndarray:
    """A staged array, memory-mapped (an empty one is read: there is nothing to map)."""
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:  # numpy cannot map zero bytes
        return np.load(path)


def id_slice(array: np.ndarray, lo: int | None, hi: int | None) -> np.ndarray:
    """The rows of an ID-sorted array with ``lo <= ID < hi`` (None: unbounded), copied out of the map."""
    ids = array[ID.lower()] if ID.lower() in (array.dtype.names or ()) else array[ID]
    start = 0 if lo is None else int(np.searchsorted(ids, lo, side="left"))
    stop = len(ids) if hi is None else int(np.searchsorted(ids, hi, side="left"))
    return np.array(array[start:stop])


def stage_shear_chunk(reader: CatalogReader, start: int, stop: int, cuts: list[Cut], path: Path) -> dict:
    """Cut rows ``[start, stop)`` of the shear catalog, write the passing ones (ID-sorted) to ``path``.

    Returns ``counts`` (rows in, then left after each cut), ``n``, ``samples`` (IDs spread over the sorted rows)
    and the ``id_span`` of the passing rows.
    """
    chunk = reader.read(SHEAR_COLUMNS, start, stop)
    kept, counts = apply_cuts(chunk, cuts)
    rows = np.empty(len(kept), dtype=SHEAR_DTYPE)
    for name, column in _FROM_SHEAR.items():
        rows[name] = kept[column].to_numpy().astype(SELECTION_DTYPES[name], copy=False)
    rows[ROW] = kept.index.to_numpy(np.int64)
    rows = rows[np.argsort(rows["coadd_objects_id"], kind="stable")]
    save_atomic(path, rows)
    picks = np.unique(np.linspace(0, len(rows) - 1, min(len(rows), N_SAMPLES)).astype(np.int64))
    return {"counts": [int(c) for c in counts], "n": len(rows),
            "samples": rows["coadd_objects_id"][picks].tolist(), **id_span(rows["coadd_objects_id"])}


def id_span(ids: np.ndarray) -> dict:
    """``lo`` and ``hi``, the smallest and largest ID of a chunk (None when it is empty): what the client needs to
    know which chunks an ID range can draw rows from (``pipeline.stream``)."""
    if len(ids) == 0:
        return {"lo": None, "hi": None}
    return {"lo": int(np.min(ids)), "hi": int(np.max(ids))}


def position_dtype(quality: bool, reader: CatalogReader) -> np.dtype:
    fields = [(ID, "i8"), (ROW, "i8"), ("RA", "f8"), ("DEC", "f8")]
    if quality:
        fields += [(name, reader.columns[name]) for name in GOLD_QUALITY_COLUMNS]
    return np.dtype(fields)


def stage_position_chunk(reader: CatalogReader, start: int, stop: int, quality: bool, path: Path) -> dict:
    """Rows ``[start, stop)`` of the position catalog, checked, ID-sorted into ``path``.

    A bad position comes back as ``error`` (one line), not raised, so that the caller can report the shear
    catalog's own problems first, in the order ``select_galaxies`` does.
    """
    names = POSITION_COLUMNS + (GOLD_QUALITY_COLUMNS if quality else [])
    chunk = reader.read(names, start, stop)
    span = id_span(chunk[ID].to_numpy())
    try:
        check_positions(chunk, reader.path)
    except InputError as exc:
        return {"n": 0, "error": str(exc), **span}
    rows = np.empty(len(chunk), dtype=position_dtype(quality, reader))
    for name in names:
        rows[name] = chunk[name].to_numpy()
    rows[ROW] = chunk.index.to_numpy(np.int64)
    save_atomic(path, rows[np.argsort(rows[ID], kind="stable")])
    return {"n": len(rows), **span}


def _sorted_concat(parts: list[np.ndarray], id_name: str) -> np.ndarray:
    """Slices of ID-sorted files, in file (hence row) order, merged into (ID, row) order: a stable sort by ID of
    sorted runs (timsort merges runs)."""
    filled = [p for p in parts if len(p)]
    if len(filled) <= 1:
        return filled[0] if filled else parts[0][:0] if parts else np.empty(0)
    rows = np.concatenate(filled)
    return rows[np.argsort(rows[id_name], kind="stable")]


def join_bucket(
    shear_files: list[str], position_files: list[str], lo: int | None, hi: int | None, quality_cut: Cut | None
) -> tuple[np.ndarray, dict]:
    """The selected rows with IDs in ``[lo, hi)`` joined to their first gold copy (columns ``SELECTION_DTYPES``,
    ID order), and the counts of this range: ``n_selected``, ``found``, ``gold_duplicate_ids``, ``quality``
    (rows left after the gold quality cut, or None), and ``repeated`` / ``first_repeated`` ((row, id) of the
    first repeated shear row in file order; when there is one the rows are empty)."""
    shear = _sorted_concat([id_slice(load(f), lo, hi) for f in shear_files], "coadd_objects_id")
    stats: dict = {"n_selected": len(shear), "found": 0, "gold_duplicate_ids": 0, "quality": None, "repeated": 0}
    empty = np.empty(0, dtype=SELECTION_DTYPE)
    if len(shear) == 0:
        return empty, stats
    ids = shear["coadd_objects_id"]
    same = ids[1:] == ids[:-1]
    if same.any():
        repeated = np.zeros(len(ids), dtype=bool)
        repeated[1:] |= same
        repeated[:-1] |= same
        first = int(np.argmin(np.where(repeated, shear[ROW], np.iinfo(np.int64).max)))
        stats.update(repeated=int(repeated.sum()), first_repeated=(int(shear[ROW][first]), int(ids[first])))
        return empty, stats
    gold = _sorted_concat([id_slice(load(f), lo, hi) for f in position_files], ID)
    if len(gold):
        where = np.minimum(np.searchsorted(ids, gold[ID]), len(ids) - 1)
        gold = gold[ids[where] == gold[ID]]  # the gold rows of selected IDs, (ID, row) order
    if len(gold) == 0:
        stats["quality"] = None if quality_cut is None else 0
        return empty, stats
    first_copy = np.flatnonzero(np.concatenate([[True], gold[ID][1:] != gold[ID][:-1]]))
    unique_ids = gold[ID][first_copy]
    stats["gold_duplicate_ids"] = len(gold) - len(unique_ids)
    at = np.searchsorted(unique_ids, ids)
    found = at < len(unique_ids)
    found[found] = unique_ids[at[found]] == ids[found]
    stats["found"] = int(found.sum())
    shear_rows = np.flatnonzero(found)
    gold_rows = first_copy[at[shear_rows]]
    if quality_cut is not None:
        matched = pd.DataFrame({name: gold[name][gold_rows] for name in GOLD_QUALITY_COLUMNS})
        keep = np.asarray(quality_cut.test(matched), dtype=bool)
        shear_rows, gold_rows = shear_rows[keep], gold_rows[keep]
        stats["quality"] = len(shear_rows)
    out = np.empty(len(shear_rows), dtype=SELECTION_DTYPE)
    for name in SELECTION_DTYPES:
        source, rows = (gold[name.upper()], gold_rows) if name in ("ra", "dec") else (shear[name], shear_rows)
        out[name] = source[rows]
    return out, stats

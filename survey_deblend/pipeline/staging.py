"""The selection staged by the workers, and partitions planned from its counts: a client that stays small.

For a large shear catalog ``run`` does not call ``select_galaxies`` (which gathers the selection in one process)
but stages it (``pipeline.stream``): the catalog stage's chunk tasks (``catalog.staged``) cut the shear catalog and
index the gold catalog into files under ``out/_staging/``, then one join task per range of IDs (``join_task``)
writes its selected rows, with their locality keys, to a rows file sorted by (key, ID), and the prefix sums of
their id hashes to a hash file. The client keeps counts only: rows per (ID range, key). This module holds what
both layouts share: the rows of a partition as slices of those files (``StagedRows``; the partition task reads
them itself), a partition's id checksum from two prefix sums per slice, and the summary (``StagedSelection``):

- ``per_range`` (catalogs sorted by ID, streamed): the groups of ranges are planned in turn as they are joined
  (``KeyPlanner``: a key once it has ``partition_rows`` rows pending), names ``<key>-r<group>-<n>``;
- per key (catalogs that are not): the ranges follow ID order, so a key's rows in ID order are its rows of range
  0, then of range 1, ...: the partitions of ``plan.plan_partitions`` (a key's rows in ID order, split in
  near-equal chunks, the client path's) are slices of those files, planned once every range is joined.

``summary.json`` records the counts, the layout and the cut flow under the configuration hash, so a re-run of the
same configuration plans from it without staging again.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from survey_deblend.catalog.cutflow import CutFlow
from survey_deblend.catalog.staged import (
    SELECTION_DTYPE,
    join_bucket,
    load,
    save_atomic,
)
from survey_deblend.pipeline.plan import (
    check_unique_partition_ids,
    chunk_sizes,
    format_checksum,
    id_hashes,
    partition_id,
)
from survey_deblend.schema import SELECTION_DTYPES

SUMMARY_NAME = "summary.json"
MIN_TASK_ROWS = 100_000  # a staging task never gets fewer rows than this just to spread the work
MIN_TASKS = 8  # chunks a catalog is cut into at least (as long as MIN_TASK_ROWS allows)
FIRST_PARTITIONS = 8  # a streamed staging plans at least this many partitions from its first range


@dataclass(frozen=True)
class StagedRows:
    """Rows of a partition as ``(file, start, stop)`` slices of staged row files; the task that needs them reads
    them (``read``), so they never travel from the client."""

    slices: tuple[tuple[str, int, int], ...]

    def __len__(self) -> int:
        return sum(stop - start for _, start, stop in self.slices)

    def read(self) -> pd.DataFrame:
        """The rows as the selection table's columns (``SELECTION_DTYPES``), in order."""
        parts = [np.asarray(load(path)[start:stop]) for path, start, stop in self.slices]
        rows = np.concatenate(parts) if parts else np.empty(0, dtype=SELECTION_DTYPE)
        return pd.DataFrame({name: rows[name] for name in SELECTION_DTYPES})


@dataclass(frozen=True)
class StagedPartition:
    """A partition of a staged selection: what ``plan.Partition`` is, with rows as ``StagedRows``."""

    partition_id: str
    tile: str
    rows: StagedRows
    ids_checksum: str

    @property
    def n_rows(self) -> int:
        return len(self.rows)


@dataclass
class StagedSelection:
    """The summary of a staged selection: the cut flow and, per ID range, its files and rows per key."""

    folder: Path
    cut_flow: CutFlow
    buckets: list[dict[str, Any]]  # {"rows": file, "hashes": file, "keys": [...], "counts": [...], "group": g}
    cpu_s: float = 0.0  # CPU seconds the staging tasks took on the workers (0 when reused)
    per_range: bool = False  # a streamed staging: partitions planned group by group (``KeyPlanner``)

    @property
    def n_selected(self) -> int:
        return sum(sum(b["counts"]) for b in self.buckets)

    def partitions(self, max_rows: int) -> list[StagedPartition]:
        """Every partition of the selection, as slices of the staged files: when ``per_range``, those the stream
        planned (the groups replayed in order), else those of ``plan.plan_partitions`` on the whole selection."""
        planner = KeyPlanner(self.folder, max_rows)
        if not self.per_range:
            return planner.add(list(enumerate(self.buckets)), None, flush=True)
        groups = sorted({int(b["group"]) for b in self.buckets})
        partitions = []
        for g in groups:
            members = [(b, bucket) for b, bucket in enumerate(self.buckets) if bucket["group"] == g]
            partitions += planner.add(members, g, flush=g == groups[-1], at_least=FIRST_PARTITIONS if g == 0 else 0)
        check_unique_partition_ids(partitions)
        return partitions


class KeyPlanner:
    """Partitions from counts, as ID ranges come in: a key's rows in ID order (its rows of range 0, then of range
    1, ...: the ranges follow ID order), cut into near-equal chunks of at most ``max_rows``.

    ``add`` takes the joins (buckets) of the next group of ranges and plans every key that has at least
    ``max_rows`` rows not yet planned, or every key when ``flush`` (the last group); with ``at_least``, also the
    keys with most rows pending until that many partitions are planned (the first group: partitions start at
    once, whatever the sky order). Fed every bucket at once with ``flush`` it gives ``plan.plan_partitions``'
    partitions; fed group by group, a key whose rows are contiguous in ID (a DES tile) is planned as soon as its
    range is joined, and a key spread over the whole catalog (a random sky) still gets few, full partitions (a
    tile read by few tasks). A function of the counts only, so a re-run plans the same partitions
    (``StagedSelection.partitions`` replays it).
    """

    def __init__(self, folder: Path, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError("output.partition_rows must be at least 1")
        self.folder, self.max_rows = folder, max_rows
        self.files: dict[int, str] = {}
        self.prefixes: dict[int, np.ndarray] = {}
        self.pending: dict[str, list[tuple[int, int, int]]] = {}  # key -> (bucket, start, stop), ID order

    def add(self, buckets: list[tuple[int, dict[str, Any]]], label: int | None, flush: bool,
            at_least: int = 0) -> list[StagedPartition]:
        """The partitions planned once ``buckets`` (``(b, bucket)``, in ID order) are joined, named
        ``<key>-r<label>-<chunk>`` (``<key>-<chunk>`` when ``label`` is None)."""
        for b, bucket in buckets:
            self.files[b] = str(self.folder / bucket["rows"])
            self.prefixes[b] = load(self.folder / bucket["hashes"])
            start = 0
            for key, count in zip(bucket["keys"], bucket["counts"], strict=True):
                if count:
                    self.pending.setdefault(key, []).append((b, start, start + count))
                start += count
        totals = {key: sum(stop - start for _, start, stop in queue) for key, queue in self.pending.items()}
        ready = {key for key, total in totals.items() if flush or total >= self.max_rows}
        n_ready = sum(-(-totals[key] // self.max_rows) for key in ready)
        for key in sorted(set(totals) - ready, key=lambda k: (-totals[k], k)):  # the largest keys first
            if n_ready >= at_least:
                break
            ready.add(key)
            n_ready += -(-totals[key] // self.max_rows)
        partitions = []
        for key in sorted(ready):
            queue, total = self.pending.pop(key), totals[key]
            for i, size in enumerate(chunk_sizes(total, self.max_rows)):
                slices, need = [], int(size)
                while need:
                    b, start, stop = queue[0]
                    take = min(need, stop - start)
                    slices.append((b, start, start + take))
                    need -= take
                    queue[0] = (b, start + take, stop)
                    if start + take == stop:
                        queue.pop(0)
                partitions.append(self._partition(key, i, label, slices))
        check_unique_partition_ids(partitions)
        return partitions

    def _partition(self, key: str, i: int, label: int | None, slices: list[tuple[int, int, int]]) -> StagedPartition:
        total = sum(int(self.prefixes[b][stop]) - int(self.prefixes[b][start]) for b, start, stop in slices)
        files = tuple((self.files[b], start, stop) for b, start, stop in slices)
        return StagedPartition(partition_id(key, i, label), key, StagedRows(files), format_checksum(total))


def join_task(
    shear_files: list[str], position_files: list[str], lo: int | None, hi: int | None, quality_cut: Any,
    source: Any, rows_path: str, hashes_path: str,
) -> dict:
    """``catalog.staged.join_bucket`` of one ID range, then the locality keys, the rows sorted by (key, ID) into
    ``rows_path`` and the prefix sums of their id hashes into ``hashes_path``; returns the counts."""
    rows, stats = join_bucket(shear_files, position_files, lo, hi, quality_cut)
    if stats["repeated"]:
        return stats
    keys = np.asarray(source.locality_keys(rows["ra"], rows["dec"]), dtype=str) if len(rows) else np.empty(0, str)
    codes, names = pd.factorize(keys, sort=True)  # a hash pass; sorting the names only (as plan_partitions)
    order = np.lexsort((rows["coadd_objects_id"], codes))
    rows = rows[order]
    with np.errstate(over="ignore"):
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(id_hashes(rows["coadd_objects_id"]), dtype=np.uint64)])
    save_atomic(Path(rows_path), rows)
    save_atomic(Path(hashes_path), prefix.astype(np.uint64))
    counts = np.bincount(codes.reshape(-1), minlength=len(names))
    stats.update(keys=[str(k) for k in names], counts=[int(c) for c in counts])
    return stats


def id_bounds(results: list[dict], bucket_rows: int) -> list[int]:
    """Inner bounds of the ID ranges of the join: about ``bucket_rows`` selected rows each, placed at quantiles of
    the chunks' ID samples (each weighted by the rows it stands for). Strictly increasing."""
    total = sum(r["n"] for r in results)
    n_buckets = max(1, math.ceil(total / max(bucket_rows, 1)))
    if n_buckets == 1:
        return []
    samples = np.concatenate([np.asarray(r["samples"], dtype=np.int64) for r in results if r["samples"]])
    weights = np.concatenate([np.full(len(r["samples"]), r["n"] / len(r["samples"])) for r in results if r["samples"]])
    order = np.argsort(samples, kind="stable")
    cumulative = np.cumsum(weights[order])
    at = np.searchsorted(cumulative, total * np.arange(1, n_buckets) / n_buckets)
    return [int(v) for v in np.unique(samples[order][np.minimum(at, len(order) - 1)])]


def timed(fn: Any, *args: Any) -> dict:
    """``fn(*args)`` (a dict) plus ``cpu_s``, the CPU seconds of the worker thread that ran it (what the staging
    costs, whatever else shares the machine)."""
    t0 = time.thread_time()
    result = fn(*args)
    return {**result, "cpu_s": time.thread_time() - t0}


def task_rows(chunk_rows: int, n_rows: int) -> int:
    """Rows per staging task: ``catalog.chunk_rows``, or fewer so that a catalog makes at least ``MIN_TASKS``
    tasks, though not fewer than ``MIN_TASK_ROWS``. A function of the catalog and the configuration only (not of
    the cluster): the ID ranges of a streamed staging, hence its partitions, follow the chunks, and a re-run on
    another cluster must find the same partitions. The staged rows do not depend on it."""
    return min(chunk_rows, max(MIN_TASK_ROWS, -(-n_rows // MIN_TASKS)))


def load_summary(folder: Path, digest: str) -> StagedSelection | None:
    """The staging of the configuration hash ``digest`` in ``folder``, if it is complete; else None."""
    try:
        data = json.loads((folder / SUMMARY_NAME).read_text())
    except (OSError, ValueError):
        return None
    if data.get("config_hash") != digest:
        return None
    buckets = data["buckets"]
    if not all((folder / b["rows"]).is_file() and (folder / b["hashes"]).is_file() for b in buckets):
        return None
    return StagedSelection(folder, CutFlow.from_dict(data["cut_flow"]), buckets, per_range=bool(data.get("per_range")))

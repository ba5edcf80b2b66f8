"""The selection staged by the workers, and partitions planned from its counts: a client that stays small.

For a large shear catalog ``run`` does not call ``select_galaxies`` (which gathers the selection in one process)
but ``stage_selection``: the catalog stage's chunk tasks (``catalog.staged``) cut the shear catalog and index the
gold catalog into files under ``out/_staging/``, then one join task per range of IDs writes its selected rows,
with their locality keys, to ``rows-<b>.npy`` sorted by (key, ID), and the prefix sums of their id hashes to
``hash-<b>.npy``. The client keeps counts only: rows per (ID range, key). Since the ranges follow ID order, a
key's rows in ID order are its rows of range 0, then of range 1, ...: the partitions of ``plan.plan_partitions``
(a key's rows in ID order, split in near-equal chunks) are computed from the counts as slices of those files,
and each partition's id checksum from two prefix sums per slice. A partition task reads its slices itself
(``StagedRows.read``). ``summary.json`` records the counts and the cut flow under the configuration hash, so a
re-run of the same configuration plans from it without staging again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from survey_deblend.catalog.cutflow import CutFlow, EmptySelectionError
from survey_deblend.catalog.cuts import gold_quality_cut, shear_cuts
from survey_deblend.catalog.match import repeated_ids_error
from survey_deblend.catalog.staged import (
    SELECTION_DTYPE,
    join_bucket,
    load,
    save_atomic,
    stage_position_chunk,
    stage_shear_chunk,
)
from survey_deblend.config.catalog import CatalogConfig
from survey_deblend.errors import InputError
from survey_deblend.pipeline.plan import (
    STAGING_DIR,
    check_unique_partition_ids,
    chunk_sizes,
    format_checksum,
    id_hashes,
    partition_id,
    write_json_atomic,
)
from survey_deblend.schema import SELECTION_DTYPES

SUMMARY_NAME = "summary.json"
MIN_TASK_ROWS = 100_000  # a staging task never gets fewer rows than this just to keep threads busy


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
    buckets: list[dict[str, Any]]  # {"rows": file name, "hashes": file name, "keys": [...], "counts": [...]}
    cpu_s: float = 0.0  # CPU seconds the staging tasks took on the workers (0 when reused)

    @property
    def n_selected(self) -> int:
        return sum(sum(b["counts"]) for b in self.buckets)

    def partitions(self, max_rows: int) -> list[StagedPartition]:
        """The partitions of ``plan.plan_partitions`` on the whole selection, as slices of the staged files."""
        if max_rows < 1:
            raise ValueError("output.partition_rows must be at least 1")
        pieces: dict[str, list[tuple[int, int, int]]] = {}  # key -> (bucket, start, stop) in ID order
        for b, bucket in enumerate(self.buckets):
            start = 0
            for key, count in zip(bucket["keys"], bucket["counts"], strict=True):
                pieces.setdefault(key, []).append((b, start, start + count))
                start += count
        partitions = []
        prefixes = [load(self.folder / bucket["hashes"]) for bucket in self.buckets]
        for key in sorted(pieces):
            queue = list(pieces[key])
            for i, size in enumerate(chunk_sizes(sum(stop - start for _, start, stop in queue), max_rows)):
                slices, need = [], int(size)
                while need:
                    b, start, stop = queue[0]
                    take = min(need, stop - start)
                    slices.append((b, start, start + take))
                    need -= take
                    queue[0] = (b, start + take, stop)
                    if start + take == stop:
                        queue.pop(0)
                partitions.append(self._partition(key, i, slices, prefixes))
        check_unique_partition_ids(partitions)
        return partitions

    def _partition(
        self, key: str, i: int, slices: list[tuple[int, int, int]], prefixes: list[np.ndarray]
    ) -> StagedPartition:
        total = sum(int(prefixes[b][stop]) - int(prefixes[b][start]) for b, start, stop in slices)
        files = tuple((str(self.folder / self.buckets[b]["rows"]), start, stop) for b, start, stop in slices)
        return StagedPartition(partition_id(key, i), key, StagedRows(files), format_checksum(total))


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


def task_rows(chunk_rows: int, n_rows: int, threads: int) -> int:
    """Rows per staging task: ``catalog.chunk_rows``, or fewer when that would leave worker threads idle (two
    tasks per thread), though not fewer than ``MIN_TASK_ROWS``. The staged rows do not depend on it."""
    return min(chunk_rows, max(MIN_TASK_ROWS, -(-n_rows // max(2 * threads, 1))))


def _load_summary(folder: Path, digest: str) -> StagedSelection | None:
    path = folder / SUMMARY_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("config_hash") != digest:
        return None
    buckets = data["buckets"]
    if not all((folder / b["rows"]).is_file() and (folder / b["hashes"]).is_file() for b in buckets):
        return None
    return StagedSelection(folder, CutFlow.from_dict(data["cut_flow"]), buckets)


def stage_selection(client: Any, cfg: CatalogConfig, source: Any, out_dir: Path, digest: str) -> StagedSelection:
    """Select on the workers into ``out_dir/_staging`` (or reuse the staging of the same configuration hash).

    ``source``: the cutout source (or the future of it) whose ``locality_keys`` the join tasks call. The same
    errors as ``select_galaxies``, in the same order: the shear catalog's, repeated IDs, then bad positions.
    """
    from survey_deblend.catalog.release import resolve_release_files
    from survey_deblend.catalog.select import match_step_name, new_cut_flow, open_inputs

    folder = (out_dir / STAGING_DIR).resolve()
    reused = _load_summary(folder, digest)
    if reused is not None:
        return reused
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    cfg = resolve_release_files(cfg)
    shear, positions, _ = open_inputs(cfg)
    # absolute paths: workers may start in another folder
    shear, positions = (dataclasses.replace(r, path=r.path.resolve()) for r in (shear, positions))
    flow = new_cut_flow(cfg, shear, positions, None)
    token = f"{digest}-{uuid.uuid4().hex[:8]}"  # task keys of this staging only (an old failed one may linger)
    cuts, quality = shear_cuts(cfg.cuts), cfg.cuts.gold_quality
    threads = sum(client.nthreads().values())
    shear_ranges = shear.chunk_ranges(task_rows(cfg.chunk_rows, shear.n_rows, threads))
    position_ranges = positions.chunk_ranges(task_rows(cfg.chunk_rows, positions.n_rows, threads))
    shear_files = [str(folder / f"shear-{k}.npy") for k in range(len(shear_ranges))]
    position_files = [str(folder / f"positions-{j}.npy") for j in range(len(position_ranges))]
    shear_futures = [
        client.submit(timed, stage_shear_chunk, shear, start, stop, cuts, Path(path), key=f"stage-shear-{token}-{k}",
                      retries=1, pure=False)
        for k, ((start, stop), path) in enumerate(zip(shear_ranges, shear_files, strict=True))
    ]
    position_futures = [
        client.submit(timed, stage_position_chunk, positions, start, stop, quality, Path(path),
                      key=f"stage-positions-{token}-{j}", retries=1, pure=False)
        for j, ((start, stop), path) in enumerate(zip(position_ranges, position_files, strict=True))
    ]
    shear_results = client.gather(shear_futures)
    counts = np.sum([r["counts"] for r in shear_results], axis=0)
    flow.add("rows in", counts[0])
    for cut, count in zip(cuts, counts[1:], strict=True):
        flow.add(cut.name, count)
    if counts[-1] == 0:
        client.cancel(position_futures)
        raise EmptySelectionError(f"{shear.path}: every row was cut before the position match", flow)
    position_results = client.gather(position_futures)
    bounds = id_bounds(shear_results, task_rows(cfg.chunk_rows, int(counts[-1]), threads))
    ranges = list(zip([None, *bounds], [*bounds, None], strict=True))
    staged_positions = [p for p, r in zip(position_files, position_results, strict=True) if "error" not in r]
    quality_cut = gold_quality_cut(cfg.cuts) if quality else None
    buckets = [{"rows": f"rows-{b}.npy", "hashes": f"hash-{b}.npy"} for b in range(len(ranges))]
    join_futures = [
        client.submit(timed, join_task, shear_files, staged_positions, lo, hi, quality_cut, source,
                      str(folder / bucket["rows"]), str(folder / bucket["hashes"]), key=f"stage-join-{token}-{b}",
                      retries=1, pure=False)
        for b, ((lo, hi), bucket) in enumerate(zip(ranges, buckets, strict=True))
    ]
    joined = client.gather(join_futures)
    repeated = [r for r in joined if r["repeated"]]
    if repeated:
        first = min(r["first_repeated"] for r in repeated)
        raise repeated_ids_error(shear.path, sum(r["repeated"] for r in repeated), first[1])
    errors = [r["error"] for r in position_results if "error" in r]
    if errors:
        raise InputError(errors[0])
    found = sum(r["found"] for r in joined)
    flow.gold_duplicate_ids = sum(r["gold_duplicate_ids"] for r in joined)
    flow.unmatched = int(counts[-1]) - found
    flow.add(match_step_name(cfg, positions), found)
    if quality_cut is not None:
        flow.add(quality_cut.name, sum(r["quality"] for r in joined))
    if flow.rows_out == 0:
        raise EmptySelectionError(
            f"{shear.path}: every row was cut (none left after the {cfg.match} match in {positions.path})", flow
        )
    for bucket, result in zip(buckets, joined, strict=True):
        bucket.update(keys=result["keys"], counts=result["counts"])
    for path in shear_files + position_files:  # the join's inputs: the rows files hold all that is needed now
        Path(path).unlink(missing_ok=True)
    write_json_atomic(folder / SUMMARY_NAME, {"config_hash": digest, "cut_flow": flow.to_dict(), "buckets": buckets})
    cpu_s = sum(r["cpu_s"] for r in shear_results + position_results + joined)
    return StagedSelection(folder, flow, buckets, cpu_s)


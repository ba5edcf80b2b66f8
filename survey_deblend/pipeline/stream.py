"""Staging as a stream: ID ranges are joined, and their partitions planned, while the catalog is still being staged.

The join of a range of IDs needs every copy of those IDs, in the shear catalog and in the gold catalog. In a
catalog sorted by ID (the DES files are row-matched in ID order; the synthetic ones are sorted) a chunk's IDs all
come after those of the chunks before it, so once shear chunks 0..k are staged every ID up to the largest of them
is in hand, and that range can be joined (once the gold chunks staged so far reach as far) while later chunks are
still being read: one join per shear chunk, each launched as soon as it can be, ahead of the staging still queued
(Dask priorities). The ranges come in groups of 1, 2, 4, 8, ... chunks (``range_groups``); once a group is joined
``staging.KeyPlanner`` plans what it can (keys with ``partition_rows`` rows pending; at least a few partitions from
the first group; everything at the last), so the first partition no longer waits for the whole catalog, and a key
spread over the whole sky is not cut into a partition per range.

Nothing about a chunk is known before it is read, so the order is an assumption checked as each chunk comes in
(``_Chunks.add``: its smallest ID must not be below the largest ID of the chunks before it in the file). Chunking
depends on the catalog and the configuration only (``staging.task_rows``), so a re-run finds the same ranges and
partitions. If a chunk breaks the order the stream falls back to the barrier: the parts written so far are
removed (``take_restart``), and once every chunk is staged the ranges are placed at quantiles of the ID samples and
the partitions are those of the whole catalog (``plan.plan_partitions``' layout), as for any catalog that is not
sorted. Whether a run streams is thus a property of the input, not of timing, so resumes and re-runs plan the
same partitions.

Errors are those of ``select_galaxies``, in the same order (the shear catalog's, repeated IDs, bad gold
positions, an empty selection), raised once every chunk and join is done (a repeated ID needs every range for the
message's count); from the first one seen no further partition is planned, and the ones in flight finish.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from survey_deblend.catalog.cutflow import EmptySelectionError
from survey_deblend.catalog.cuts import gold_quality_cut, shear_cuts
from survey_deblend.catalog.match import repeated_ids_error
from survey_deblend.catalog.staged import stage_position_chunk, stage_shear_chunk
from survey_deblend.config.catalog import CatalogConfig
from survey_deblend.errors import InputError
from survey_deblend.pipeline.plan import STAGING_DIR, write_json_atomic
from survey_deblend.pipeline.staging import (
    FIRST_PARTITIONS,
    SUMMARY_NAME,
    KeyPlanner,
    StagedPartition,
    StagedSelection,
    id_bounds,
    join_task,
    load_summary,
    task_rows,
    timed,
)

JOIN_PRIORITY = 2  # Dask priorities: a join before the partitions it unlocks, those before more staging
PARTITION_PRIORITY = 1


def range_groups(n_chunks: int) -> list[tuple[int, int]]:
    """The shear chunks ``[first, stop)`` of each group of ID ranges of a streamed staging: 1, 2, 4, 8, ...
    chunks, so that the first partitions come after one chunk and a key is cut at few group boundaries."""
    groups, start, size = [], 0, 1
    while start < n_chunks:
        groups.append((start, min(start + size, n_chunks)))
        start, size = start + size, 2 * size
    return groups


@dataclass
class _Chunks:
    """One catalog's chunk tasks: their results by index, and the prefix of chunks known to be in ID order."""

    files: list[str]
    results: list[dict | None] = field(default_factory=list)
    prefix: int = 0  # chunks 0..prefix-1 are staged and in ID order
    tops: list[int | None] = field(default_factory=list)  # the largest ID of chunks 0..k (None: all empty)
    blocked: bool = False  # a chunk of the prefix failed (bad positions): it stops the prefix

    def __post_init__(self) -> None:
        self.results = [None] * len(self.files)

    @property
    def complete(self) -> bool:
        return all(r is not None for r in self.results)

    @property
    def top(self) -> int | None:
        return self.tops[-1] if self.tops else None

    def add(self, k: int, result: dict) -> bool:
        """Record chunk ``k`` and extend the prefix; False when a chunk breaks the ID order."""
        self.results[k] = result
        while not self.blocked and self.prefix < len(self.results) and self.results[self.prefix] is not None:
            chunk = self.results[self.prefix]
            if "error" in chunk:
                self.blocked = True
                break
            if chunk["lo"] is not None and self.top is not None and chunk["lo"] < self.top:
                return False
            top = self.top if chunk["hi"] is None or (self.top is not None and self.top > chunk["hi"]) else chunk["hi"]
            self.tops.append(top)
            self.prefix += 1
        return True

    def overlapping(self, lo: int | None, hi: int | None, upto: int) -> list[str]:
        """Files of staged chunks ``0..upto-1`` that can hold IDs in ``[lo, hi)``, in file order."""
        return [
            path for path, r in zip(self.files[:upto], self.results[:upto], strict=True)
            if r is not None and "error" not in r and r["lo"] is not None
            and (lo is None or r["hi"] >= lo) and (hi is None or r["lo"] < hi)
        ]


class StagingStream:
    """The staging of one run as a stream of events: ``start`` submits the chunk tasks, ``on_done`` takes each
    finished staging future and returns the futures it launched and the partitions it planned. ``selection`` is
    set once everything is staged; ``take_restart`` says (once) that the parts written so far must go."""

    def __init__(self, client: Any, cfg: CatalogConfig, source: Any, out_dir: Path, digest: str,
                 max_rows: int | None) -> None:
        self.client, self.source, self.digest, self.max_rows = client, source, digest, max_rows
        self.folder = (out_dir / STAGING_DIR).resolve()
        self.selection: StagedSelection | None = load_summary(self.folder, digest)
        self.plan_s = 0.0  # client seconds spent planning partitions
        self.streaming = True
        self.stopped = False  # an error is known: plan no more partitions
        self._restart = False
        self._tasks: dict[Any, tuple[str, int, bool]] = {}  # future -> (kind, index, streaming when launched)
        self._joins: list[dict] = []
        if self.selection is None:
            self._prepare(cfg)

    def _prepare(self, cfg: CatalogConfig) -> None:
        from survey_deblend.catalog.release import resolve_release_files
        from survey_deblend.catalog.select import new_cut_flow, open_inputs

        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.cfg = cfg = resolve_release_files(cfg)
        shear, positions, _ = open_inputs(cfg)
        # absolute paths: workers may start in another folder
        self.shear, self.positions = (dataclasses.replace(r, path=r.path.resolve()) for r in (shear, positions))
        self.flow = new_cut_flow(cfg, self.shear, self.positions, None)
        self.cuts, self.quality = shear_cuts(cfg.cuts), cfg.cuts.gold_quality
        self.quality_cut = gold_quality_cut(cfg.cuts) if self.quality else None
        self.token = f"{self.digest}-{uuid.uuid4().hex[:8]}"  # task keys of this staging only
        self.shear_ranges = self.shear.chunk_ranges(task_rows(cfg.chunk_rows, self.shear.n_rows))
        self.position_ranges = self.positions.chunk_ranges(task_rows(cfg.chunk_rows, self.positions.n_rows))
        self.shear_chunks = _Chunks([str(self.folder / f"shear-{k}.npy") for k in range(len(self.shear_ranges))])
        self.gold_chunks = _Chunks([str(self.folder / f"positions-{j}.npy") for j in range(len(self.position_ranges))])
        self.groups = range_groups(len(self.shear_ranges))
        self.group_of = [g for g, (first, stop) in enumerate(self.groups) for _ in range(first, stop)]
        self.next_chunk, self.launched_groups, self.planned_groups = 0, 0, 0
        self.joined_upto, self.barrier_launched = None, False
        self.planner = KeyPlanner(self.folder, self.max_rows) if self.max_rows is not None else None

    def start(self) -> tuple[list[Any], list[StagedPartition]]:
        """Submit the chunk tasks, interleaved in file order (so that the first ranges are staged first); or,
        when the staging of this configuration is reused, return all its partitions."""
        self.t0 = time.perf_counter()
        if self.selection is not None:
            return [], self._plan_all()
        order = sorted(
            [(start / max(self.shear.n_rows, 1), 0, k) for k, (start, _) in enumerate(self.shear_ranges)]
            + [(start / max(self.positions.n_rows, 1), 1, j) for j, (start, _) in enumerate(self.position_ranges)]
        )
        futures = []
        for _, kind, k in order:
            if kind == 0:
                (start, stop), path = self.shear_ranges[k], self.shear_chunks.files[k]
                future = self.client.submit(timed, stage_shear_chunk, self.shear, start, stop, self.cuts, Path(path),
                                            key=f"stage-shear-{self.token}-{k}", retries=1, pure=False)
            else:
                (start, stop), path = self.position_ranges[k], self.gold_chunks.files[k]
                future = self.client.submit(timed, stage_position_chunk, self.positions, start, stop, self.quality,
                                            Path(path), key=f"stage-positions-{self.token}-{k}", retries=1, pure=False)
            self._tasks[future] = ("shear" if kind == 0 else "gold", k, True)
            futures.append(future)
        return futures, []

    def owns(self, future: Any) -> bool:
        return future in self._tasks

    def cancel(self) -> None:
        """Cancel the staging tasks still pending (after an error)."""
        self.client.cancel(list(self._tasks))
        self._tasks.clear()

    def take_restart(self) -> bool:
        """True once after the stream fell back to the barrier: remove the parts written so far."""
        restart, self._restart = self._restart, False
        return restart

    def on_done(self, future: Any) -> tuple[list[Any], list[StagedPartition]]:
        """Take one finished staging future; raise the selection's error once everything is staged."""
        kind, k, streamed = self._tasks.pop(future)
        if kind == "join" and streamed != self.streaming:  # a join of the abandoned stream: drop what it wrote
            for name in ("rows", "hashes"):
                (self.folder / self._stale[k][name]).unlink(missing_ok=True)
            future.release()
            return self._finish_if_done()
        result = future.result()
        future.release()
        parts: list[StagedPartition] = []
        if kind == "shear":
            in_order = self.shear_chunks.add(k, result)
            if self.shear_chunks.complete and sum(r["counts"][-1] for r in self.shear_chunks.results) == 0:
                self._count_shear()
                raise EmptySelectionError(f"{self.shear.path}: every row was cut before the position match", self.flow)
        elif kind == "gold":
            in_order = self.gold_chunks.add(k, result)
            self.stopped |= "error" in result
        else:
            in_order = True
            self._joins[k]["result"] = result
            self.stopped |= bool(result["repeated"])
        if not in_order and self.streaming:
            self._to_barrier()
        futures = self._launch()
        if self.streaming:
            parts = self._plan_groups()
        more = self._finish_if_done()
        return futures + more[0], parts + more[1]

    def _to_barrier(self) -> None:
        self.streaming, self._restart = False, True
        self._stale, self._joins = self._joins, []

    def _bucket(self, b: int) -> dict:
        join = self._joins[b]
        return {"rows": join["rows"], "hashes": join["hashes"], "group": join["group"],
                "keys": join["result"]["keys"], "counts": join["result"]["counts"]}

    def _plan_groups(self) -> list[StagedPartition]:
        """The partitions of each group of ranges whose joins are all done, in group order (``KeyPlanner``)."""
        parts: list[StagedPartition] = []
        t0 = time.perf_counter()
        while self.planned_groups < self.launched_groups:
            g = self.planned_groups
            members = [b for b, join in enumerate(self._joins) if join["group"] == g]
            if any(self._joins[b]["result"] is None for b in members):
                break
            if self.planner is not None and not self.stopped:
                parts += self.planner.add([(b, self._bucket(b)) for b in members], g, g == len(self.groups) - 1,
                                          at_least=FIRST_PARTITIONS if g == 0 else 0)
            self.planned_groups += 1
        self.plan_s += time.perf_counter() - t0
        return parts

    def _plan_all(self) -> list[StagedPartition]:
        if self.max_rows is None:
            return []
        t0 = time.perf_counter()
        parts = self.selection.partitions(self.max_rows)
        self.plan_s += time.perf_counter() - t0
        return parts

    def _join(self, lo: int | None, hi: int | None, shear_files: list[str], gold_files: list[str],
              group: int | None = None) -> Any:
        b = len(self._joins)
        prefix = "range" if self.streaming else "rows"
        names = {"rows": f"{prefix}-{b}.npy", "hashes": f"{prefix}-hash-{b}.npy" if self.streaming else f"hash-{b}.npy"}
        self._joins.append({**names, "lo": lo, "hi": hi, "group": group, "result": None})
        future = self.client.submit(
            timed, join_task, shear_files, gold_files, lo, hi, self.quality_cut, self.source,
            str(self.folder / names["rows"]), str(self.folder / names["hashes"]),
            key=f"stage-join-{self.token}-{'s' if self.streaming else 'b'}{b}", retries=1, pure=False,
            priority=JOIN_PRIORITY,
        )
        self._tasks[future] = ("join", b, self.streaming)
        return future

    def _launch(self) -> list[Any]:
        """The joins that can run now: in the stream, each next range whose chunks are all staged; at the barrier,
        every range once every chunk is staged."""
        shear, gold = self.shear_chunks, self.gold_chunks
        futures = []
        if not self.streaming:
            if self.barrier_launched or not (shear.complete and gold.complete):
                return []
            self.barrier_launched = True
            selected = sum(r["counts"][-1] for r in shear.results)
            bounds = id_bounds(shear.results, task_rows(self.cfg.chunk_rows, selected))
            gold_files = gold.overlapping(None, None, len(gold.files))
            for lo, hi in zip([None, *bounds], [*bounds, None], strict=True):
                futures.append(self._join(lo, hi, shear.overlapping(lo, hi, len(shear.files)), gold_files))
            return futures
        n_chunks = len(shear.files)
        while self.next_chunk < n_chunks:  # one range per shear chunk: from the last bound to its largest ID
            c = self.next_chunk
            if c == n_chunks - 1:  # the last range: everything above, once all is staged
                if not (shear.complete and gold.complete):
                    break
                hi, shear_upto, gold_upto = None, n_chunks, len(gold.files)
            else:
                if shear.prefix <= c:
                    break
                hi = shear.tops[c]
                if hi is not None and self.joined_upto is not None and hi <= self.joined_upto:
                    hi = None  # no ID of this chunk above the last range: nothing to join
                elif hi is not None and not (gold.complete or (gold.top is not None and gold.top >= hi)):
                    break  # (all gold staged but a chunk failed: joined anyway, for the repeated-ID count)
                shear_upto, gold_upto = shear.prefix, gold.prefix
            if hi is not None or c == n_chunks - 1:
                lo = self.joined_upto
                files = shear.overlapping(lo, hi, shear_upto), gold.overlapping(lo, hi, gold_upto)
                futures.append(self._join(lo, hi, *files, group=self.group_of[c]))
                self.joined_upto = hi
            if c == self.groups[self.group_of[c]][1] - 1:
                self.launched_groups = self.group_of[c] + 1
            self.next_chunk += 1
        return futures

    def _count_shear(self) -> np.ndarray:
        counts = np.sum([r["counts"] for r in self.shear_chunks.results], axis=0)
        self.flow.add("rows in", counts[0])
        for cut, count in zip(self.cuts, counts[1:], strict=True):
            self.flow.add(cut.name, count)
        return counts

    def _finish_if_done(self) -> tuple[list[Any], list[StagedPartition]]:
        """Once every chunk and join is done: the cut flow, the errors in ``select_galaxies``' order, the summary,
        and at the barrier all the partitions."""
        from survey_deblend.catalog.select import match_step_name

        launched = self.barrier_launched if not self.streaming else self.next_chunk == len(self.shear_chunks.files)
        if self.selection is not None or self._tasks or not launched:
            return [], []
        counts = self._count_shear()
        joined = [j["result"] for j in self._joins]
        repeated = [r for r in joined if r["repeated"]]
        if repeated:
            first = min(r["first_repeated"] for r in repeated)
            raise repeated_ids_error(self.shear.path, sum(r["repeated"] for r in repeated), first[1])
        errors = [r["error"] for r in self.gold_chunks.results if "error" in r]
        if errors:
            raise InputError(errors[0])
        flow = self.flow
        found = sum(r["found"] for r in joined)
        flow.gold_duplicate_ids = sum(r["gold_duplicate_ids"] for r in joined)
        flow.unmatched = int(counts[-1]) - found
        flow.add(match_step_name(self.cfg, self.positions), found)
        if self.quality_cut is not None:
            flow.add(self.quality_cut.name, sum(r["quality"] for r in joined))
        if flow.rows_out == 0:
            raise EmptySelectionError(
                f"{self.shear.path}: every row was cut (none left after the {self.cfg.match} match in "
                f"{self.positions.path})", flow
            )
        buckets = [self._bucket(b) for b in range(len(self._joins))]
        for path in self.shear_chunks.files + self.gold_chunks.files:  # the joins' inputs, no longer needed
            Path(path).unlink(missing_ok=True)
        write_json_atomic(self.folder / SUMMARY_NAME, {
            "config_hash": self.digest, "cut_flow": flow.to_dict(), "buckets": buckets, "per_range": self.streaming,
        })
        cpu_s = sum(r["cpu_s"] for r in self.shear_chunks.results + self.gold_chunks.results + joined)
        self.selection = StagedSelection(self.folder, flow, buckets, cpu_s, per_range=self.streaming)
        self.select_s = time.perf_counter() - self.t0
        return [], ([] if self.streaming else self._plan_all())


def stage_selection(client: Any, cfg: CatalogConfig, source: Any, out_dir: Path, digest: str) -> StagedSelection:
    """Select on the workers into ``out_dir/_staging`` (or reuse the staging of the same configuration hash) and
    wait for all of it: the stream without partitions. ``source``: the cutout source (or the future of it) whose
    ``locality_keys`` the join tasks call. The same errors as ``select_galaxies``, in the same order."""
    from distributed import as_completed

    stream = StagingStream(client, cfg, source, out_dir, digest, max_rows=None)
    futures, _ = stream.start()
    running = as_completed(futures)
    for future in running:
        try:
            more, _ = stream.on_done(future)
        except Exception:
            stream.cancel()
            raise
        running.update(more)
    assert stream.selection is not None
    return stream.selection

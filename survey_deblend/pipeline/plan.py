"""What work there is and what is already done: partitions by locality key, and the resume plan.

Partition ids depend only on the selection, the locality keys and ``partition_rows``, so a re-run of the same
configuration finds the same ids and skips the ones whose done-marker exists (hats-import's ResumePlan).
Layout of an output folder (``pandas.read_parquet(out)`` reads only the parts: pyarrow skips names starting
with ``_`` or ``.``)::

    out/part-<partition id>.parquet   one per partition, renamed into place when complete
    out/_manifest.json                configuration hash, model, cut flow, counts, timings
    out/_done/<partition id>.json     done-markers, written after the rename (row counts per status)
    out/.tmp-*.parquet                a write in progress (removed at start of a run)
    out/_staging/                     the selection staged by the workers (large catalogs, ``pipeline.staging``)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PART_PREFIX = "part-"
DONE_DIR = "_done"
STAGING_DIR = "_staging"
TMP_PREFIX = ".tmp-"
MANIFEST_NAME = "_manifest.json"

_UNSAFE = re.compile(r"[^A-Za-z0-9+\-.]")


_MIX = np.uint64(0x9E3779B97F4A7C15)


def id_hashes(ids: np.ndarray) -> np.ndarray:
    """The splitmix64 hash of each galaxy id (uint64): what ``id_checksum`` sums, and what the staging area keeps
    as prefix sums so that the checksum of any row range costs two reads (``pipeline.staging``)."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids).astype(np.int64).view(np.uint64) + _MIX
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def format_checksum(total: int) -> str:
    """A sum of id hashes (any Python int) as the checksum string: mod 2**64, 16 hex digits."""
    return f"{int(total) % 2**64:016x}"


def id_checksum(ids: np.ndarray) -> str:
    """An order-free checksum of a set of galaxy ids (sum of splitmix64 hashes mod 2**64, as hex).

    The planner records it per partition and the writer per part file: equal sums and equal row counts mean the
    part holds its partition's galaxies (a missing, duplicated or foreign id changes the sum), without reading
    any id back into the client.
    """
    with np.errstate(over="ignore"):
        return format_checksum(int(np.sum(id_hashes(ids), dtype=np.uint64)))


@dataclass(frozen=True)
class Partition:
    """One unit of work: rows of the selection (positions in ``Selection.table``) sharing a locality key, and
    the ``id_checksum`` of their galaxy ids (what the part file's done-marker must repeat)."""

    partition_id: str
    tile: str
    rows: np.ndarray  # int64 positions into the selection table
    ids_checksum: str = ""

    @property
    def n_rows(self) -> int:
        return len(self.rows)


def plan_partitions(table: pd.DataFrame, keys: np.ndarray, max_rows: int) -> list[Partition]:
    """Group rows by locality key, split each group into near-equal chunks of at most ``max_rows`` rows.

    Rows are ordered by key then ``coadd_objects_id`` (so ids are stable however the catalog was read);
    partition ids are ``<key>-<chunk>`` with unsafe filename characters replaced.
    """
    if max_rows < 1:
        raise ValueError("output.partition_rows must be at least 1")
    if len(keys) != len(table):
        raise ValueError(f"{len(keys)} locality keys for {len(table)} rows")
    # integer codes in sorted key order (a hash pass), so that the sort below compares integers, not strings
    codes, names = pd.factorize(np.asarray(keys).astype(str), sort=True)
    ids = table["coadd_objects_id"].to_numpy()
    order = np.lexsort((ids, codes))
    sorted_codes = codes[order]
    partitions: list[Partition] = []
    boundaries = np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1
    for group in np.split(order, boundaries):
        if len(group) == 0:
            continue
        key = str(names[codes[group[0]]])
        n_chunks = -(-len(group) // max_rows)
        for i, chunk in enumerate(np.array_split(group, n_chunks)):
            chunk = chunk.astype(np.int64)
            partitions.append(Partition(partition_id(key, i), key, chunk, id_checksum(ids[chunk])))
    check_unique_partition_ids(partitions)
    return partitions


def partition_id(key: str, chunk: int, id_range: int | None = None) -> str:
    """``<key>-<chunk>``, the key's unsafe filename characters replaced: the name of a part file. A partition of
    one ID range of a streamed staging (``pipeline.stream``) is ``<key>-r<range>-<chunk>``."""
    safe = _UNSAFE.sub("_", key).lstrip(".") or "nokey"
    return f"{safe}-{chunk:04d}" if id_range is None else f"{safe}-r{id_range:04d}-{chunk:04d}"


def chunk_sizes(n_rows: int, max_rows: int) -> np.ndarray:
    """Sizes of the near-equal chunks of at most ``max_rows`` a key's ``n_rows`` rows are split into, in order
    (those of ``np.array_split``: the first ``n_rows % n_chunks`` one row longer)."""
    n_chunks = -(-n_rows // max_rows)
    sizes = np.full(n_chunks, n_rows // n_chunks, dtype=np.int64)
    sizes[: n_rows % n_chunks] += 1
    return sizes


def check_unique_partition_ids(partitions: Iterable) -> None:
    ids = [p.partition_id for p in partitions]
    if len(set(ids)) != len(ids):
        raise ValueError("two locality keys map to the same partition id")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary name in the same folder, then rename: readers never see half a file."""
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


class ResumePlan:
    """The done-markers and part files of one output folder."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.done_dir = self.out_dir / DONE_DIR

    def part_path(self, partition_id: str) -> Path:
        return self.out_dir / f"{PART_PREFIX}{partition_id}.parquet"

    def marker_path(self, partition_id: str) -> Path:
        return self.done_dir / f"{partition_id}.json"

    def done(self) -> dict[str, dict]:
        """Finished partitions: id -> marker contents; a marker whose part file vanished does not count."""
        result: dict[str, dict] = {}
        if not self.done_dir.is_dir():
            return result
        for marker in sorted(self.done_dir.glob("*.json")):
            partition_id = marker.stem
            try:
                data = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            if self.part_path(partition_id).is_file():
                result[partition_id] = data
        return result

    def mark_done(self, partition_id: str, info: dict) -> None:
        """Record a finished partition (after its Parquet file is in place)."""
        self.done_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.marker_path(partition_id), info)

    def clean_tmp(self) -> int:
        """Remove leftovers of writes that were killed; returns how many."""
        leftovers = list(self.out_dir.glob(f"{TMP_PREFIX}*")) + list(self.done_dir.glob(f"{TMP_PREFIX}*"))
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def stale_parts(self, keep: Iterable[str]) -> list[Path]:
        """Part files whose partition is not in ``keep`` (should not exist for one configuration)."""
        wanted = {self.part_path(p).name for p in keep}
        return [p for p in self.out_dir.glob(f"{PART_PREFIX}*.parquet") if p.name not in wanted]

    def remove_parts(self) -> int:
        """Remove every part file and done-marker (not the manifest, not the staging area); returns how many
        parts. For a streamed staging that found its catalog not sorted after all (``pipeline.stream``)."""
        parts = list(self.out_dir.glob(f"{PART_PREFIX}*.parquet"))
        for path in parts:
            path.unlink(missing_ok=True)
        if self.done_dir.is_dir():
            shutil.rmtree(self.done_dir)
        return len(parts)

    def reset(self) -> None:
        """Remove everything a run wrote here (parts, markers, manifest, temporaries), nothing else."""
        for path in self.out_dir.glob(f"{PART_PREFIX}*.parquet"):
            path.unlink()
        if self.done_dir.is_dir():
            shutil.rmtree(self.done_dir)
        if (self.out_dir / STAGING_DIR).is_dir():
            shutil.rmtree(self.out_dir / STAGING_DIR)
        (self.out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        self.clean_tmp()

"""Simulated data sets on disk: a ``manifest.json`` and shards of one ``.npy`` file per field.

Layout (DESIGN.md, common contract 3)::

    DIR/manifest.json
    DIR/shard-00000/blend.npy  isolated.npy  clean.npy  e1.npy  e2.npy  z.npy ...
    DIR/shard-00001/...

Shards are written atomically (a temporary folder renamed into place) so a killed generation never leaves a
half-written shard, and read lazily with ``np.load(mmap_mode="r")`` so a data set larger than memory trains.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from survey_deblend.errors import InputError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def shard_name(index: int) -> str:
    """Folder name of shard ``index`` (``shard-00000``)."""
    return f"shard-{index:05d}"


@dataclass(frozen=True)
class ShardInfo:
    """Where a shard sits in the data set: ``start`` is the global index of its first sample."""

    name: str
    start: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "n": self.n}


def write_shard(out_dir: str | Path, index: int, start: int, arrays: Mapping[str, np.ndarray]) -> ShardInfo:
    """Write one shard (every array has the same first dimension) atomically; returns its ``ShardInfo``."""
    out_dir = Path(out_dir)
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"shard {index}: fields have different lengths {lengths}")
    name = shard_name(index)
    final, tmp = out_dir / name, out_dir / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for field, array in arrays.items():
        np.save(tmp / f"{field}.npy", np.ascontiguousarray(array))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return ShardInfo(name=name, start=start, n=next(iter(lengths.values())))


def field_specs(arrays: Mapping[str, np.ndarray], n_samples: int) -> dict[str, dict[str, Any]]:
    """Manifest entry per field: full shape (``n_samples`` first) and dtype string."""
    return {name: {"shape": [n_samples, *a.shape[1:]], "dtype": np.dtype(a.dtype).name} for name, a in arrays.items()}


def write_manifest(out_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (after all shards, so its presence means a complete data set)."""
    path = Path(out_dir) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"format_version": FORMAT_VERSION, **manifest}, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


class SimDataset:
    """Lazy reader of a simulated data set: ``len(ds)``, ``ds.manifest``, ``ds.fields``, ``ds.read(field, idx)``.

    Shards are memory-mapped on first use; the object pickles without its open maps (for DataLoader
    workers and Dask), which reopen lazily.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise InputError(f"{self.path}: not a simulated data set (no {MANIFEST_NAME})")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{manifest_path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        for key in ("n_samples", "fields", "shards"):
            if key not in self.manifest:
                raise InputError(f"{manifest_path}: missing key '{key}'")
        self.shards = [ShardInfo(**s) for s in self.manifest["shards"]]
        self._starts = np.array([s.start for s in self.shards], dtype=np.int64)
        if sum(s.n for s in self.shards) != self.manifest["n_samples"]:
            raise InputError(
                f"{manifest_path}: shards hold {sum(s.n for s in self.shards)} samples, "
                f"n_samples says {self.manifest['n_samples']}"
            )
        self._maps: dict[tuple[int, str], np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.manifest["n_samples"])

    def __repr__(self) -> str:
        return f"SimDataset({str(self.path)!r}, n={len(self)}, fields={list(self.fields)})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    @property
    def fields(self) -> dict[str, dict[str, Any]]:
        """Field name -> ``{"shape": [...], "dtype": ...}`` from the manifest."""
        return self.manifest["fields"]

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("bands", ()))

    def _shard_array(self, shard: int, field: str) -> np.ndarray:
        key = (shard, field)
        if key not in self._maps:
            path = self.path / self.shards[shard].name / f"{field}.npy"
            try:
                self._maps[key] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot read shard file ({exc})") from None
        return self._maps[key]

    def read(self, field: str, index: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        """Samples ``index`` (an int, a slice or an integer array, any order) of ``field`` as a numpy array."""
        if field not in self.fields:
            raise KeyError(f"{self.path}: no field '{field}' (fields: {', '.join(self.fields)})")
        n = len(self)
        if isinstance(index, (int, np.integer)):
            i = int(index) + n if index < 0 else int(index)
            if not 0 <= i < n:
                raise IndexError(f"index {index} out of range for {n} samples")
            s = int(np.searchsorted(self._starts, i, side="right") - 1)
            return np.asarray(self._shard_array(s, field)[i - self.shards[s].start])
        if isinstance(index, slice):
            idx = np.arange(n)[index]
        else:
            idx = np.asarray(index, dtype=np.int64).reshape(-1)
            idx = np.where(idx < 0, idx + n, idx)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise IndexError(f"indices out of range for {n} samples")
        spec = self.fields[field]
        out = np.empty((idx.size, *spec["shape"][1:]), dtype=spec["dtype"])
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        for s in np.unique(shard_of):
            sel = np.nonzero(shard_of == s)[0]
            local = idx[sel] - self.shards[s].start
            arr = self._shard_array(int(s), field)
            if local.size > 1 and np.all(np.diff(local) == 1):  # contiguous: one slice of the map
                out[sel] = arr[local[0] : local[-1] + 1]
            else:
                out[sel] = arr[local]
        return out


def open_dataset(path: str | Path) -> SimDataset:
    """Open the simulated data set in folder ``path`` (raises ``InputError`` naming the path if it is not one)."""
    return SimDataset(path)

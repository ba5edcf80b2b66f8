"""Tile choice shared by every cutout source: which tile serves each row and band, decided once, by the planner.

A source lists its tiles as ``TileRef`` objects (small, picklable: a name, a band, a zeropoint, where the pixels
are) that also know their footprint (``depth``). ``best_tiles`` picks, per position, the tile in which it lies
deepest; ``TileChoice`` holds that choice for N rows and B bands, is sliced per partition (``take``) and travels
to the worker with the rows, so the worker never chooses again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

NO_TILE = "no_coverage"  # locality key of positions that no tile covers


@dataclass(frozen=True)
class TileRef:
    """One tile-band image: ``ref`` names its file (the SIA ``siaRef``, or the local file name), ``tile`` the
    coadd tile (the locality key), ``zeropoint`` the AB magnitude of one pixel unit (``MAGZERO`` / ``magzero``),
    ``extn`` the FITS extension of the science image, ``url`` its SIA access URL (empty for local files)."""

    ref: str
    tile: str
    band: str
    zeropoint: float | None
    extn: int = 1
    url: str = ""


class Footprint(Protocol):
    """A tile whose footprint can say how deep positions lie inside it."""

    ref: str
    tile: str
    band: str
    zeropoint: float | None

    def depth(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Distance from each position to the nearest edge (one unit for all tiles of a source); <= 0 outside."""


def best_tiles(tiles: list[Footprint], ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position, the index into ``tiles`` where it lies deepest, and that depth; index -1 if none."""
    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    best = np.full(len(ra), -1, dtype=int)
    best_depth = np.zeros(len(ra))
    for i, tile in enumerate(tiles):
        depth = tile.depth(ra, dec)
        better = (depth > 0) & (depth > best_depth)
        best[better] = i
        best_depth[better] = depth[better]
    return best, best_depth


def reference_zeropoints(bands: tuple[str, ...], tiles: list[TileRef]) -> tuple[float, ...]:
    """One zeropoint per band: the most common one among ``tiles`` of that band (ties: the smallest).

    Stamps cut from a tile with another zeropoint are rescaled to it (``zeropoint_factor``). A band with no tile
    has no pixels (zero, masked) and carries the reference of the first band that has one, so that the frame
    holds finite numbers; NaN only when no band has a tile at all.
    """
    refs: list[float | None] = []
    for band in bands:
        counts = Counter(t.zeropoint for t in tiles if t.band == band and t.zeropoint is not None)
        refs.append(min(counts, key=lambda z: (-counts[z], z)) if counts else None)
    fallback = next((z for z in refs if z is not None), float("nan"))
    return tuple(float(fallback if z is None else z) for z in refs)


def zeropoint_factor(tile_zeropoint: float, frame_zeropoint: float) -> float:
    """Factor taking pixels at ``tile_zeropoint`` to ``frame_zeropoint``: 10**(0.4 (ZP_frame - ZP_tile))."""
    return float(10.0 ** (0.4 * (frame_zeropoint - tile_zeropoint)))


@dataclass
class TileChoice:
    """The tile serving each of N rows in each of B bands, chosen once, with what the rows need besides.

    ``tiles`` are the distinct chosen tiles; ``index`` (N, B) points into them (-1: no tile of that band covers
    the row); ``failure`` (N,) is empty, or the status of a failed tile listing (an SIA query) for the row;
    ``keys`` (N,) the locality key (the tile where the row lies deepest, ``no_coverage`` where none);
    ``zeropoints`` the frame's zeropoint per band (``reference_zeropoints`` over the whole plan, so every
    partition of a run shares one frame); ``whole_image`` the ``ref`` of the images a remote source downloads
    whole and cuts locally (dense ones), all others being cut remotely one stamp per request.
    """

    bands: tuple[str, ...]
    tiles: tuple[TileRef, ...]
    index: np.ndarray
    keys: np.ndarray
    zeropoints: tuple[float, ...]
    failure: np.ndarray = field(default=None)  # type: ignore[assignment]
    whole_image: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.index = np.asarray(self.index, dtype=np.int32).reshape(-1, len(self.bands))
        self.keys = np.asarray(self.keys, dtype=str).reshape(-1)
        if self.failure is None:
            self.failure = np.full(len(self.index), "", dtype="<U24")
        self.failure = np.asarray(self.failure, dtype=str).reshape(-1)
        if not len(self.index) == len(self.keys) == len(self.failure):
            raise ValueError(f"TileChoice: {len(self.index)} rows of tiles, {len(self.keys)} keys, "
                             f"{len(self.failure)} failures")

    def __len__(self) -> int:
        return len(self.index)

    def take(self, rows: np.ndarray) -> TileChoice:
        """The choice for ``rows`` only, keeping just the tiles they use (what a partition carries)."""
        rows = np.asarray(rows)
        index = self.index[rows]
        used = np.unique(index[index >= 0])
        remap = np.full(len(self.tiles) + 1, -1, dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        tiles = tuple(self.tiles[i] for i in used)
        return TileChoice(self.bands, tiles, remap[index], self.keys[rows], self.zeropoints, self.failure[rows],
                          frozenset(t.ref for t in tiles) & self.whole_image)

    def galaxies_per_tile(self) -> dict[str, int]:
        """How many rows each tile-band image serves, by ``ref``."""
        counts = Counter(self.tiles[i].ref for i in self.index[self.index >= 0])
        return dict(sorted(counts.items()))

    def modes(self) -> dict[str, str]:
        """How each chosen image is read: ``whole_image`` (downloaded once, cut locally) or ``cutouts``."""
        return {t.ref: "whole_image" if t.ref in self.whole_image else "cutouts" for t in self.tiles}

    def groups(self, b: int) -> list[tuple[TileRef, np.ndarray]]:
        """For band ``b``: each chosen tile with the rows it serves."""
        column = self.index[:, b]
        return [(self.tiles[i], np.flatnonzero(column == i)) for i in np.unique(column[column >= 0])]

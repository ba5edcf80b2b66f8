"""Matching selected shear rows to positions, one position-catalog chunk at a time.

ID join: each gold (or wlinfo) chunk keeps only rows whose COADD_OBJECTS_ID was selected, so the 25 M-row
gold catalog is never held; the kept rows are joined afterwards, first occurrence wins and repeats are counted.
Sky match: for the selected shear positions inside a chunk's bounding box (grown by the radius), the nearest
gold row of the chunk within the radius (a KD-tree on unit vectors, the method and library of astropy's
``SkyCoord.match_to_catalog_sky``, but with bounded queries); the nearest over all chunks wins, i.e. the answer
of ``match_to_catalog_sky`` against the whole gold catalog, cut at the radius.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from survey_deblend.errors import InputError

ID = "COADD_OBJECTS_ID"


def check_positions(chunk: pd.DataFrame, path: Path | str, ra: str = "RA", dec: str = "DEC") -> None:
    """Raise InputError naming the file when a position is NaN/inf or outside the sky (row numbers are file rows).

    |DEC| <= 90 and |RA| <= 360 degrees: a larger RA is a unit mistake (radians are within range, arcsec not).
    """
    ra_values, dec_values = chunk[ra].to_numpy(), chunk[dec].to_numpy()
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(ra_values) & np.isfinite(dec_values) & (np.abs(dec_values) <= 90.0))
        bad |= np.abs(ra_values) > 360.0
    if bad.any():
        at = int(np.argmax(bad))
        raise InputError(
            f"{path}: {int(bad.sum())} rows with NaN or out-of-range {ra}/{dec} (first at row {chunk.index[at]}); "
            f"positions must be finite degrees with |{dec}| <= 90 and |{ra}| <= 360 "
            f"(that row: {ra}={float(ra_values[at]):g}, {dec}={float(dec_values[at]):g})"
        )


def check_unique_ids(selected: pd.DataFrame, path: Path | str) -> None:
    """Raise InputError naming the shear file when a selected COADD_OBJECTS_ID repeats (one output row per galaxy)."""
    repeated = selected[ID].duplicated(keep=False).to_numpy()
    if repeated.any():
        raise repeated_ids_error(path, int(repeated.sum()), selected[ID].to_numpy()[np.argmax(repeated)])


def repeated_ids_error(path: Path | str, n_repeated: int, first: int) -> InputError:
    """The error of ``n_repeated`` selected rows sharing IDs, ``first`` the ID of the first in file order."""
    return InputError(
        f"{path}: column {ID} repeats: {n_repeated} selected rows share an ID (first {first}); "
        "each galaxy must appear once"
    )


def id_match_chunk(positions: pd.DataFrame, selected_ids_sorted: np.ndarray, path: Path | str) -> pd.DataFrame:
    """Rows of one position-catalog chunk whose ID is among the selected IDs (sorted array)."""
    check_positions(positions, path)
    if len(selected_ids_sorted) == 0 or len(positions) == 0:
        return positions.iloc[:0]
    ids = positions[ID].to_numpy()
    where = np.searchsorted(selected_ids_sorted, ids)
    np.minimum(where, len(selected_ids_sorted) - 1, out=where)
    return positions[selected_ids_sorted[where] == ids]


def join_by_id(selected: pd.DataFrame, matched: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame, int]:
    """For each selected row, the row of ``matched`` (deduplicated) with its ID, or -1.

    Returns ``(indexer, unique_matched, n_duplicates)``; the first occurrence of a repeated ID is kept.
    """
    duplicated = matched[ID].duplicated(keep="first").to_numpy()
    unique = matched[~duplicated].reset_index(drop=True)
    indexer = pd.Index(unique[ID].to_numpy()).get_indexer(selected[ID].to_numpy())
    return indexer, unique, int(duplicated.sum())


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    cos_dec = np.cos(dec)
    return np.column_stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)])


def _chord(radius_arcsec: float) -> float:
    """Chord length on the unit sphere of an angular radius; any radius beyond 180 deg (inf) covers the sphere."""
    return 2.0 * np.sin(np.radians(min(radius_arcsec, 648_000.0) / 3600.0) / 2.0)


def sky_match_chunk(
    positions: pd.DataFrame, shear_xyz: np.ndarray, radius_arcsec: float, path: Path | str
) -> pd.DataFrame:
    """Nearest rows of one position chunk closer than the radius: the chunk's columns, ``shear_row`` (row of
    the selected shear table), ``sep_arcsec`` and ``gold_row`` (row in the position file)."""
    from scipy.spatial import cKDTree

    check_positions(positions, path)
    empty = positions.iloc[:0].assign(
        shear_row=np.zeros(0, np.int64), sep_arcsec=np.zeros(0), gold_row=np.zeros(0, np.int64)
    )
    if len(positions) == 0 or len(shear_xyz) == 0:
        return empty
    gold_xyz = unit_vectors(positions["RA"].to_numpy(), positions["DEC"].to_numpy())
    chord = _chord(radius_arcsec)
    low, high = gold_xyz.min(axis=0) - chord, gold_xyz.max(axis=0) + chord
    nearby = np.flatnonzero(np.all((shear_xyz >= low) & (shear_xyz <= high), axis=1))
    if len(nearby) == 0:
        return empty
    # nearest gold row of this chunk for each nearby shear row, searched only out to the radius (bounded
    # queries are ~10x faster than astropy's unbounded match_to_catalog_sky on the same scipy tree)
    chord_found, gold_idx = cKDTree(gold_xyz).query(shear_xyz[nearby], k=1, distance_upper_bound=chord)
    close = np.isfinite(chord_found)
    sep_arcsec = np.degrees(2.0 * np.arcsin(np.minimum(chord_found[close] / 2.0, 1.0))) * 3600.0
    close_rows = np.flatnonzero(close)
    keep = sep_arcsec < radius_arcsec
    found = positions.iloc[gold_idx[close_rows[keep]]]
    return found.reset_index(drop=True).assign(
        shear_row=nearby[close_rows[keep]].astype(np.int64),
        sep_arcsec=sep_arcsec[keep],
        gold_row=found.index.to_numpy(np.int64),
    )


def best_sky_matches(candidates: pd.DataFrame, n_selected: int) -> tuple[np.ndarray, pd.DataFrame, int]:
    """The nearest candidate per shear row: ``(indexer into the returned frame or -1, frame, n_duplicates)``.

    A gold ID offered twice to the same shear row (a duplicated gold row) is counted as a duplicate; ties in
    separation go to the earlier gold row.
    """
    duplicated = candidates.duplicated([ID, "shear_row"], keep="first").to_numpy()
    candidates = candidates[~duplicated]
    best = candidates.sort_values(["shear_row", "sep_arcsec", "gold_row"]).drop_duplicates("shear_row")
    best = best.reset_index(drop=True)
    indexer = np.full(n_selected, -1, dtype=np.int64)
    indexer[best["shear_row"].to_numpy()] = np.arange(len(best))
    return indexer, best, int(duplicated.sum())

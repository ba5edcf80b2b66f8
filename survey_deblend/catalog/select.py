"""``select_galaxies``: stream the shear catalog through the cuts, then match positions, counting every step.

Two passes over Dask DataFrames built on row ranges of the files (``CatalogReader.to_dask``):
1. shear pass: each im3shape chunk is cut (and, for a sky match, joined row by row with wlinfo positions);
   only passing rows and per-cut counts come back;
2. position pass: each gold (or wlinfo) chunk keeps the rows matching the selected IDs (or lying within the
   radius of a selected position); the few kept rows are joined in memory.
Neither pass materialises a whole catalog: peak memory is a few chunks plus the selection itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from survey_deblend.catalog.cutflow import CutFlow, EmptySelectionError
from survey_deblend.catalog.cuts import (
    GOLD_QUALITY_COLUMNS,
    POSITION_COLUMNS,
    SHEAR_COLUMNS,
    apply_cuts,
    gold_quality_cut,
    shear_cuts,
)
from survey_deblend.catalog.match import (
    ID,
    best_sky_matches,
    check_positions,
    check_unique_ids,
    id_match_chunk,
    join_by_id,
    sky_match_chunk,
    unit_vectors,
)
from survey_deblend.catalog.readers import CatalogReader, open_catalog
from survey_deblend.catalog.release import resolve_release_files
from survey_deblend.catalog.schema import GOLD_COLUMNS, IM3SHAPE_COLUMNS, WLINFO_COLUMNS
from survey_deblend.config.catalog import CatalogConfig
from survey_deblend.errors import ConfigError, InputError
from survey_deblend.schema import SELECTION_DTYPES

_FROM_SHEAR = {
    "coadd_objects_id": ID,
    "snr_w": "SNR_W",
    "e1_im3shape": "E_1",
    "e2_im3shape": "E_2",
    "nbc_m": "NBC_M",
    "nbc_c1": "NBC_C1",
    "nbc_c2": "NBC_C2",
    "w": "W",
    "error_flag": "ERROR_FLAG",
    "info_flag": "INFO_FLAG",
    "psf_fwhm": "MEAN_PSF_FWHM",
    "psf_e1": "MEAN_PSF_E1",
    "psf_e2": "MEAN_PSF_E2",
}  # where each selection column (``schema.SELECTION_DTYPES``) comes from; ra and dec come from the positions


@dataclass
class Selection:
    """The selected galaxies (one row each, columns ``SELECTION_DTYPES``) and how they were selected."""

    table: pd.DataFrame
    cut_flow: CutFlow

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write the table as Parquet (atomically) and the cut flow as ``<stem>.cutflow.json`` beside it."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        self.table.to_parquet(partial, index=False)
        os.replace(partial, out)
        return out, self.cut_flow.write_json(cutflow_path(out))


def cutflow_path(out: str | Path) -> Path:
    """Where the cut flow of a selection written to ``out`` goes: ``selected.parquet`` -> ``selected.cutflow.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".cutflow.json")


def _compute(tasks: list, scheduler: str) -> list:
    if scheduler == "default":
        return list(dask.compute(*tasks))
    return list(dask.compute(*tasks, scheduler=scheduler))


def open_inputs(cfg: CatalogConfig) -> tuple[CatalogReader, CatalogReader, CatalogReader | None]:
    """Open and check the shear catalog, the position catalog and (sky match) the shear positions' source."""
    if cfg.shear is None:
        raise ConfigError("catalog.shear: no shear catalog given (--catalog)")
    shear = open_catalog(cfg.shear, "im3shape catalog")
    shear.check_columns({c: IM3SHAPE_COLUMNS[c] for c in SHEAR_COLUMNS})
    if cfg.match == "id":
        if cfg.gold is None and cfg.wlinfo is None:
            raise ConfigError("catalog.gold: an ID match needs the gold catalog (--gold) or wlinfo (--wlinfo)")
        position_path, schema, role = (
            (cfg.gold, GOLD_COLUMNS, "gold catalog") if cfg.gold else (cfg.wlinfo, WLINFO_COLUMNS, "wlinfo")
        )
        shear_positions = None
    else:
        if cfg.gold is None:
            raise ConfigError("catalog.gold: a sky match needs the gold catalog (--gold)")
        position_path, schema, role = cfg.gold, GOLD_COLUMNS, "gold catalog"
        if shear.has_columns(["RA", "DEC"]):
            shear.check_columns({"RA": "f8", "DEC": "f8"})
            shear_positions = shear
        elif cfg.wlinfo is not None:
            shear_positions = open_catalog(cfg.wlinfo, "wlinfo")
            shear_positions.check_columns({c: WLINFO_COLUMNS[c] for c in POSITION_COLUMNS})
            if shear_positions.n_rows != shear.n_rows:
                raise InputError(
                    f"{cfg.wlinfo}: {shear_positions.n_rows} rows but {shear.path} has {shear.n_rows}; "
                    "wlinfo must be row-matched to the shear catalog"
                )
        else:
            raise ConfigError(
                f"catalog.wlinfo: a sky match needs positions for {cfg.shear}, which has no RA/DEC columns; "
                "give the row-matched wlinfo file (--wlinfo)"
            )
    positions = open_catalog(position_path, role)
    wanted = POSITION_COLUMNS + (GOLD_QUALITY_COLUMNS if cfg.cuts.gold_quality else [])
    if cfg.cuts.gold_quality and position_path != cfg.gold:
        raise ConfigError("catalog.cuts.gold_quality: the gold quality cuts need the gold catalog (--gold)")
    positions.check_columns({c: schema[c] for c in wanted})
    return shear, positions, shear_positions


def _cut_shear_chunk(
    chunk: pd.DataFrame, position_chunk: pd.DataFrame | None, cuts: list, positions_path: Path | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Cut one shear chunk; with ``position_chunk`` (row-matched wlinfo) attach and check its RA/DEC first."""
    if position_chunk is not None:
        ids, other = chunk[ID].to_numpy(), position_chunk[ID].to_numpy()
        if len(ids) != len(other) or not np.array_equal(ids, other):
            first = chunk.index[np.argmax(ids != other)] if len(ids) == len(other) else chunk.index[0]
            raise InputError(f"{positions_path}: COADD_OBJECTS_ID differs from the shear catalog at row {first}")
        chunk = chunk.assign(RA=position_chunk["RA"].to_numpy(), DEC=position_chunk["DEC"].to_numpy())
    if "RA" in chunk.columns:
        check_positions(chunk, positions_path or "shear catalog")
    return apply_cuts(chunk, cuts)


def _shear_pass(cfg: CatalogConfig, shear: CatalogReader, shear_positions: CatalogReader | None):
    cuts = shear_cuts(cfg.cuts)
    names = list(SHEAR_COLUMNS)
    if shear_positions is shear:
        names += ["RA", "DEC"]
    parts = shear.to_dask(names, cfg.chunk_rows).to_delayed()
    if shear_positions is not None and shear_positions is not shear:
        # row-matched positions (wlinfo): read exactly the shear chunk's row range, whatever its own layout
        ranges = shear.chunk_ranges(cfg.chunk_rows)
        if shear_positions.chunk_ranges(cfg.chunk_rows) == ranges:
            position_parts = shear_positions.to_dask(POSITION_COLUMNS, cfg.chunk_rows).to_delayed()
        else:
            read = dask.delayed(shear_positions.read, pure=True)
            position_parts = [read(POSITION_COLUMNS, start, stop) for start, stop in ranges]
        tasks = [
            dask.delayed(_cut_shear_chunk, nout=2)(p, q, cuts, shear_positions.path)
            for p, q in zip(parts, position_parts, strict=True)
        ]
    else:
        path = shear.path if shear_positions is shear else None
        tasks = [dask.delayed(_cut_shear_chunk, nout=2)(p, None, cuts, path) for p in parts]
    results = _compute(tasks, cfg.scheduler)
    counts = np.sum([c for _, c in results], axis=0)
    frames = [frame for frame, _ in results]
    del results  # the chunk frames go as soon as the concatenation holds their rows
    selected = pd.concat(frames, ignore_index=True)
    return selected, cuts, counts


def _position_pass(cfg: CatalogConfig, positions: CatalogReader, selected: pd.DataFrame):
    names = POSITION_COLUMNS + (GOLD_QUALITY_COLUMNS if cfg.cuts.gold_quality else [])
    parts = positions.to_dask(names, cfg.chunk_rows).to_delayed()
    if cfg.match == "id":
        ids = dask.delayed(np.sort(selected[ID].to_numpy()), pure=True)
        tasks = [dask.delayed(id_match_chunk)(p, ids, positions.path) for p in parts]
        matched = pd.concat(_compute(tasks, cfg.scheduler), ignore_index=True)
        return join_by_id(selected, matched)
    shear_xyz = dask.delayed(unit_vectors(selected["RA"].to_numpy(), selected["DEC"].to_numpy()), pure=True)
    tasks = [dask.delayed(sky_match_chunk)(p, shear_xyz, cfg.match_radius_arcsec, positions.path) for p in parts]
    candidates = pd.concat(_compute(tasks, cfg.scheduler), ignore_index=True)
    return best_sky_matches(candidates, len(selected))


def new_cut_flow(
    cfg: CatalogConfig, shear: CatalogReader, positions: CatalogReader, shear_positions: CatalogReader | None
) -> CutFlow:
    """An empty cut flow noting the inputs and the match mode (``select_galaxies`` and the staged selection)."""
    return CutFlow(
        notes={
            "shear": str(shear.path),
            "positions": str(positions.path),
            "match": cfg.match,
            **({"match_radius_arcsec": cfg.match_radius_arcsec} if cfg.match == "sky" else {}),
            **({"shear_positions": str(shear_positions.path)} if shear_positions is not None else {}),
        }
    )


def match_step_name(cfg: CatalogConfig, positions: CatalogReader) -> str:
    """The cut flow's name of the position match step."""
    radius = f' (< {cfg.match_radius_arcsec:g}")' if cfg.match == "sky" else ""
    return f"{cfg.match} match in {positions.path.name}{radius}"


def select_galaxies(cfg: CatalogConfig) -> Selection:
    """Select im3shape galaxies with the configured cuts and attach gold positions; count every step.

    Raises InputError/ConfigError for unusable inputs and EmptySelectionError (carrying the cut flow) when
    every row is cut.
    """
    cfg = resolve_release_files(cfg)  # --catalog sva1_gold_r1.0_im3shape.fits.gz alone finds the gold file beside it
    shear, positions, shear_positions = open_inputs(cfg)
    flow = new_cut_flow(cfg, shear, positions, shear_positions)
    selected, cuts, counts = _shear_pass(cfg, shear, shear_positions)
    flow.add("rows in", counts[0])
    for cut, count in zip(cuts, counts[1:], strict=True):
        flow.add(cut.name, count)
    if len(selected) == 0:
        raise EmptySelectionError(f"{shear.path}: every row was cut before the position match", flow)
    check_unique_ids(selected, shear.path)
    indexer, matched, duplicates = _position_pass(cfg, positions, selected)
    found = indexer >= 0
    flow.gold_duplicate_ids = duplicates
    flow.unmatched = int((~found).sum())
    flow.add(match_step_name(cfg, positions), int(found.sum()))
    shear_rows = np.flatnonzero(found)  # rows of ``selected`` that stay, and their rows in ``matched``
    gold_rows = indexer[shear_rows]
    if cfg.cuts.gold_quality:
        cut = gold_quality_cut(cfg.cuts)
        keep = np.asarray(cut.test(matched.iloc[gold_rows]), dtype=bool)
        shear_rows, gold_rows = shear_rows[keep], gold_rows[keep]
        flow.add(cut.name, len(shear_rows))
    if len(shear_rows) == 0:
        raise EmptySelectionError(
            f"{shear.path}: every row was cut (none left after the {cfg.match} match in {positions.path})", flow
        )
    columns = {}
    for name, dtype in SELECTION_DTYPES.items():  # one gather per column, straight into the output dtype
        source, rows = (
            (matched[name.upper()], gold_rows) if name in ("ra", "dec") else (selected[_FROM_SHEAR[name]], shear_rows)
        )
        columns[name] = source.to_numpy().take(rows).astype(dtype, copy=False)
    table = pd.DataFrame(columns, copy=False)
    return Selection(table=table, cut_flow=flow)

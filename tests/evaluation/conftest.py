"""A small run folder in the DESIGN.md output schema (Parquet parts + manifest.json) and its truth file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_deblend.schema import OUTPUT_COLUMNS, OUTPUT_NAMES, USABLE
from survey_deblend.sim.field import TRUTH_COLUMNS, TRUTH_ID

N_GALAXIES = 400
SLOPE, OFFSET = 1.1, 0.01  # predictions = SLOPE * truth + OFFSET, exactly


def make_run_table(n: int = N_GALAXIES, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run rows (every status) and the truth of the field; usable rows have exactly known m and c vs the truth."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64) + 3_000_000_000
    e_true = rng.normal(0, 0.22, (n, 2)).clip(-0.7, 0.7)
    status = np.full(n, "ok", dtype=object)
    status[rng.choice(n, n * 3 // 40, replace=False)] = "padded"
    failed = rng.choice(np.flatnonzero(status == "ok"), n // 20, replace=False)
    status[failed[: len(failed) * 3 // 5]] = "error_http"
    status[failed[len(failed) * 3 // 5 :]] = "no_coverage"
    e_im3 = e_true + rng.normal(0, 0.05, (n, 2))
    pred = SLOPE * e_true + OFFSET
    pred[np.isin(status, ["error_http", "no_coverage"])] = np.nan
    table = pd.DataFrame({
        "coadd_objects_id": ids,
        "ra": rng.uniform(82.0, 83.0, n),
        "dec": rng.uniform(-50.5, -50.0, n),
        "tile": np.where(np.arange(n) % 3 == 0, "DES0530-5000", "DES0531-5001"),
        "snr_w": rng.uniform(20.0, 200.0, n),
        "e1_im3shape": e_im3[:, 0],
        "e2_im3shape": e_im3[:, 1],
        "nbc_m": np.full(n, -0.1),
        "nbc_c1": np.full(n, 0.002),
        "nbc_c2": np.full(n, -0.001),
        "w": rng.uniform(5.0, 30.0, n),
        "e1_pred": pred[:, 0],
        "e2_pred": pred[:, 1],
        "e_sigma_pred": np.full(n, 0.2, dtype=np.float32),
        "z_pred": rng.uniform(0.2, 1.2, n).astype(np.float32),
        "e1_recon": pred[:, 0] + rng.normal(0, 0.1, n),
        "e2_recon": pred[:, 1] + rng.normal(0, 0.1, n),
        "status": status.astype(str),
        "model": "sha256:abc123",
        "run_id": "run-test",
    })
    table.loc[np.isin(status, ["error_http", "no_coverage"]), ["e1_recon", "e2_recon"]] = np.nan
    table["bands_used"] = np.where(np.isin(status, list(USABLE)), "grizY", None)
    for column in OUTPUT_COLUMNS:  # the rest of the output schema, null as in a run without those heads
        if column.name not in table:
            table[column.name] = np.full(n, np.nan) if column.dtype == "float64" else None
    table = table[list(OUTPUT_NAMES)]
    truth = pd.DataFrame({  # the columns a simulated field's truth.parquet has (sim.field.TRUTH_COLUMNS)
        TRUTH_ID: ids,
        TRUTH_COLUMNS["e1_true"]: e_true[:, 0],
        TRUTH_COLUMNS["e2_true"]: e_true[:, 1],
        TRUTH_COLUMNS["z_true"]: rng.uniform(0.2, 1.2, n),
        TRUTH_COLUMNS["mag_true"]: rng.uniform(19.0, 24.0, n),
        TRUTH_COLUMNS["n_neighbours"]: rng.integers(0, 5, n),
    })
    return table, truth


def write_run_folder(out_dir: Path, table: pd.DataFrame, n_parts: int = 2, manifest_name: str = "_manifest.json",
                     ) -> Path:
    """Write ``table`` as ``n_parts`` Parquet parts plus a manifest, the way the pipeline lays a run out."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(np.array_split(np.arange(len(table)), n_parts)):
        table.iloc[part].to_parquet(out_dir / f"part-{k:05d}.parquet", index=False)
    counts = table["status"].value_counts().to_dict()
    manifest = {
        "run_id": "run-test",
        "model": "sha256:abc123",
        "config_hash": "cfg-42",
        "state": "complete",
        "cut_flow": {"steps": [{"cut": "input", "rows": 1000}, {"cut": "flags", "rows": 700},
                               {"cut": "snr_w > 20", "rows": len(table)}], "rows_in": 1000, "rows_out": len(table)},
        "counts": {k: int(v) for k, v in counts.items()},
        "parts": [f"part-{k:05d}.parquet" for k in range(n_parts)],
        "config": {"catalog": {"snr_min": 20}, "images": {"source": "tiles:/tmp/tiles"}},
    }
    (out_dir / manifest_name).write_text(json.dumps(manifest))
    return out_dir


@pytest.fixture(scope="session")
def make_run():
    """The table builder and folder writer above, for tests that build their own variants."""
    return make_run_table, write_run_folder


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory) -> tuple[Path, Path, pd.DataFrame]:
    """A run folder and a truth.parquet beside it; returns (run dir, truth path, full table)."""
    base = tmp_path_factory.mktemp("run")
    table, truth = make_run_table()
    out = write_run_folder(base / "out", table)
    truth_path = base / "truth.parquet"
    truth.to_parquet(truth_path, index=False)
    return out, truth_path, table

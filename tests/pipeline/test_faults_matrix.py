"""The fault matrix's helpers (``benchmarks/faults_matrix.py``) on the tiny field: a 503 row and a kill-and-resume
row must end with every selected galaxy exactly once, and the tally must see a duplicated or lost galaxy."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


sys.path.insert(0, str(BENCHMARKS))  # the benchmark scripts import their sibling helper modules
fm = importlib.import_module("faults_matrix")


@pytest.fixture(scope="module")
def field(small_field, tmp_path_factory) -> fm.Field:
    from survey_deblend.catalog import select_galaxies

    draft = fm.Field(small_field.tiles_dir, small_field.im3shape, small_field.gold, np.array([], dtype=np.int64))
    table = select_galaxies(fm.config(draft, None, tmp_path_factory.mktemp("unused")).catalog).table
    return fm.Field(draft.tiles_dir, draft.im3shape, draft.gold, table["coadd_objects_id"].to_numpy())


def test_tally_sees_a_duplicated_and_a_lost_galaxy(tmp_path):
    ids = np.array([11, 12, 13], dtype=np.int64)
    frame = pd.DataFrame({"coadd_objects_id": [11, 12, 12], "status": ["ok", "ok", "error_http"],
                          "e1_pred": [0.1, 0.2, np.nan], "e2_pred": [0.0, 0.0, np.nan],
                          "bands_used": ["griz", "griz", ""]})
    frame.iloc[:2].to_parquet(tmp_path / "part-a.parquet")
    frame.iloc[2:].to_parquet(tmp_path / "part-b.parquet")
    (tmp_path / ".tmp-part-c.parquet").write_bytes(b"half a file")  # a temporary is never counted
    got = fm.tally(tmp_path, ids)
    assert (got["written"], got["predicted"], got["duplicated"], got["lost"]) == (3, 2, 1, 1)


def test_503_row_keeps_every_galaxy_once(field, checkpoint, client, tmp_path):
    from survey_deblend.cutouts.server import Faults, running_server

    out = tmp_path / "out"
    with running_server(field.tiles_dir, faults=Faults(error_rate=0.25, seed=1)) as url:
        cfg = fm.config(field, checkpoint, out, f"sia:{url}", "images.retries=0", "images.backoff_s=0")
        error, _ = fm.run_in_process(cfg, client)
    got = fm.tally(out, field.selected)
    assert error is None
    assert got["duplicated"] == 0 and got["lost"] == 0 and got["written"] == len(field.selected)
    assert 0 < got["predicted"] < got["written"]  # without retries some galaxies lost their i band: rows kept
    assert sum(got["statuses"].values()) == got["written"]


def test_run_killed_after_first_part_resumes_to_every_galaxy_once(field, checkpoint, client, tmp_path):
    out = tmp_path / "out"
    code, fired = fm.run_cli(fm.cli_command(field, checkpoint, out), tmp_path / "run.log",
                             kill_when=lambda: fm.KILL_POINTS["after_first_part"](out), timeout_s=240)
    assert fired and code != 0, (tmp_path / "run.log").read_text()[-2000:]
    n_parts = int(fm.manifest(out)["n_partitions"])
    assert 1 <= len(fm.parts(out)) < n_parts
    error, _ = fm.run_in_process(fm.config(field, checkpoint, out), client)
    got = fm.tally(out, field.selected)
    assert error is None
    assert got["duplicated"] == 0 and got["lost"] == 0 and got["written"] == len(field.selected)
    assert fm.manifest(out)["attempts"] == 2

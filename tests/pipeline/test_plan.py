"""Partition plan and resume plan: stable ids, bounded sizes, every row once, markers and cleanup."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from survey_deblend.pipeline.plan import MANIFEST_NAME, ResumePlan, plan_partitions


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"coadd_objects_id": rng.permutation(np.arange(1000, 1000 + n)).astype(np.int64)})


def test_partitions_cover_every_row_once_and_respect_the_bound():
    table = _table(257)
    keys = np.array(["DES0001-5000", "DES0002-5000", "no_coverage"])[np.arange(257) % 3]
    parts = plan_partitions(table, keys, max_rows=40)
    rows = np.concatenate([p.rows for p in parts])
    assert sorted(rows.tolist()) == list(range(257))
    assert max(len(p.rows) for p in parts) <= 40
    for p in parts:
        assert set(keys[p.rows]) == {p.tile}
    # 86 rows of the first key -> 3 near-equal chunks, not 40/40/6
    first = [len(p.rows) for p in parts if p.tile == "DES0001-5000"]
    assert first == [29, 29, 28]


def test_partition_ids_do_not_depend_on_row_order():
    table = _table(100)
    keys = np.where(table["coadd_objects_id"] % 2 == 0, "DES0530+0000", "DES0530-5000")
    shuffled = np.random.default_rng(1).permutation(100)
    a = plan_partitions(table, keys, 30)
    b = plan_partitions(table.iloc[shuffled].reset_index(drop=True), keys[shuffled], 30)
    ids_a = {p.partition_id: set(table["coadd_objects_id"].to_numpy()[p.rows]) for p in a}
    table_b = table.iloc[shuffled].reset_index(drop=True)
    ids_b = {p.partition_id: set(table_b["coadd_objects_id"].to_numpy()[p.rows]) for p in b}
    assert ids_a == ids_b
    assert "DES0530+0000-0000" in ids_a  # '+' kept: tile names stay readable


def test_bad_plan_arguments():
    with pytest.raises(ValueError, match="partition_rows"):
        plan_partitions(_table(3), np.array(["a", "b", "c"]), 0)
    with pytest.raises(ValueError, match="locality keys"):
        plan_partitions(_table(3), np.array(["a"]), 10)


def test_resume_plan_markers_need_their_part_and_reset_keeps_foreign_files(tmp_path):
    plan = ResumePlan(tmp_path)
    plan.part_path("A-0000").write_bytes(b"x")
    plan.mark_done("A-0000", {"n_rows": 3})
    plan.mark_done("B-0000", {"n_rows": 4})  # marker without its part file: not done
    (tmp_path / ".tmp-abc.parquet").write_bytes(b"half")
    (tmp_path / MANIFEST_NAME).write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    assert plan.done() == {"A-0000": {"n_rows": 3}}
    assert plan.clean_tmp() == 1
    assert json.loads(plan.marker_path("A-0000").read_text()) == {"n_rows": 3}
    plan.reset()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_config_hash_ignores_settings_that_cannot_change_rows():
    from survey_deblend.config import load
    from survey_deblend.config.run import RunConfig
    from survey_deblend.pipeline.manifest import config_hash

    base = config_hash(load(RunConfig, None, []), "model-a")
    same = load(RunConfig, None, ["catalog.chunk_rows=5000", "catalog.scheduler=threads", "cluster.kind=pbs"])
    assert config_hash(same, "model-a") == base
    assert config_hash(load(RunConfig, None, ["catalog.cuts.snr_w_min=30"]), "model-a") != base
    assert config_hash(load(RunConfig, None, []), "model-b") != base

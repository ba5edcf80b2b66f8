"""The streamed staging on a real LocalCluster: with an ID-sorted catalog the first ID range is joined and its
partitions run before the catalog is staged; the rows are those of the client's selection whatever the order;
a catalog that turns out unsorted falls back to the barrier; repeated IDs still end the run with one line."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from cell_source import SkyCells
from conftest import run_config
from distributed import get_task_stream

from survey_deblend.catalog import select_galaxies
from survey_deblend.catalog.synthetic import catalog_frames, write_frames
from survey_deblend.config.catalog import CatalogConfig, CutsConfig
from survey_deblend.errors import InputError
from survey_deblend.pipeline import run
from survey_deblend.pipeline.plan import STAGING_DIR
from survey_deblend.pipeline.staging import SUMMARY_NAME
from survey_deblend.pipeline.stream import StagingStream, range_groups

N = 6000
CHUNK = 300


@pytest.fixture(scope="module")
def sorted_paths(tmp_path_factory):
    """Synthetic catalogs as the real ones are: both ordered by COADD_OBJECTS_ID (20 shear chunks of 300 rows)."""
    return write_frames(tmp_path_factory.mktemp("sorted"), catalog_frames(n=N, seed=3))


def _config(paths) -> CatalogConfig:
    return CatalogConfig(shear=paths.im3shape, gold=paths.gold, chunk_rows=CHUNK, cuts=CutsConfig(gold_quality=True))


def _ends(stream_data: list[dict], prefix: str) -> list[tuple[float, float]]:
    """(start, stop) on the workers of the tasks whose key starts with ``prefix``."""
    return [(t["startstops"][0]["start"], t["startstops"][-1]["stop"]) for t in stream_data
            if str(t["key"]).startswith(prefix)]


def test_range_groups_grow_to_a_cap():
    assert range_groups(1) == [(0, 1)]
    assert range_groups(20) == [(0, 1), (1, 3), (3, 7), (7, 15), (15, 20)]


def test_sorted_catalog_plans_partitions_before_its_staging_ends(sorted_paths, client, tmp_path):
    cfg = _config(sorted_paths)
    stream = StagingStream(client, cfg, SkyCells(), tmp_path / "out", "h", max_rows=40)
    futures, _ = stream.start()
    n_chunk_tasks = len(futures)
    # the staging futures taken in file order, each join as soon as it is launched: what the stream needs to
    # plan its first partitions does not depend on how fast the workers are
    pending, taken, first_at, planned = list(futures), 0, None, []
    while pending:
        more, parts = stream.on_done(pending.pop(0))
        pending[:0] = more
        taken += 1
        if parts and first_at is None:
            first_at = taken
        planned += parts
    assert n_chunk_tasks == 20 + 22 and first_at is not None and first_at <= 5  # 2 shear, 2 gold chunks, 1 join
    staged = stream.selection
    assert staged.per_range and len(staged.buckets) == N // CHUNK  # one join per shear chunk
    # every selected galaxy exactly once, with the client's values; the plan is the summary's
    expected = select_galaxies(cfg)
    rows = pd.concat([p.rows.read() for p in planned], ignore_index=True).sort_values("coadd_objects_id")
    pd.testing.assert_frame_equal(rows.reset_index(drop=True),
                                  expected.table.sort_values("coadd_objects_id", ignore_index=True))
    assert staged.cut_flow.to_dict() == expected.cut_flow.to_dict()
    assert [(p.partition_id, p.ids_checksum) for p in planned] == [
        (p.partition_id, p.ids_checksum) for p in staged.partitions(40)]
    assert all(p.n_rows <= 40 for p in planned) and "-r0000-0000" in planned[0].partition_id


def _run(paths, small_field, checkpoint, out, *extra):
    config = run_config(small_field, checkpoint, out, f"catalog.shear={paths.im3shape}", f"catalog.gold={paths.gold}",
                        "output.stage_min_rows=0", f"catalog.chunk_rows={CHUNK}", "output.partition_rows=200",
                        "model.metacal=false", *extra)
    return run(config, client=_run.client, stream=io.StringIO())


@pytest.fixture
def runner(client):
    _run.client = client
    return _run


def _rows(folder) -> pd.DataFrame:
    return pd.read_parquet(folder).drop(columns="run_id").sort_values("coadd_objects_id", ignore_index=True)


def test_sorted_run_streams_the_rows_of_the_client_run(sorted_paths, small_field, checkpoint, client, runner,
                                                        tmp_path):
    with get_task_stream(client) as tasks:
        summary = runner(sorted_paths, small_field, checkpoint, tmp_path / "staged")
    staged = json.loads((tmp_path / "staged" / STAGING_DIR / SUMMARY_NAME).read_text())
    assert staged["per_range"] and len(staged["buckets"]) == N // CHUNK
    # the joins jump the queue of staging tasks (their priority), the partitions come right after
    joins = sorted(_ends(tasks.data, "stage-join"))
    assert joins and min(start for start, _ in _ends(tasks.data, "partition-")) > joins[0][1]
    client_run = runner(sorted_paths, small_field, checkpoint, tmp_path / "client", f"output.stage_min_rows={10**9}")
    assert summary.cut_flow == client_run.cut_flow and summary.counts == client_run.counts
    pd.testing.assert_frame_equal(_rows(tmp_path / "staged"), _rows(tmp_path / "client"))


def test_a_late_chunk_out_of_order_falls_back_to_the_barrier(sorted_paths, small_field, checkpoint, runner,
                                                            tmp_path):
    frames = catalog_frames(n=N, seed=3)
    im3 = frames.im3shape
    order = np.r_[300:N - 600, 0:300, N - 600:N]  # the first chunk's rows moved near the end of the file
    frames.im3shape = im3.iloc[order].reset_index(drop=True)
    paths = write_frames(tmp_path / "late", frames)
    summary = runner(paths, small_field, checkpoint, tmp_path / "out")
    staged = json.loads((tmp_path / "out" / STAGING_DIR / SUMMARY_NAME).read_text())
    assert not staged["per_range"]  # per key over the whole catalog, as the client plans
    assert all("-r0" not in p.name for p in (tmp_path / "out").glob("part-*.parquet"))
    client_run = runner(sorted_paths, small_field, checkpoint, tmp_path / "client", f"output.stage_min_rows={10**9}")
    assert summary.counts == client_run.counts and summary.n_partitions == client_run.n_partitions
    pd.testing.assert_frame_equal(_rows(tmp_path / "out"), _rows(tmp_path / "client"))


@pytest.mark.parametrize("where", ["far", "last", "gold"])
def test_input_errors_end_the_run_with_the_client_line(sorted_paths, small_field, checkpoint, runner, tmp_path,
                                                       where):
    frames = catalog_frames(n=N, seed=3)
    im3 = frames.im3shape
    selected = select_galaxies(_config(sorted_paths)).table["coadd_objects_id"].to_numpy()
    if where == "far":  # a galaxy of the first chunk repeated at the end of the file
        frames.im3shape = pd.concat([im3, im3[im3["COADD_OBJECTS_ID"] == selected[2]]], ignore_index=True)
    elif where == "last":  # the last selected galaxy twice, in ID order: the stream goes on until the last range
        frames.im3shape = pd.concat([im3, im3[im3["COADD_OBJECTS_ID"] == selected[-1]]], ignore_index=True)
    else:  # a bad position late in the gold catalog
        frames.gold.loc[len(frames.gold) - 700, "DEC"] = 95.0
    paths = write_frames(tmp_path / "bad", frames)
    with pytest.raises(InputError) as client_side:
        select_galaxies(_config(paths))
    with pytest.raises(InputError) as staged_side:
        runner(paths, small_field, checkpoint, tmp_path / "out")
    assert str(staged_side.value) == str(client_side.value)
    assert ("DEC" if where == "gold" else "repeats: 2 selected rows") in str(client_side.value)
    if where == "last":  # found by the last join: the first range's partitions ran before it and are kept
        assert len(list((tmp_path / "out" / "_done").glob("*.json"))) > 0


def test_key_planner_carries_a_small_key_and_starts_with_the_largest(tmp_path):
    from survey_deblend.pipeline.plan import format_checksum
    from survey_deblend.pipeline.staging import KeyPlanner

    counts = {"a": 30, "b": 5}  # rows of each key in every range (the rows file holds "a" then "b")
    buckets = []
    for b in range(4):
        weights = np.arange(1, 36, dtype=np.uint64) + np.uint64(100 * b)  # stand-ins for the ids' hashes
        np.save(tmp_path / f"hash-{b}.npy", np.concatenate([[np.uint64(0)], np.cumsum(weights, dtype=np.uint64)]))
        buckets.append({"rows": f"rows-{b}.npy", "hashes": f"hash-{b}.npy", "keys": list(counts),
                        "counts": list(counts.values())})
    planner = KeyPlanner(tmp_path, max_rows=50)
    first = planner.add([(0, buckets[0])], 0, flush=False, at_least=1)
    assert [(p.partition_id, p.n_rows) for p in first] == [("a-r0000-0000", 30)]  # the largest key starts
    second = planner.add([(1, buckets[1]), (2, buckets[2])], 1, flush=False)
    assert [(p.partition_id, p.n_rows) for p in second] == [("a-r0001-0000", 30), ("a-r0001-0001", 30)]
    last = planner.add([(3, buckets[3])], 2, flush=True)
    assert [(p.partition_id, p.n_rows) for p in last] == [("a-r0002-0000", 30), ("b-r0002-0000", 20)]
    b_slices = last[1].rows.slices  # "b" carried over all four ranges, in ID order: one partition of 20 rows
    assert [(path.rsplit("/", 1)[-1], start, stop) for path, start, stop in b_slices] == [
        (f"rows-{b}.npy", 30, 35) for b in range(4)]
    assert last[1].ids_checksum == format_checksum(sum(sum(range(31 + 100 * b, 36 + 100 * b)) for b in range(4)))

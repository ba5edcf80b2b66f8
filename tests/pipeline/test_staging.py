"""The staged selection (workers select into out/_staging, the client plans from counts) against the selection on
the client: the same cut flow, rows, partitions, checksums, errors and run output, on a real LocalCluster."""

from __future__ import annotations

import gzip
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from cell_source import SkyCells
from conftest import run_config

from survey_deblend.catalog import EmptySelectionError, select_galaxies
from survey_deblend.catalog.synthetic import catalog_frames, write_frames
from survey_deblend.config.catalog import CatalogConfig, CutsConfig
from survey_deblend.errors import InputError
from survey_deblend.pipeline import run
from survey_deblend.pipeline.plan import STAGING_DIR, plan_partitions
from survey_deblend.pipeline.staging import SUMMARY_NAME
from survey_deblend.pipeline.stream import stage_selection


def _awkward_frames(n: int = 3000, seed: int = 5):
    """Synthetic catalogs neither sorted by ID, with gold IDs repeated (the earlier copy elsewhere on the sky)."""
    frames = catalog_frames(n=n, seed=seed)
    rng = np.random.default_rng(seed)
    gold = frames.gold
    copies = gold.iloc[rng.choice(len(gold), 25, replace=False)].assign(RA=lambda g: g["RA"] + 0.5)
    gold = pd.concat([gold, copies], ignore_index=True).iloc[rng.permutation(len(gold) + len(copies))]
    frames.gold = gold.reset_index(drop=True)
    frames.im3shape = frames.im3shape.iloc[rng.permutation(n)].reset_index(drop=True)
    return frames


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    folder = tmp_path_factory.mktemp("awkward")
    return folder, write_frames(folder / "fits", _awkward_frames())


def _config(paths, **kwargs) -> CatalogConfig:
    return CatalogConfig(shear=paths.im3shape, gold=paths.gold, chunk_rows=400,
                         cuts=CutsConfig(gold_quality=True), **kwargs)


@pytest.fixture(scope="module")
def both(awkward, client):
    folder, paths = awkward
    cfg = _config(paths)
    return select_galaxies(cfg), stage_selection(client, cfg, SkyCells(), folder / "out", "hash0")


def test_staged_cut_flow_and_rows_equal_the_client_selection(both):
    selection, staged = both
    flow = staged.cut_flow.to_dict()
    assert flow == selection.cut_flow.to_dict()
    assert flow["gold_duplicate_ids"] > 0 and flow["unmatched"] > 0 and len(staged.buckets) >= 3
    rows = pd.concat([p.rows.read() for p in staged.partitions(10**9)], ignore_index=True)
    expected = selection.table.sort_values("coadd_objects_id", ignore_index=True)
    pd.testing.assert_frame_equal(rows.sort_values("coadd_objects_id", ignore_index=True), expected)
    # the earlier gold copy of a repeated ID wins, as in select_galaxies, though it is not first in ID order
    assert staged.n_selected == len(selection.table)


@pytest.mark.parametrize("max_rows", [1, 7, 60, 10**6])
def test_staged_partitions_equal_plan_partitions(both, max_rows):
    selection, staged = both
    table = selection.table
    expected = plan_partitions(table, SkyCells().locality_keys(table["ra"], table["dec"]), max_rows)
    got = staged.partitions(max_rows)
    assert [p.partition_id for p in got] == [p.partition_id for p in expected]
    assert [p.ids_checksum for p in got] == [p.ids_checksum for p in expected]
    assert [p.n_rows for p in got] == [p.n_rows for p in expected]
    for old, new in list(zip(expected, got, strict=True))[:: max(1, len(got) // 25)]:
        assert new.tile == old.tile
        pd.testing.assert_frame_equal(new.rows.read(), table.iloc[old.rows].reset_index(drop=True))


def test_parquet_and_gzip_catalogs_stage_the_same_rows(awkward, both, client):
    folder, paths = awkward
    _, staged = both
    parquet = write_frames(folder / "parquet", _awkward_frames(), fmt="parquet")
    gz = folder / "gz" / "im3shape.fits.gz"
    gz.parent.mkdir()
    with open(paths.im3shape, "rb") as raw, gzip.open(gz, "wb") as packed:
        shutil.copyfileobj(raw, packed)
    for shear, gold, name in ((parquet.im3shape, parquet.gold, "pq"), (gz, paths.gold, "gz")):
        cfg = CatalogConfig(shear=shear, gold=gold, chunk_rows=400, cuts=CutsConfig(gold_quality=True))
        other = stage_selection(client, cfg, SkyCells(), folder / f"out-{name}", "hash-" + name)
        assert [n for _, n in other.cut_flow.steps] == [n for _, n in staged.cut_flow.steps]
        assert [(p.partition_id, p.ids_checksum) for p in other.partitions(50)] == [
            (p.partition_id, p.ids_checksum) for p in staged.partitions(50)
        ]


def test_same_errors_as_the_client_selection(awkward, client, tmp_path):
    _, paths = awkward
    frames = _awkward_frames()
    selected = select_galaxies(_config(paths)).table["coadd_objects_id"].to_numpy()
    im3 = frames.im3shape
    twice = im3.index[im3["COADD_OBJECTS_ID"].isin(selected[[3, 900]])]
    frames.im3shape = pd.concat([im3, im3.loc[twice]], ignore_index=True)  # two selected galaxies repeated
    frames.gold.loc[17, "DEC"] = 95.0  # and a bad gold position: the repeats are reported first
    bad = write_frames(tmp_path / "bad", frames)
    cfg = _config(bad)
    with pytest.raises(InputError) as client_side:
        select_galaxies(cfg)
    with pytest.raises(InputError) as staged_side:
        stage_selection(client, cfg, SkyCells(), tmp_path / "out", "h")
    assert str(staged_side.value) == str(client_side.value) and "repeats: 4 selected rows" in str(client_side.value)
    frames.im3shape = im3
    cfg = _config(write_frames(tmp_path / "bad-gold", frames))
    with pytest.raises(InputError) as client_side:
        select_galaxies(cfg)
    with pytest.raises(InputError) as staged_side:
        stage_selection(client, cfg, SkyCells(), tmp_path / "out2", "h")
    assert str(staged_side.value) == str(client_side.value) and "DEC" in str(client_side.value)


def test_everything_cut_says_so_with_the_cut_flow(awkward, client, tmp_path):
    _, paths = awkward
    cfg = CatalogConfig(shear=paths.im3shape, gold=paths.gold, chunk_rows=400, cuts=CutsConfig(snr_w_min=1e9))
    with pytest.raises(EmptySelectionError, match="every row was cut before the position match") as caught:
        stage_selection(client, cfg, SkyCells(), tmp_path / "out", "h")
    assert caught.value.cut_flow.rows_in == 3000 and caught.value.cut_flow.rows_out == 0


def _rows(folder) -> pd.DataFrame:
    """Every row of a run's output, by galaxy id, without the run id (the one column that differs by design)."""
    table = pd.read_parquet(folder).drop(columns="run_id")
    return table.sort_values("coadd_objects_id", ignore_index=True)


def test_staged_run_writes_the_same_rows_as_the_client_run(small_field, checkpoint, client, tmp_path):
    client_out, staged_out = tmp_path / "client", tmp_path / "staged"
    first = run(run_config(small_field, checkpoint, client_out), client, stream=io.StringIO())
    staged_config = run_config(small_field, checkpoint, staged_out, "output.stage_min_rows=0", "catalog.chunk_rows=40")
    second = run(staged_config, client, stream=io.StringIO())
    summary = json.loads((staged_out / STAGING_DIR / SUMMARY_NAME).read_text())
    assert summary["per_range"] and len(summary["buckets"]) >= 2  # sorted by ID: streamed, per (range, key)
    assert second.cut_flow == first.cut_flow and second.counts == first.counts
    # partitions per (ID range, key): other part files, the same rows with the same values
    assert all("-r0" in p.name for p in staged_out.glob("part-*.parquet"))
    assert second.n_partitions == len(list(staged_out.glob("part-*.parquet"))) >= first.n_partitions
    pd.testing.assert_frame_equal(_rows(staged_out), _rows(client_out))
    # a re-run of the same configuration plans from the staging's summary: nothing staged or written again
    summary = staged_out / STAGING_DIR / SUMMARY_NAME
    before = summary.stat().st_mtime_ns, {p.name: p.stat().st_mtime_ns for p in staged_out.glob("part-*")}
    again = run(staged_config, client, stream=io.StringIO())
    assert again.n_resumed == second.n_partitions and again.cut_flow == second.cut_flow
    assert (summary.stat().st_mtime_ns, {p.name: p.stat().st_mtime_ns for p in staged_out.glob("part-*")}) == before
    manifest = json.loads((staged_out / "_manifest.json").read_text())
    assert manifest["n_selected"] == first.n_selected and manifest["state"] == "complete"
    # the three-task chain of GPU clusters reads the staged rows too (a task of its own, named by the others)
    chained_out = tmp_path / "chained"
    chained = run(run_config(small_field, checkpoint, chained_out, "output.stage_min_rows=0", "catalog.chunk_rows=40"),
                  client, stream=io.StringIO(), fuse=False)
    assert chained.counts == first.counts
    pd.testing.assert_frame_equal(_rows(chained_out), _rows(client_out))

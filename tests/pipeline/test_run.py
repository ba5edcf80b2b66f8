"""The run end to end on a real LocalCluster: output schema, every galaxy once, manifest, resume, refusal."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_config

from survey_deblend.errors import SurveyDeblendError
from survey_deblend.pipeline import MANIFEST_NAME, run
from survey_deblend.pipeline.plugin import PLUGIN_NAME
from survey_deblend.pipeline.tasks import OUTPUT_SCHEMA

EXPECTED_DTYPES = {
    "coadd_objects_id": "int64", "ra": "float64", "dec": "float64", "snr_w": "float64",
    "e1_im3shape": "float64", "e2_im3shape": "float64", "nbc_m": "float64", "nbc_c1": "float64",
    "nbc_c2": "float64", "w": "float64", "e1_pred": "float64", "e2_pred": "float64", "e_sigma_pred": "float64",
    "z_pred": "float64", "e1_recon": "float64", "e2_recon": "float64",
}


@pytest.fixture(scope="module")
def finished_run(small_field, checkpoint, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    stream = io.StringIO()
    summary = run(run_config(small_field, checkpoint, out), client, stream=stream)
    return out, summary, stream.getvalue()


def test_output_has_every_selected_galaxy_once_with_design_columns(finished_run, small_field):
    out, summary, _ = finished_run
    frame = pd.read_parquet(out)  # the manifest and markers beside the parts must not bother pandas
    assert list(frame.columns) == OUTPUT_SCHEMA.names
    for name, dtype in EXPECTED_DTYPES.items():
        assert str(frame[name].dtype) == dtype, name
    for name in ("tile", "status", "model", "run_id"):
        assert pd.api.types.is_string_dtype(frame[name]), name
    n_selected = small_field.n_objects - small_field.n_low_snr
    assert summary.n_selected == n_selected == len(frame)
    assert frame["coadd_objects_id"].is_unique
    assert frame["snr_w"].min() > 20


def test_failed_stamps_keep_their_row_with_null_predictions(finished_run, small_field):
    out, summary, _ = finished_run
    frame = pd.read_parquet(out)
    off = frame[frame["status"] == "no_coverage"]
    assert len(off) == small_field.n_off_survey
    assert off[["e1_pred", "e2_pred", "z_pred"]].isna().all().all()
    assert set(off["tile"]) == {"no_coverage"}
    ok = frame[frame["status"].isin(["ok", "padded"])]
    assert len(ok) == len(frame) - small_field.n_off_survey
    assert np.isfinite(ok[["e1_pred", "e2_pred", "e_sigma_pred", "z_pred"]].to_numpy()).all()
    assert set(ok["tile"]) == {"DES0000-5000", "DES0001-5000", "DES0002-5000"}
    assert summary.counts == frame["status"].value_counts().to_dict()


def test_predictions_equal_a_plain_predictor_on_the_same_stamps(finished_run, small_field, checkpoint):
    from survey_deblend.cutouts import open_source
    from survey_deblend.inference import Predictor

    out, summary, _ = finished_run
    frame = pd.read_parquet(out).sort_values("coadd_objects_id").head(12)
    frame = frame[frame["status"] == "ok"]
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    source = open_source(f"tiles:{small_field.tiles_dir}")
    size = predictor.source_stamp_size(source.pixel_scale_arcsec)
    batch = source.fetch(frame["ra"].to_numpy(), frame["dec"].to_numpy(), size)
    expected = predictor.predict(batch.images, batch.bands, batch.pixel_scale_arcsec, band_mask=batch.band_mask)
    np.testing.assert_allclose(frame["e1_pred"], expected["e1_pred"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(frame["z_pred"], expected["z_pred"], rtol=1e-4, atol=1e-5)
    assert set(frame["model"]) == {predictor.model_id} == {summary.model_id}


def test_manifest_records_config_model_cut_flow_counts(finished_run):
    out, summary, text = finished_run
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["state"] == "complete"
    assert manifest["model"] == summary.model_id
    assert manifest["run_id"] == summary.run_id
    assert len(manifest["config_hash"]) == 16
    assert manifest["counts"] == summary.counts
    assert manifest["n_selected"] == summary.n_selected
    assert manifest["cut_flow"] == summary.cut_flow and manifest["cut_flow"]
    assert manifest["timings"]["total_s"] > 0
    assert len(manifest["parts"]) == summary.n_partitions == len(list(out.glob("part-*.parquet")))
    assert "dashboard: http" in text and "galaxies/s" in text and str(out) in text


def test_predictor_loaded_once_per_worker(finished_run, client):
    counts = client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].load_count)
    assert all(c <= 1 for c in counts.values())
    assert sum(counts.values()) >= 1


def test_rerun_same_config_skips_every_partition(finished_run, small_field, checkpoint, client):
    out, summary, _ = finished_run
    loads = client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].load_count)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    again = run(run_config(small_field, checkpoint, out), client, stream=io.StringIO())
    assert again.n_resumed == summary.n_partitions
    assert again.run_id == summary.run_id and again.counts == summary.counts
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == mtimes
    # the same model on the same cluster: the workers keep their loaded Predictor across runs
    assert client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].load_count) == loads


def test_resume_rewrites_only_missing_partitions(small_field, checkpoint, client, tmp_path):
    out = tmp_path / "out"
    first = run(run_config(small_field, checkpoint, out), client, stream=io.StringIO())
    parts = sorted(out.glob("part-*.parquet"))
    lost = parts[1]
    lost.unlink()  # as if the run died before this partition was written
    (out / "_done" / (lost.stem.removeprefix("part-") + ".json")).unlink()
    before = {p.name: p.stat().st_mtime_ns for p in parts if p != lost}
    second = run(run_config(small_field, checkpoint, out), client, stream=io.StringIO())
    assert second.n_resumed == first.n_partitions - 1
    assert lost.is_file()
    assert {p.name: p.stat().st_mtime_ns for p in parts if p != lost} == before
    frame = pd.read_parquet(out)
    assert frame["coadd_objects_id"].is_unique and len(frame) == first.n_selected


def test_other_config_refuses_then_overwrite_starts_over(small_field, checkpoint, client, tmp_path):
    out = tmp_path / "out"
    first = run(run_config(small_field, checkpoint, out), client, stream=io.StringIO())
    with pytest.raises(SurveyDeblendError, match="another configuration.*--overwrite"):
        run(run_config(small_field, checkpoint, out, "output.partition_rows=10"), client, stream=io.StringIO())
    assert json.loads((out / MANIFEST_NAME).read_text())["run_id"] == first.run_id
    second = run(
        run_config(small_field, checkpoint, out, "output.partition_rows=10", "output.overwrite=true"),
        client, stream=io.StringIO(),
    )
    assert second.n_resumed == 0 and second.n_partitions > first.n_partitions
    frame = pd.read_parquet(out)
    assert len(frame) == first.n_selected and frame["coadd_objects_id"].is_unique
    assert set(frame["run_id"]) == {second.run_id}

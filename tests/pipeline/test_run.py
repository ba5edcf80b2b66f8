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
from survey_deblend.schema import COLUMNS, OUTPUT_NAMES, USABLE

DESIGN_COLUMNS = (  # ../shared/DESIGN.md "Output columns", in that order
    "coadd_objects_id ra dec tile snr_w e1_im3shape e2_im3shape nbc_m nbc_c1 nbc_c2 w psf_fwhm psf_e1 psf_e2 "
    "bands_used e1_pred e2_pred e_sigma_pred e1_sample e2_sample z_pred z_sigma_pred z_lo z_hi e1_recon e2_recon "
    "r11 r12 r21 r22 e1_mcal e2_mcal status model run_id"
).split()


@pytest.fixture(scope="module")
def finished_run(small_field, checkpoint, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    stream = io.StringIO()
    summary = run(run_config(small_field, checkpoint, out), client, stream=stream)
    return out, summary, stream.getvalue()


def test_output_has_every_selected_galaxy_once_with_design_columns(finished_run, small_field):
    out, summary, _ = finished_run
    frame = pd.read_parquet(out)  # the manifest and markers beside the parts must not bother pandas
    assert list(frame.columns) == list(OUTPUT_NAMES) == DESIGN_COLUMNS
    for name, column in COLUMNS.items():
        if column.dtype == "string":
            assert pd.api.types.is_string_dtype(frame[name]), name
        else:
            assert str(frame[name].dtype) == column.dtype, name
    n_selected = small_field.n_objects - small_field.n_low_snr
    assert summary.n_selected == n_selected == len(frame)
    assert frame["coadd_objects_id"].is_unique
    assert frame["snr_w"].min() > 20


def test_part_files_say_what_each_column_is(finished_run):
    import pyarrow.parquet as pq

    out, _, _ = finished_run
    schema = pq.read_schema(next(out.glob("part-*.parquet")))
    e1 = schema.field("e1_pred").metadata
    assert e1[b"unit"] == b"dimensionless" and b"posterior mean" in e1[b"description"]
    assert schema.field("ra").metadata[b"unit"] == b"deg"
    assert schema.field("psf_fwhm").metadata[b"unit"] == b"pixel"
    assert b"MEAN_PSF_FWHM" in schema.field("psf_fwhm").metadata[b"description"]
    for name, column in COLUMNS.items():
        assert schema.field(name).metadata[b"description"].decode() == column.description, name


def test_catalog_psf_and_bands_used_reach_the_output(finished_run, small_field):
    from field import psf_of

    from survey_deblend.catalog.synthetic import FIRST_ID

    out, _, _ = finished_run
    frame = pd.read_parquet(out).sort_values("coadd_objects_id")
    row = (frame["coadd_objects_id"].to_numpy() - FIRST_ID) // 7
    for name, values in psf_of(row).items():
        np.testing.assert_allclose(frame[name], values, rtol=1e-6, err_msg=name)
    usable = frame["status"].isin(list(USABLE))
    assert set(frame.loc[usable, "bands_used"]) == {"grizY"}  # every band of the small field has pixels
    assert frame.loc[~usable, "bands_used"].isna().all()
    # columns of heads this run does not have (flow posterior) are present and null; metacalibration is on by
    # default: its columns are filled for the usable rows (every row of this field has a PSF), null elsewhere
    assert frame[["e1_sample", "e2_sample", "z_lo", "z_hi"]].isna().all().all()
    calibration = ["r11", "r12", "r21", "r22", "e1_mcal", "e2_mcal"]
    assert np.isfinite(frame.loc[usable, calibration].to_numpy()).all()
    assert frame.loc[~usable, calibration].isna().all().all()
    assert np.isfinite(frame.loc[usable, "z_sigma_pred"]).all() and (frame.loc[usable, "z_sigma_pred"] > 0).all()


def test_failed_stamps_keep_their_row_with_null_predictions(finished_run, small_field):
    out, summary, _ = finished_run
    frame = pd.read_parquet(out)
    off = frame[frame["status"] == "no_coverage"]
    assert len(off) == small_field.n_off_survey
    assert off[["e1_pred", "e2_pred", "z_pred"]].isna().all().all()
    assert set(off["tile"]) == {"no_coverage"}
    ok = frame[frame["status"].isin(list(USABLE))]
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
    frame_of = batch.frame  # the numpy entry point, given the batch's frame, is the run's path
    expected = predictor.predict(batch.images, batch.bands, batch.pixel_scale_arcsec, band_mask=batch.band_mask,
                                 zeropoints=frame_of.zeropoints, survey=frame_of.survey,
                                 ids=frame["coadd_objects_id"].to_numpy())
    np.testing.assert_allclose(frame["e1_pred"], expected["e1_pred"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(frame["z_pred"], expected["z_pred"], rtol=1e-4, atol=1e-5)
    # the posterior draw is seeded by the galaxy id: the run's draw is the plain Predictor's for that id (a
    # checkpoint without a flow head leaves the flow columns null)
    flow_columns = frame[["e1_sample", "e2_sample", "z_lo", "z_hi"]].to_numpy()
    assert np.isfinite(flow_columns).all() if predictor.flow is not None else np.isnan(flow_columns).all()
    np.testing.assert_allclose(frame["e1_sample"], expected["e1_sample"], rtol=1e-4, atol=1e-5)
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


def test_configured_batch_size_reaches_the_worker_predictor(small_field, checkpoint, client, tmp_path):
    out = tmp_path / "out"
    summary = run(run_config(small_field, checkpoint, out, "model.batch_size=7"), client, stream=io.StringIO())
    sizes = client.run(lambda dask_worker: getattr(dask_worker.plugins[PLUGIN_NAME]._predictor, "batch_size", None))
    assert 7 in sizes.values() and set(sizes.values()) <= {7, None}  # None: a worker that never predicted
    assert len(pd.read_parquet(out)) == summary.n_selected

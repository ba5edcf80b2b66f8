"""``survey-deblend run`` through the real command line: paths stay paths, inputs are checked before a cluster."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from survey_deblend.cli import main
from survey_deblend.models.checkpoint import file_hash
from survey_deblend.pipeline import MANIFEST_NAME


def test_paths_that_yaml_would_misread_stay_paths(small_field, checkpoint, client, tmp_path, monkeypatch):
    """A catalog named ``shear #2.fits`` (# starts a YAML comment), a gold catalog named ``yes`` (a YAML bool),
    a checkpoint named ``null`` (YAML's None: the shipped model) and an output folder ``2024`` (a YAML int)."""
    shutil.copy(small_field.im3shape, tmp_path / "shear #2.fits")
    shutil.copy(small_field.gold, tmp_path / "yes")
    shutil.copy(checkpoint, tmp_path / "null")
    monkeypatch.chdir(tmp_path)
    code = main([
        "run", "--catalog", "shear #2.fits", "--gold", "yes", "--model", "null", "--out", "2024",
        "--images", f"tiles:{small_field.tiles_dir}", "--cluster", client.scheduler.address, "--no-progress",
        "--set", "model.measure_recon=false",
    ])  # fmt: skip
    assert code == 0
    here = tmp_path.resolve()
    manifest = json.loads((here / "2024" / MANIFEST_NAME).read_text())
    assert manifest["config"]["catalog"]["shear"] == str(here / "shear #2.fits")
    assert manifest["config"]["catalog"]["gold"] == str(here / "yes")
    assert manifest["config"]["output"]["out"] == str(here / "2024")
    assert manifest["model_path"] == str(here / "null") and manifest["model"] == file_hash(checkpoint)
    frame = pd.read_parquet(here / "2024")
    assert len(frame) == manifest["n_selected"] > 0 and frame["coadd_objects_id"].is_unique


@pytest.mark.parametrize(
    "args, message",
    [
        (["--catalog", "missing #1.fits"], "missing #1.fits: im3shape catalog file not found"),
        (["--gold", "yes"], "yes: gold catalog file not found"),
        (["--model", "no"], "model checkpoint no: not found"),
    ],
)
def test_bad_inputs_stop_before_any_cluster_starts(args, message, small_field, tmp_path, monkeypatch, capsys):
    import survey_deblend.cluster

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started before the inputs were checked")

    monkeypatch.setattr(survey_deblend.cluster, "LocalCluster", no_cluster)
    monkeypatch.chdir(tmp_path)
    base = ["run", "--catalog", str(small_field.im3shape), "--gold", str(small_field.gold),
            "--images", f"tiles:{small_field.tiles_dir}", "--out", str(tmp_path / "out")]  # fmt: skip
    code = main(base + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

"""The whole chain on a tiny simulated field: make_des_field -> pipeline.run (LocalCluster) -> evaluate --truth."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from survey_deblend.cli import main


@pytest.mark.slow
def test_evaluate_a_real_pipeline_run_against_the_field_truth(tmp_path, capsys):
    from survey_deblend.cluster import open_client
    from survey_deblend.config import load
    from survey_deblend.config.run import ClusterConfig, RunConfig
    from survey_deblend.models.checkpoint import write_untrained_checkpoint
    from survey_deblend.pipeline import run
    from survey_deblend.sim.field import make_des_field

    field = make_des_field(tmp_path / "field", n_tiles=1, tile_size_pix=300, seed=3)
    checkpoint = write_untrained_checkpoint(tmp_path / "untrained.pt", seed=0)
    out = tmp_path / "out"
    config = load(RunConfig, None, [
        f"catalog.shear={field.im3shape}", f"catalog.gold={field.gold}", f"images.source=tiles:{field.tiles_dir}",
        f"model.checkpoint={checkpoint}", f"output.out={out}", "output.partition_rows=50", "output.progress=false",
    ])
    with open_client(ClusterConfig(kind="local", n_workers=1, threads_per_worker=1, dashboard_address=":0")) as client:
        summary = run(config, client)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--truth", str(field.truth), "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    assert "predicted vs truth" in printed and "im3shape (raw) vs truth" in printed
    metrics = json.loads((out / "_report" / "metrics.json").read_text())
    rows = pd.read_parquet(out)
    assert metrics["n_rows"] == len(rows) == summary.n_selected
    assert metrics["status_counts"] == {k: int(v) for k, v in rows["status"].value_counts().items()}
    assert metrics["truth"]["unmatched"] == 0  # every selected galaxy is in the field's truth
    by_key = {r["key"]: r for r in metrics["comparisons"]}
    # the im3shape-like catalog is the truth plus measurement noise: it must track the truth closely
    assert by_key["im3shape_vs_truth"]["corr1"] > 0.8 and by_key["im3shape_vs_truth"]["rmse"] < 0.15
    assert metrics["manifest"]["state"] == "complete" and metrics["manifest"]["cut_flow"]["steps"]

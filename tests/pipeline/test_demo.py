"""The demo command end to end (simulated field -> local SIA server -> run -> comparison), and its pieces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_deblend.cli import main
from survey_deblend.pipeline.demo import compare_with_im3shape
from survey_deblend.schema import USABLE


def test_comparison_numbers():
    frame = pd.DataFrame({
        "status": ["ok", "ok", "padded", "error_http"],
        "e1_pred": [0.1, 0.2, 0.3, np.nan], "e1_im3shape": [0.0, 0.2, 0.5, 0.4],
        "e2_pred": [0.0, 0.1, -0.1, np.nan], "e2_im3shape": [0.0, 0.1, -0.1, 0.4],
    })
    text = compare_with_im3shape(frame)
    assert "3 usable of 4 galaxies" in text
    e1 = next(line for line in text.splitlines() if line.startswith("e1")).split()
    assert float(e1[1]) == pytest.approx((0.1 + 0.0 - 0.2) / 3, abs=1e-4)
    assert float(e1[2]) == pytest.approx(np.sqrt((0.01 + 0 + 0.04) / 3), abs=1e-4)
    e2 = next(line for line in text.splitlines() if line.startswith("e2")).split()
    assert float(e2[1]) == 0.0 and float(e2[3]) == pytest.approx(1.0)


@pytest.mark.slow
def test_demo_over_sia_runs_the_real_job_and_compares(tmp_path, capsys):
    """The demo as a user runs it: the shipped checkpoint (with its flow head), over the local SIA server."""
    workdir = tmp_path / "demo"
    args = ["demo", "--workdir", str(workdir), "--n-tiles", "1", "--tile-size", "400",
            "--workers", "1", "--set", "cluster.dashboard_address=:0", "--set", "model.measure_recon=false"]
    assert main(args) == 0
    out = capsys.readouterr().out
    frame = pd.read_parquet(workdir / "out")
    assert len(frame) > 0 and frame["coadd_objects_id"].is_unique
    assert frame["tile"].str.startswith("cell_").all()  # keys of the SIA source: it really went over HTTP
    usable = frame[frame["status"].isin(list(USABLE))]
    # the shipped checkpoint's flow head fills the posterior columns of every usable galaxy
    assert len(usable) and np.isfinite(usable[["e1_sample", "e2_sample", "z_lo", "z_hi"]].to_numpy()).all()
    assert "predicted vs im3shape" in out and "galaxies/s" in out
    assert "calibrated shear (" in out and "<R> = [[" in out  # metacalibration is on by default
    assert np.isfinite(usable[["r11", "r22", "e1_mcal", "e2_mcal"]].to_numpy()).all()
    assert (workdir / "out" / "_report" / "report.html").is_file()
    # a second demo reuses the field (no new simulation) and starts the run over
    assert main(args[:-4] + ["--images", "tiles", "--set", "cluster.dashboard_address=:0",
                             "--set", "model.measure_recon=false"]) == 0
    out2 = capsys.readouterr().out
    assert "simulating" not in out2
    assert pd.read_parquet(workdir / "out")["tile"].str.startswith("DES").any()


def test_demo_yaml_is_the_demo_job(tmp_path):
    """``survey-deblend run --config pipelines/demo.yaml`` and ``survey-deblend demo --images tiles`` run one job."""
    from pathlib import Path

    from survey_deblend.config import load
    from survey_deblend.config.run import RunConfig
    from survey_deblend.pipeline.demo import DemoField, demo_config

    repo = Path(__file__).resolve().parents[2]
    by_hand = load(RunConfig, repo / "pipelines" / "demo.yaml")
    workdir = Path("demo-work")
    field = DemoField(workdir / "field" / "tiles", workdir / "field" / "im3shape.fits", workdir / "field" / "gold.fits",
                      None)
    demo = demo_config(field, workdir, f"tiles:{field.tiles_dir}", [])
    assert demo.catalog == by_hand.catalog
    assert demo.images == by_hand.images
    assert demo.model == by_hand.model
    assert demo.output.out == by_hand.output.out
    assert demo.output.partition_rows == by_hand.output.partition_rows

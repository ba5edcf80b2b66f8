"""Reliability: a worker killed mid-run, the whole run SIGKILLed and restarted, a failing SIA server.

Both kills happen on a deterministic event, the first finished partition (``kill_on_first_write``).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_config
from kill_on_first_write import KillOnFirstWrite, kill_busiest_worker

from survey_deblend.pipeline import MANIFEST_NAME, run

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _markers(out: Path) -> int:
    return len(list((out / "_done").glob("*.json"))) if (out / "_done").is_dir() else 0


def _assert_complete(out: Path, n_selected: int) -> pd.DataFrame:
    frame = pd.read_parquet(out)
    assert len(frame) == n_selected
    assert frame["coadd_objects_id"].is_unique
    assert not list(out.glob(".tmp-*"))
    return frame


def test_worker_killed_mid_run_still_completes_every_galaxy_once(small_field, checkpoint, tmp_path):
    """A worker is SIGKILLed the moment the first partition is written (a scheduler plugin, not a polling race)."""
    from survey_deblend.cluster import open_client
    from survey_deblend.config.run import ClusterConfig

    victims: list[int] = []
    out = tmp_path / "out"
    config = run_config(small_field, checkpoint, out, "output.partition_rows=3", "model.measure_recon=false")
    with open_client(ClusterConfig(n_workers=2, threads_per_worker=1, dashboard_address=":0")) as client:
        scheduler = client.cluster.scheduler  # in this process: the plugin object itself records the kill
        plugin = KillOnFirstWrite(scheduler, lambda s: victims.append(kill_busiest_worker(s)))
        scheduler.add_plugin(plugin)
        summary = run(config, client, stream=io.StringIO())
        assert victims, "no write task ever finished, so no worker was killed: the test proved nothing"
        assert victims[0] not in client.run(os.getpid).values()  # the nanny replaced the killed worker
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert plugin.writes_done_at_kill == 1 < manifest["n_partitions"]
    _assert_complete(out, summary.n_selected)


@pytest.mark.parametrize("staged", [False, True])
def test_whole_run_sigkilled_then_restarted_resumes_without_duplicates(small_field, checkpoint, client, tmp_path,
                                                                       staged):
    """The whole run (client and cluster) is SIGKILLed by a scheduler preload at its first finished partition;
    ``staged``: the workers select, and the partitions of the first ID ranges run while the rest is staged."""
    out = tmp_path / "out"
    staging = ["output.stage_min_rows=0", "catalog.chunk_rows=20"] if staged else []
    command = [
        sys.executable, "-m", "survey_deblend", "run",
        "--catalog", str(small_field.im3shape), "--gold", str(small_field.gold),
        "--images", f"tiles:{small_field.tiles_dir}", "--model", str(checkpoint), "--out", str(out),
        "--cluster", "local", "--workers", "1", "--no-progress",
        "--set", "output.partition_rows=3", "--set", "cluster.dashboard_address=:0",
        "--set", "model.measure_recon=false",
        "--set", "cluster.threads_per_worker=1", *[arg for item in staging for arg in ("--set", item)],
    ]
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": repr([str(HERE / "kill_on_first_write.py")])}
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:  # never leave the run behind, whatever happened
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
    assert code == -signal.SIGKILL, (
        f"the run ended with code {code} instead of being killed at its first finished partition:\n"
        + (tmp_path / "run.log").read_text()[-2000:]
    )
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    done_at_kill = _markers(out)
    assert manifest["state"] == "running"

    config = run_config(small_field, checkpoint, out, "output.partition_rows=3", "model.measure_recon=false",
                        *staging)
    summary = run(config, client, stream=io.StringIO())
    assert 1 <= done_at_kill < summary.n_partitions
    assert summary.n_resumed == done_at_kill  # the same partitions planned again (staged or not), the done skipped
    assert summary.run_id == manifest["run_id"]
    frame = _assert_complete(out, summary.n_selected)
    assert set(frame["run_id"]) == {manifest["run_id"]}
    assert json.loads((out / MANIFEST_NAME).read_text())["attempts"] == 2


def test_failing_sia_server_gives_statuses_not_gaps(small_field, checkpoint, client, tmp_path):
    from survey_deblend.cutouts.server import Faults, running_server

    out = tmp_path / "out"
    faults = Faults(error_rate=0.25, seed=3)
    with running_server(small_field.tiles_dir, faults=faults) as url:
        config = run_config(
            small_field, checkpoint, out, "images.retries=0", "images.backoff_s=0", "images.timeout_s=10",
            "output.partition_rows=40", images=f"sia:{url}",
        )
        summary = run(config, client, stream=io.StringIO())
    frame = _assert_complete(out, summary.n_selected)
    failed = frame[frame["status"] == "error_http"]
    usable = frame[frame["status"].isin(["ok", "padded"])]
    assert len(failed) > 0 and len(usable) > 0
    assert failed[["e1_pred", "e2_pred", "z_pred"]].isna().all().all()
    assert np.isfinite(usable["e1_pred"]).all()
    assert summary.counts["error_http"] == len(failed)
    assert (frame["tile"].str.startswith("cell_")).all()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cluster", "kubernetes"], "unknown cluster kind 'kubernetes'"),
        (["--model", "/nonexistent/model.pt"], "model checkpoint /nonexistent/model.pt: not found"),
        (["--out", "/proc/1/forbidden/out"], "output folder /proc/1/forbidden/out is not writable"),
        (["--set", "output.partition_rows=many"], "output.partition_rows: expected an integer"),
    ],
)
def test_bad_arguments_give_one_clear_line(args, message, small_field, tmp_path, capsys):
    from survey_deblend.cli import main

    base = ["run", "--catalog", str(small_field.im3shape), "--gold", str(small_field.gold),
            "--images", f"tiles:{small_field.tiles_dir}", "--out", str(tmp_path / "out")]
    code = main(base + args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_corrupt_checkpoint_is_one_line(small_field, tmp_path, client):
    from survey_deblend.errors import SurveyDeblendError

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SurveyDeblendError, match="bad.pt"):
        run(run_config(small_field, bad, tmp_path / "out"), client, stream=io.StringIO())

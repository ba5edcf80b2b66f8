"""Reliability: a worker killed mid-run, the whole run SIGKILLed and restarted, a failing SIA server."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_config

from survey_deblend.pipeline import MANIFEST_NAME, run

REPO = Path(__file__).resolve().parents[2]


def _wait_for_markers(out: Path, n: int, timeout_s: float, stop: threading.Event | None = None) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = len(list((out / "_done").glob("*.json"))) if (out / "_done").is_dir() else 0
        if done >= n or (stop is not None and stop.is_set()):
            return done
        time.sleep(0.01)
    raise TimeoutError(f"fewer than {n} partitions finished in {timeout_s} s")


def _assert_complete(out: Path, n_selected: int) -> pd.DataFrame:
    frame = pd.read_parquet(out)
    assert len(frame) == n_selected
    assert frame["coadd_objects_id"].is_unique
    assert not list(out.glob(".tmp-*"))
    return frame


def test_worker_killed_mid_run_still_completes_every_galaxy_once(small_field, checkpoint, tmp_path):
    from survey_deblend.cluster import make_client
    from survey_deblend.config.run import ClusterConfig

    client, cluster = make_client(ClusterConfig(n_workers=2, threads_per_worker=1, dashboard_address=":0"))
    out = tmp_path / "out"
    config = run_config(small_field, checkpoint, out, "output.partition_rows=3", "model.measure_recon=false")
    result: dict = {}
    finished = threading.Event()

    def target() -> None:
        try:
            result["summary"] = run(config, client, stream=io.StringIO())
        except BaseException as exc:  # surfaced by the assertion below
            result["error"] = exc
        finally:
            finished.set()

    try:
        thread = threading.Thread(target=target)
        thread.start()
        done_at_kill = _wait_for_markers(out, 2, timeout_s=120, stop=finished)
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=180)
        assert "error" not in result, result.get("error")
        summary = result["summary"]
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        assert done_at_kill < manifest["n_partitions"], "run finished before the kill: the test proved nothing"
        _assert_complete(out, summary.n_selected)
        assert victim not in client.run(os.getpid).values()  # the nanny replaced the killed worker
    finally:
        client.close()
        cluster.close()


def test_whole_run_sigkilled_then_restarted_resumes_without_duplicates(small_field, checkpoint, client, tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "survey_deblend", "run",
        "--catalog", str(small_field.im3shape), "--gold", str(small_field.gold),
        "--images", f"tiles:{small_field.tiles_dir}", "--model", str(checkpoint), "--out", str(out),
        "--cluster", "local", "--workers", "1", "--no-progress",
        "--set", "output.partition_rows=3", "--set", "cluster.dashboard_address=:0",
        "--set", "model.measure_recon=false",
        "--set", "cluster.threads_per_worker=1",
    ]
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        done_at_kill = _wait_for_markers(out, 3, timeout_s=150)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client and its cluster's processes, all at once
        proc.wait(timeout=30)
        log.close()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["state"] == "running"
    assert done_at_kill < manifest["n_partitions"], "run finished before the kill: the test proved nothing"

    config = run_config(small_field, checkpoint, out, "output.partition_rows=3", "model.measure_recon=false")
    summary = run(config, client, stream=io.StringIO())
    assert summary.n_resumed >= done_at_kill
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

"""SLURM for real: ``run --cluster slurm``, the batch scripts of ``cluster/`` under ``sbatch``, a worker ``scancel``ed.

Needs a controller (``sudo bash cluster/local-slurm.sh start``; ``.ci/run`` starts one); without one these tests
skip and say why. Every run's Parquet is compared with the same field run on a LocalCluster.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_config
from slurm_site import REPO, controller_problem, default_partition, jobs_named, sbatch, wait_for_job, write_site_file

from survey_deblend.pipeline import MANIFEST_NAME, run
from survey_deblend.schema import RESPONSE_COLUMNS

pytestmark = pytest.mark.slurm
PARTITION_ROWS = 25
PREDICTIONS = ["e1_pred", "e2_pred", "e_sigma_pred", "z_pred"]


@pytest.fixture(scope="module", autouse=True)
def slurm_controller() -> None:
    problem = controller_problem()
    if problem is not None:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def local_frame(small_field, checkpoint, client, tmp_path_factory) -> pd.DataFrame:
    """The reference: the same field on the session's LocalCluster."""
    out = tmp_path_factory.mktemp("local") / "out"
    run(run_config(small_field, checkpoint, out, f"output.partition_rows={PARTITION_ROWS}"), client,
        stream=io.StringIO())
    return _read(out)


def _read(out: Path) -> pd.DataFrame:
    frame = pd.read_parquet(out)
    assert frame["coadd_objects_id"].is_unique, "a galaxy was written twice"
    return frame.sort_values("coadd_objects_id").reset_index(drop=True)


def _assert_equal(frame: pd.DataFrame, reference: pd.DataFrame, columns: list[str] | None = None) -> None:
    """Equal to float32 precision. The responses are finite differences over 2 delta = 0.02 of float32 shapes, so
    a worker with another thread count (another summation order) moves them by ~50x the shapes' rounding: an
    absolute 1e-6 (the untrained test network's R is ~1e-3)."""
    columns = columns or [c for c in reference.columns if c != "run_id"]
    response = [c for c in columns if c in RESPONSE_COLUMNS]
    others = [c for c in columns if c not in RESPONSE_COLUMNS]
    pd.testing.assert_frame_equal(frame[others], reference[others], rtol=1e-6)
    pd.testing.assert_frame_equal(frame[response], reference[response], rtol=1e-6, atol=1e-6)


def _run_args(field, checkpoint, out: Path, site: Path, *extra: str) -> list[str]:
    return [
        "--catalog", str(field.im3shape), "--gold", str(field.gold), "--images", f"tiles:{field.tiles_dir}",
        "--model", str(checkpoint), "--out", str(out), "--no-progress",
        "--set", f"cluster.jobqueue_config={site}", "--set", "cluster.dashboard_address=:0",
        "--set", f"output.partition_rows={PARTITION_ROWS}", *extra,
    ]


def _worker_job_ids(work: Path, name: str) -> set[str]:
    """Ids of the worker jobs dask-jobqueue submitted, from their log files (``<name>-<job id>.err``)."""
    return {p.stem.rsplit("-", 1)[1] for p in (work / "dask-logs").glob(f"{name}-*.err")}


def _cli(args: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
    from slurm_site import job_environment

    return subprocess.Popen([sys.executable, "-m", "survey_deblend", "run", *args], cwd=REPO,
                            env={**job_environment(), **(env or {})}, text=True, **kwargs)


def test_run_cluster_slurm_equals_a_local_run(small_field, checkpoint, local_frame, tmp_path):
    name = f"sd-run-{os.getpid()}"
    site = write_site_file(tmp_path / "site.yaml", tmp_path, name)
    out = tmp_path / "out"
    proc = _cli(["--cluster", "slurm", *_run_args(small_field, checkpoint, out, site,
                                                   "--set", "cluster.wait_for_workers_s=240")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    _assert_equal(_read(out), local_frame)
    jobs = _worker_job_ids(tmp_path, name)
    assert len(jobs) == 1, f"expected one worker job, saw {jobs}"
    assert "Starting Worker" in (tmp_path / "dask-logs" / f"{name}-{jobs.pop()}.err").read_text()


def _wait_for_first_marker(out: Path, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (out / "_done").is_dir() and any((out / "_done").glob("*.json")):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before any partition was done")
        time.sleep(0.05)
    raise AssertionError(f"no partition done within {timeout_s:.0f} s: the worker job never ran (see dask-logs)")


def test_worker_job_cancelled_mid_run_is_replaced_and_every_galaxy_written_once(
    small_field, checkpoint, local_frame, tmp_path
):
    name = f"sd-cancel-{os.getpid()}"
    site = write_site_file(tmp_path / "site.yaml", tmp_path, name)
    out = tmp_path / "out"
    args = _run_args(small_field, checkpoint, out, site, "--set", "output.partition_rows=3",
                     "--set", "model.measure_recon=false", "--set", "cluster.wait_for_workers_s=240")
    # the lost worker is noticed after distributed.deploy.lost-worker-timeout (15 s by default)
    proc = _cli(["--cluster", "slurm", *args], env={"DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "2s"},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_first_marker(out, proc, timeout_s=180)
        victims = jobs_named(name)
        assert len(victims) == 1, f"expected the one worker job running, squeue shows {victims}"
        subprocess.run(["scancel", victims[0]], check=True, timeout=15)
        done_at_cancel = len(list((out / "_done").glob("*.json")))
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            for job in jobs_named(name):
                subprocess.run(["scancel", job], timeout=15)
    assert proc.returncode == 0, stderr
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert done_at_cancel < manifest["n_partitions"], "the run finished before the cancel: the test proved nothing"
    assert f"slurm job {victims[0]} (worker " in stderr and "submitting a replacement" in stderr, stderr
    jobs = _worker_job_ids(tmp_path, name)
    assert victims[0] in jobs and len(jobs) == 2, f"expected the cancelled job and one replacement, saw {jobs}"
    frame = _read(out)
    assert len(frame) == len(local_frame)
    _assert_equal(frame, local_frame, ["coadd_objects_id", "status", "tile", *PREDICTIONS])


def test_elastic_pool_script_under_sbatch(small_field, checkpoint, local_frame, tmp_path):
    name = f"sd-pool-{os.getpid()}"
    site = write_site_file(tmp_path / "site.yaml", tmp_path, name)
    out = tmp_path / "out"
    job = sbatch(f"--partition={default_partition()}", "--time=10", f"--output={tmp_path}/pool-%j.out",
                 "cluster/elastic_pool.sh", "1", *_run_args(small_field, checkpoint, out, site))
    state, code = wait_for_job(job, timeout_s=300)
    pool_log = (tmp_path / f"pool-{job}.out").read_text()
    assert (state, code) == ("COMPLETED", "0:0"), pool_log
    _assert_equal(_read(out), local_frame)
    assert len(_worker_job_ids(tmp_path, name)) == 1


def test_single_allocation_script_under_sbatch(small_field, checkpoint, local_frame, tmp_path):
    out = tmp_path / "out"
    # the site's #SBATCH lines overridden for one 2-core node without GPUs: 3 ranks (scheduler, client, worker)
    job = sbatch(
        f"--partition={default_partition()}", "--nodes=1", "--ntasks=3", "--overcommit",
        "--cpus-per-task=1", "--gpus-per-task=0", "--mem=3G", "--time=10", f"--output={tmp_path}/alloc-%j.out",
        "cluster/single_allocation.sbatch",
        "--out", str(out), "--interface", "lo", "--scheduler-file", str(tmp_path / "scheduler-{job_id}.json"),
        "--set", f"catalog.shear={small_field.im3shape}", "--set", f"catalog.gold={small_field.gold}",
        "--set", f"images.source=tiles:{small_field.tiles_dir}", "--set", f"model.checkpoint={checkpoint}",
        "--set", f"output.partition_rows={PARTITION_ROWS}", "--set", "output.progress=false",
    )
    state, code = wait_for_job(job, timeout_s=300)
    log = (tmp_path / f"alloc-{job}.out").read_text()
    assert (state, code) == ("COMPLETED", "0:0"), log
    frame = _read(out)
    _assert_equal(frame, local_frame)
    assert np.isfinite(frame.loc[frame["status"] == "ok", "e1_pred"]).all()

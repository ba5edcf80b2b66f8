"""Inference asks for ``resources={"GPU": 1}`` when the cluster has GPU workers (CPU-only machine: the resource
is declared, as ``dask worker --resources GPU=1`` does on a GPU node; the Predictor itself runs on CPU here)."""

from __future__ import annotations

import io
import subprocess
import sys

import pandas as pd
from conftest import run_config
from distributed import Client, LocalCluster, get_task_stream

from survey_deblend.cluster import cluster_has_gpu_workers
from survey_deblend.pipeline import run
from survey_deblend.pipeline.plugin import PLUGIN_NAME


def _load_counts(client: Client) -> dict[str, int]:
    def count(dask_worker) -> int:
        plugin = dask_worker.plugins.get(PLUGIN_NAME)
        return plugin.load_count if plugin is not None else -1

    return client.run(count)


def test_inference_runs_only_on_gpu_workers_and_other_stages_anywhere(small_field, checkpoint, tmp_path):
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, resources={"GPU": 1}, dashboard_address=":0")
    client = Client(cluster)
    cpu_worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--nthreads", "1",
         "--no-dashboard", "--name", "cpu-only", "--no-nanny"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client.wait_for_workers(2, timeout=60)
        assert cluster_has_gpu_workers(client)
        workers = client.scheduler_info()["workers"]
        cpu_address = next(a for a, info in workers.items() if info["name"] == "cpu-only")
        gpu_address = next(a for a in workers if a != cpu_address)  # the LocalCluster's own worker
        with get_task_stream(client) as stream:
            summary = run(run_config(small_field, checkpoint, tmp_path / "out", "output.partition_rows=10",
                                     "model.measure_recon=false"), client, stream=io.StringIO())
        frame = pd.read_parquet(tmp_path / "out")
        assert len(frame) == summary.n_selected and frame["coadd_objects_id"].is_unique
        counts = _load_counts(client)
        assert counts[gpu_address] == 1  # the model went to the GPU worker, once
        assert counts[cpu_address] == 0  # plugin present, model never loaded: no inference task ran there
        stages = {}
        for task in stream.data:
            stages.setdefault(str(task["key"]).split("-")[0], set()).add(task["worker"])
        assert stages["predict"] == {gpu_address}
        assert cpu_address in stages["fetch"] | stages["write"]  # the CPU-only worker took the other stages
    finally:
        cpu_worker.terminate()
        try:
            cpu_worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cpu_worker.kill()
            cpu_worker.wait(timeout=10)
        client.close()
        cluster.close()

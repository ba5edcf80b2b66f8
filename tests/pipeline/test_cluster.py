"""Cluster kinds: clear errors, job scripts from cluster/*.yaml without a controller, a local cluster."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from survey_deblend.cluster import check_cluster_kind, cluster_has_gpu_workers, make_client, make_jobqueue_cluster
from survey_deblend.config.run import ClusterConfig
from survey_deblend.errors import ConfigError, SurveyDeblendError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["local", "local-cuda", "slurm", "pbs", "tcp://10.0.0.1:8786"])
def test_known_kinds_pass(kind):
    check_cluster_kind(kind)


@pytest.mark.parametrize("kind", ["kubernetes", "tcp://nohost", "slurmm"])
def test_unknown_kind_is_one_clear_line(kind):
    with pytest.raises(ConfigError) as info:
        check_cluster_kind(kind)
    assert "\n" not in str(info.value) and kind in str(info.value)


def _job_script(kind: str) -> str:
    """The batch script dask-jobqueue would submit with ``cluster/<kind>.yaml`` (no controller needed)."""
    cluster = make_jobqueue_cluster(
        ClusterConfig(kind=kind, jobqueue_config=REPO / "cluster" / f"{kind}.yaml", dashboard_address=":0")
    )
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def test_slurm_job_script_has_gpu_directives_and_resources():
    script = _job_script("slurm")
    assert "#SBATCH -p gpu" in script
    assert "#SBATCH -A my-project" in script
    assert "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH -t 04:00:00" in script
    assert "--resources GPU=1" in script
    assert "--nthreads 8" in script or "--nworkers 1 --nthreads 8" in script


def test_pbs_job_script_has_resource_spec_and_resources():
    script = _job_script("pbs")
    assert "#PBS -q gpu" in script
    assert "#PBS -A my-project" in script
    assert "#PBS -l select=1:ncpus=8:ngpus=1:mem=32GB" in script
    assert "--resources GPU=1" in script


def test_missing_jobqueue_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml not found"):
        make_jobqueue_cluster(ClusterConfig(kind="slurm", jobqueue_config=tmp_path / "nowhere.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobqueue:\n  pbs: {}\n")
    with pytest.raises(ConfigError, match="jobqueue.slurm"):
        make_jobqueue_cluster(ClusterConfig(kind="slurm", jobqueue_config=bad))


def test_local_cuda_without_dask_cuda_names_the_gpu_extra(monkeypatch):
    real_import = builtins.__import__

    def no_dask_cuda(name, *args, **kwargs):
        if name.startswith("dask_cuda"):
            raise ImportError("No module named 'dask_cuda'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask_cuda)
    with pytest.raises(SurveyDeblendError, match=r"survey-deblend\[gpu\]"):
        make_client(ClusterConfig(kind="local-cuda", dashboard_address=":0"))


def test_local_cluster_and_connecting_by_address():
    client, cluster = make_client(
        ClusterConfig(kind="local", n_workers=1, threads_per_worker=1, dashboard_address=":0")
    )
    try:
        assert len(client.scheduler_info()["workers"]) == 1
        assert not cluster_has_gpu_workers(client)
        # the package's dask defaults reached the worker processes (nanny pre-spawn environment)
        env = client.run(lambda: __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_", "unset"))
        assert list(env.values()) == ["unset"]
        other, none = make_client(ClusterConfig(kind=cluster.scheduler_address))
        try:
            assert none is None
            assert other.submit(sum, [1, 2, 3]).result() == 6
        finally:
            other.close()
    finally:
        client.close()
        cluster.close()


def test_unreachable_address_is_one_line():
    with pytest.raises(SurveyDeblendError, match="cannot connect to the scheduler at tcp://127.0.0.1:9"):
        make_client(ClusterConfig(kind="tcp://127.0.0.1:9", connect_timeout_s=1.0))


def test_local_cuda_gives_each_worker_the_gpu_resource(monkeypatch):
    """dask-cuda is mocked (no GPU here) by a LocalCluster that takes the same keywords."""
    import types

    from distributed import LocalCluster

    seen: dict = {}

    class FakeLocalCUDACluster(LocalCluster):
        def __init__(self, **kwargs):
            seen.update(kwargs)
            super().__init__(n_workers=1, processes=False, **kwargs)

    monkeypatch.setitem(__import__("sys").modules, "dask_cuda", types.SimpleNamespace(
        LocalCUDACluster=FakeLocalCUDACluster))
    client, cluster = make_client(ClusterConfig(kind="local-cuda", dashboard_address=":0"))
    try:
        assert seen["resources"] == {"GPU": 1} and seen["threads_per_worker"] == 1
        assert cluster_has_gpu_workers(client)
    finally:
        client.close()
        cluster.close()

"""Cluster kinds: clear errors, jobqueue settings merged through dask.config, a local cluster (SLURM: test_slurm)."""

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


@pytest.fixture
def dask_config():
    """Restore ``dask.config`` afterwards: a jobqueue file is merged into it for the life of the process."""
    import copy

    import dask.config
    import dask_jobqueue  # noqa: F401  (its defaults, merged on import, belong to the saved state)

    saved = copy.deepcopy(dask.config.config)
    yield dask.config
    dask.config.config.clear()
    dask.config.config.update(saved)


def _job_script(cfg: ClusterConfig) -> str:
    """The batch script dask-jobqueue would submit (the real submissions are in test_slurm.py)."""
    cluster = make_jobqueue_cluster(cfg)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_repository_files_are_jobqueue_configs_with_gpu_workers(kind, dask_config):
    script = _job_script(ClusterConfig(kind=kind, jobqueue_config=REPO / "cluster" / f"{kind}.yaml",
                                       dashboard_address=":0"))
    assert "--resources GPU=1" in script
    assert dask_config.get(f"jobqueue.{kind}.worker_extra_args") == ["--resources", "GPU=1"]


def test_site_file_wins_and_the_users_dask_config_fills_the_rest(dask_config, tmp_path, monkeypatch):
    dask_config.set({"jobqueue.slurm.walltime": "01:02:03", "jobqueue.slurm.cores": 5, "jobqueue.slurm.memory": "1GB"})
    site = tmp_path / "site.yaml"
    site.write_text("jobqueue:\n  slurm:\n    cores: 3\n    memory: 6GB\n    job_extra_directives: ['--qos=low']\n")
    monkeypatch.chdir(tmp_path)  # a relative path is relative to the current folder, like any path given
    script = _job_script(ClusterConfig(kind="slurm", jobqueue_config=Path("site.yaml"), dashboard_address=":0"))
    assert "#SBATCH -t 01:02:03" in script  # from the user's Dask configuration
    assert "#SBATCH --cpus-per-task=3" in script and "#SBATCH --mem=6G" in script  # the file over the user's
    assert "#SBATCH --qos=low" in script
    assert dask_config.get("jobqueue.slurm.job-extra-directives") == ["--qos=low"]  # dask's names, - or _


def test_no_file_uses_the_dask_configuration_alone(dask_config):
    dask_config.set({"jobqueue.pbs.cores": 2, "jobqueue.pbs.memory": "4GB", "jobqueue.pbs.queue": "short"})
    script = _job_script(ClusterConfig(kind="pbs", dashboard_address=":0"))
    assert "#PBS -q short" in script and "#PBS -l select=1:ncpus=2:mem=" in script


def test_jobqueue_settings_missing_or_wrong_are_one_line(dask_config, tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml not found"):
        make_jobqueue_cluster(ClusterConfig(kind="slurm", jobqueue_config=tmp_path / "nowhere.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobqueue:\n  pbs: {}\n")
    with pytest.raises(ConfigError, match="bad.yaml: missing the section 'jobqueue.slurm'"):
        make_jobqueue_cluster(ClusterConfig(kind="slurm", jobqueue_config=bad))
    bad.write_text("jobqueue: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        make_jobqueue_cluster(ClusterConfig(kind="slurm", jobqueue_config=bad))
    dask_config.set({"jobqueue.slurm.cores": None})
    with pytest.raises(ConfigError) as info:
        make_jobqueue_cluster(ClusterConfig(kind="slurm"))
    assert "jobqueue.slurm.cores: not set" in str(info.value) and "\n" not in str(info.value)


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

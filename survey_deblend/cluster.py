"""Creating or connecting to a Dask cluster: local CPU, local CUDA, SLURM/PBS (dask-jobqueue) or an address.

The pipeline never makes its own cluster (``pipeline.run(config, client)``); the CLI calls ``make_client`` with
``--cluster`` and closes what it made. GPU workers carry the resource ``GPU=1`` so that inference tasks can ask
for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from distributed import Client, LocalCluster

from survey_deblend.config.run import ClusterConfig
from survey_deblend.errors import ConfigError, SurveyDeblendError

JOBQUEUE_KINDS = ("slurm", "pbs")
KINDS = ("local", "local-cuda", *JOBQUEUE_KINDS)
GPU_EXTRA_HINT = "pip install 'survey-deblend[gpu]'"


def check_cluster_kind(kind: str) -> None:
    """Raise a one-line ConfigError unless ``kind`` is a known cluster kind or a ``tcp://host:port`` address."""
    if kind in KINDS:
        return
    if kind.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        host, _, port = kind.split("://", 1)[1].rpartition(":")
        if host and port.isdigit():
            return
        raise ConfigError(f"cluster.kind: scheduler address '{kind}' must look like tcp://host:port")
    raise ConfigError(f"cluster.kind: unknown cluster kind '{kind}' (expected {', '.join(KINDS)} or tcp://host:port)")


def default_jobqueue_config(kind: str) -> Path:
    """``cluster/<kind>.yaml`` in the current folder: where the repository keeps the site settings."""
    return Path("cluster") / f"{kind}.yaml"


def read_jobqueue_config(kind: str, path: Path | None) -> dict[str, Any]:
    """The ``jobqueue.<kind>`` section of a dask-jobqueue YAML file, as keyword arguments of its cluster class."""
    path = Path(path) if path is not None else default_jobqueue_config(kind)
    if not path.is_file():
        raise ConfigError(f"cluster.jobqueue_config: {path} not found (copy cluster/{kind}.yaml and edit it)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    section = data.get("jobqueue", {}).get(kind) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: missing the section 'jobqueue.{kind}'")
    return {str(key).replace("-", "_"): value for key, value in section.items() if value is not None}


def make_jobqueue_cluster(cfg: ClusterConfig) -> Any:
    """A SLURMCluster or PBSCluster configured from ``cluster/<kind>.yaml``; no job is submitted yet.

    The file's keys are dask-jobqueue's own; keys it leaves out fall back to the user's Dask configuration.
    """
    settings = read_jobqueue_config(cfg.kind, cfg.jobqueue_config)
    import dask_jobqueue

    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[cfg.kind]
    try:
        return cls(scheduler_options={"dashboard_address": cfg.dashboard_address}, **settings)
    except (ValueError, TypeError) as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(f"{cfg.jobqueue_config or default_jobqueue_config(cfg.kind)}: {first_line}") from None


def _local_cuda_cluster(cfg: ClusterConfig) -> Any:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise SurveyDeblendError(f"--cluster local-cuda needs dask-cuda, the 'gpu' extra: {GPU_EXTRA_HINT}") from None
    return LocalCUDACluster(
        dashboard_address=cfg.dashboard_address,
        threads_per_worker=cfg.threads_per_worker or 1,
        resources={"GPU": 1},
    )


def make_client(cfg: ClusterConfig) -> tuple[Client, Any | None]:
    """A Client for ``cfg.kind`` and the cluster object it created (None when connecting to an address).

    The caller closes both (client first). A LocalCluster is sized to the machine unless ``n_workers`` /
    ``threads_per_worker`` say otherwise; its workers are processes, so the package's Dask settings apply.
    """
    check_cluster_kind(cfg.kind)
    if cfg.kind == "local":
        cluster = LocalCluster(
            n_workers=cfg.n_workers,
            threads_per_worker=cfg.threads_per_worker,
            processes=True,
            memory_limit=cfg.memory_limit,
            dashboard_address=cfg.dashboard_address,
        )
        return Client(cluster), cluster
    if cfg.kind == "local-cuda":
        cluster = _local_cuda_cluster(cfg)
        return Client(cluster), cluster
    if cfg.kind in JOBQUEUE_KINDS:
        cluster = make_jobqueue_cluster(cfg)
        cluster.scale(jobs=cfg.jobs)
        client = Client(cluster)
        try:
            client.wait_for_workers(1, timeout=cfg.wait_for_workers_s)
        except TimeoutError:
            client.close()
            cluster.close()
            raise SurveyDeblendError(
                f"no {cfg.kind} worker started within {cfg.wait_for_workers_s:.0f} s (check the queue and "
                f"{cfg.jobqueue_config or default_jobqueue_config(cfg.kind)})"
            ) from None
        return client, cluster
    try:
        client = Client(cfg.kind, timeout=cfg.connect_timeout_s)
    except (OSError, TimeoutError) as exc:
        raise SurveyDeblendError(f"cannot connect to the scheduler at {cfg.kind}: {exc}") from None
    return client, None


def cluster_has_gpu_workers(client: Client) -> bool:
    """True when at least one worker advertises the ``GPU`` resource (then inference asks for it)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return any(info.get("resources", {}).get("GPU", 0) > 0 for info in workers.values())


class open_client:  # lower case: used like a function, as contextlib.closing is
    """``with open_client(cfg) as client:``: ``make_client``, then on leaving the client closed and then the
    cluster it made (none when it connected to an address). The one place a client and cluster are shut down.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.client: Client | None = None
        self.cluster: Any | None = None

    def __enter__(self) -> Client:
        self.client, self.cluster = make_client(self.cfg)
        return self.client

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.client is not None:
                self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

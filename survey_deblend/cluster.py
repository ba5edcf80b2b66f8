"""Creating or connecting to a Dask cluster: local CPU, local CUDA, SLURM/PBS (dask-jobqueue) or an address.

The pipeline never makes its own cluster (``pipeline.run(config, client)``); the CLI calls ``make_client`` with
``--cluster`` and closes what it made. GPU workers carry the resource ``GPU=1`` so that inference tasks can ask
for it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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


def merge_jobqueue_config(kind: str, path: Path | None) -> None:
    """Merge the site file ``path`` (if any) into ``dask.config``, as if it lay in ``~/.config/dask``.

    dask-jobqueue reads every setting from ``dask.config`` (``jobqueue.<kind>.<key>``), also when it later submits
    a job, so the file's keys land there for the life of the process; keys it leaves out keep the user's Dask
    configuration. A relative ``path`` is relative to the current folder, like every path on the command line.
    """
    import dask.config
    import dask_jobqueue  # noqa: F401  (importing it merges dask-jobqueue's own defaults)

    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"cluster.jobqueue_config: {path} not found (copy cluster/{kind}.yaml and edit it)")
        try:
            data = next(iter(dask.config.collect_yaml([str(path)])), None) or {}
        except ValueError:
            raise ConfigError(f"{path}: not valid YAML (a mapping with the section 'jobqueue.{kind}')") from None
        section = data.get("jobqueue", {}).get(kind) if isinstance(data.get("jobqueue"), dict) else None
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: missing the section 'jobqueue.{kind}'")
        dask.config.update(dask.config.config, data)
    for key in ("cores", "memory"):
        if dask.config.get(f"jobqueue.{kind}.{key}", None) is None:
            where = path or "the Dask configuration"
            raise ConfigError(
                f"jobqueue.{kind}.{key}: not set in {where} (--set cluster.jobqueue_config=FILE, "
                f"a copy of cluster/{kind}.yaml, or put it in ~/.config/dask/jobqueue.yaml)"
            )


def make_jobqueue_cluster(cfg: ClusterConfig) -> Any:
    """A SLURMCluster or PBSCluster configured through ``dask.config``; no job is submitted yet."""
    import dask.config
    import dask_jobqueue

    merge_jobqueue_config(cfg.kind, cfg.jobqueue_config)
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[cfg.kind]
    scheduler_options = dict(dask.config.get(f"jobqueue.{cfg.kind}.scheduler-options", None) or {})
    scheduler_options.setdefault("dashboard_address", cfg.dashboard_address)
    try:
        return cls(scheduler_options=scheduler_options)
    except (ValueError, TypeError) as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(f"{cfg.jobqueue_config or f'jobqueue.{cfg.kind}'}: {first_line}") from None


def keep_jobs(cluster: Any, kind: str, period_s: float = 5.0) -> None:
    """Resubmit a batch job whose worker left (``scancel``, walltime, node failure), saying so on stderr.

    dask-jobqueue drops such a job from ``cluster.workers`` (after ``distributed.deploy.lost-worker-timeout``)
    but keeps it in the plan, so neither ``scale`` nor ``adapt`` notices; ``scale`` to the same plan submits it anew.
    """
    from tornado.ioloop import PeriodicCallback

    seen: dict[str, str] = {}  # worker name -> batch job id, of every job that got as far as being submitted

    def check() -> None:
        if cluster.status.name != "running":
            return
        for name in set(seen) - set(cluster.worker_spec):  # scaled down on purpose: not lost
            del seen[name]
        lost = sorted(set(seen) - set(cluster.workers))
        seen.update({name: str(getattr(job, "job_id", "?")) for name, job in cluster.workers.items()})
        for name in lost:
            print(f"survey-deblend: {kind} job {seen.pop(name)} (worker {name}) ended before the run did; "
                  "submitting a replacement", file=sys.stderr, flush=True)
        if lost:
            cluster.scale(jobs=len(cluster.worker_spec))

    callback = PeriodicCallback(check, period_s * 1000)
    cluster.periodic_callbacks["survey-deblend-keep-jobs"] = callback
    cluster.loop.add_callback(callback.start)


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
        keep_jobs(cluster, cfg.kind)
        client = Client(cluster)
        try:
            client.wait_for_workers(1, timeout=cfg.wait_for_workers_s)
        except TimeoutError:
            client.close()
            cluster.close()
            raise SurveyDeblendError(
                f"no {cfg.kind} worker started within {cfg.wait_for_workers_s:.0f} s (check the queue, the job "
                f"logs and {cfg.jobqueue_config or f'jobqueue.{cfg.kind} in the Dask configuration'})"
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

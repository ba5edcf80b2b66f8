"""The worker plugin that keeps one Predictor per Dask worker, loaded on first use and never once per task.

Loading on first use (under a lock) means workers that never run an inference task (CPU workers of a mixed
cluster) never load the model; ``load_count`` lets tests check "once per worker".
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin, get_worker

PLUGIN_NAME = "survey-deblend-predictor"


class PredictorPlugin(WorkerPlugin):
    """Holds the checkpoint settings; the Predictor itself is built on the worker."""

    name = PLUGIN_NAME

    def __init__(self, checkpoint: str | Path | None, device: str | None = None, bf16: bool = False,
                 compile: bool = False, model_id: str | None = None, batch_size: int | None = None):
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.batch_size = batch_size  # the run's ``model.batch_size`` (None: the Predictor's default)
        self.model_id = model_id  # the file hash: a rewritten checkpoint at the same path is a new model
        self.device = device
        self.bf16 = bf16
        self.compile = compile
        self._predictor: Any = None
        self._lock = threading.Lock()
        self.load_count = 0
        self._nthreads = 1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_predictor"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def settings(self) -> tuple:
        """What determines the Predictor; a run re-registers the plugin only when these differ."""
        return (self.checkpoint, self.model_id, self.device, self.bf16, self.compile, self.batch_size)

    def setup(self, worker: Any) -> None:
        self._nthreads = max(1, int(getattr(worker.state, "nthreads", 1)))

    @property
    def predictor(self) -> Any:
        """The worker's Predictor, built the first time a task asks for it."""
        if self._predictor is None:
            with self._lock:
                if self._predictor is None:
                    import torch

                    from survey_deblend.inference import Predictor

                    # One torch thread per Dask thread: several workers on one machine must not oversubscribe.
                    torch.set_num_threads(self._nthreads)
                    options = {} if self.batch_size is None else {"batch_size": int(self.batch_size)}
                    self._predictor = Predictor.from_checkpoint(
                        self.checkpoint, device=self.device, bf16=self.bf16, compile=self.compile, **options
                    )
                    self.load_count += 1
        return self._predictor


def _worker_plugin_settings(dask_worker: Any) -> tuple | None:
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    return plugin.settings() if plugin is not None else None


def ensure_plugin(client: Any, plugin: PredictorPlugin) -> bool:
    """Register ``plugin`` unless every worker already holds one with the same settings (which keeps a loaded
    model across runs on one cluster: re-registering would tear it down). Returns True when it registered."""
    current = client.run(_worker_plugin_settings)
    if current and all(value == plugin.settings() for value in current.values()):
        return False
    client.register_plugin(plugin, name=PLUGIN_NAME)
    return True


def worker_predictor() -> Any:
    """The Predictor of the current worker (raises RuntimeError outside a worker or without the plugin)."""
    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if plugin is None:
        raise RuntimeError(f"worker {worker.address} has no {PLUGIN_NAME} plugin (register it before submitting)")
    return plugin.predictor

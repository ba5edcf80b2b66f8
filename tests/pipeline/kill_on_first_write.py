"""Deterministic kills for the reliability tests: act the moment the first partition's write task finishes.

``KillOnFirstWrite`` is a Dask scheduler plugin; its ``transition`` hook sees the first task that writes a part
(``write-*`` of the GPU chain, or the fused ``partition-*`` task of CPU workers) reach
``memory`` (its Parquet file renamed into place and its ``_done/`` marker written, both inside the task), so the
kill never races a polling loop: it happens exactly then, while the other partitions are still to do.

As a scheduler preload (``DASK_DISTRIBUTED__SCHEDULER__PRELOAD`` naming this file) it SIGKILLs the whole
process group of a ``survey-deblend run`` started in its own session: the client and its cluster, all at once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

WRITE_PREFIX = ("write-", "partition-")  # the task kinds that write a part file (run.py's keys)


class KillOnFirstWrite(SchedulerPlugin):
    """Call ``action(scheduler)`` once, when the first write task finishes; record how many writes were done."""

    name = "kill-on-first-write"

    def __init__(self, scheduler: Any, action: Callable[[Any], None]) -> None:
        self.scheduler = scheduler
        self.action = action
        self.writes_done_at_kill: int | None = None

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if self.writes_done_at_kill is not None or finish != "memory" or not str(key).startswith(WRITE_PREFIX):
            return
        self.writes_done_at_kill = sum(
            1 for k, ts in self.scheduler.tasks.items() if str(k).startswith(WRITE_PREFIX) and ts.state == "memory"
        )
        self.action(self.scheduler)


def kill_busiest_worker(scheduler: Any) -> int:
    """SIGKILL the worker with the most tasks in hand (its work is lost mid-flight); returns its pid."""
    victim = max(scheduler.workers.values(), key=lambda ws: len(ws.processing))
    os.kill(victim.pid, signal.SIGKILL)
    return victim.pid


def _kill_own_process_group(scheduler: Any) -> None:
    if os.getpgrp() == os.getpid():  # only a process started in its own session: never the test runner's group
        os.killpg(os.getpgrp(), signal.SIGKILL)


def dask_setup(scheduler: Any) -> None:
    """Scheduler preload entry point: kill this run's process group at its first finished partition."""
    scheduler.add_plugin(KillOnFirstWrite(scheduler, _kill_own_process_group))

"""The window of partitions in flight, fed by a plan made up front or by a staging stream (``pipeline.stream``).

One ``as_completed`` loop takes both kinds of future: a finished partition frees a place in the window, which is
refilled from the queue of planned partitions; a finished staging task may launch joins and plan the partitions of
a joined ID range, which join the queue. The scheduler thus holds the staging tasks and at most ``window``
partitions, and the first partitions run while later ranges are still being staged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distributed import as_completed, wait

from survey_deblend.pipeline.plan import ResumePlan
from survey_deblend.pipeline.progress import ProgressLine

WINDOW_PER_THREAD = 2  # partitions in flight per worker thread
WINDOW_MIN = 4


def in_flight_window(client: Any) -> int:
    """Partitions in flight at once: two per worker thread (one running, one queued), at least 4."""
    threads = sum(client.nthreads().values()) if client.scheduler_info().get("workers") else 0
    return max(WINDOW_MIN, WINDOW_PER_THREAD * threads)


@dataclass
class WindowResult:
    """What the window did: every partition planned (what ``verify_output`` checks), how many were already done,
    the summed stage seconds of the fused tasks and a line per failed partition (the others are kept)."""

    planned: list = field(default_factory=list)
    n_resumed: int = 0
    stage_s: dict[str, float] = field(default_factory=lambda: {"fetch_s": 0.0, "predict_s": 0.0, "write_s": 0.0})
    failures: list[str] = field(default_factory=list)


def run_window(
    client: Any, submit: Callable[[Any], Any], todo: list, stream: Any, plan: ResumePlan, progress: ProgressLine,
    on_selected: Callable[[Any], None] | None = None,
) -> WindowResult:
    """Run the partitions of ``todo`` (the client's plan) or of ``stream`` (a ``StagingStream``; ``on_selected``
    gets its selection once everything is staged) through a window of ``in_flight_window`` partitions.

    ``submit(partition)`` returns the future whose result is the part's info (``n_rows`` and stage seconds).
    A partition whose done-marker exists is skipped. A staging error is raised once the partitions in flight
    have finished (finished parts are kept, a re-run resumes).
    """
    result = WindowResult()
    done = plan.done()
    queue: deque = deque()
    in_flight: dict[Any, Any] = {}
    window = in_flight_window(client)
    running = as_completed()

    def add(partitions: list) -> None:
        result.planned.extend(partitions)
        progress.n_partitions += len(partitions)
        progress.n_galaxies += sum(p.n_rows for p in partitions)
        for partition in partitions:
            info = done.get(partition.partition_id)
            if info is None:
                queue.append(partition)
            else:
                result.n_resumed += 1
                progress.update(galaxies=int(info.get("n_rows", 0)))

    def finished(future: Any) -> None:
        partition = in_flight.pop(future)
        try:
            info = future.result()
        except Exception as exc:  # report every failed partition at the end, keep the finished ones
            result.failures.append(f"partition {partition.partition_id}: {type(exc).__name__}: {exc}")
        else:
            progress.update(galaxies=int(info["n_rows"]))
            for name in result.stage_s:
                result.stage_s[name] += float(info.get(name, 0.0))
        future.release()

    def drain() -> None:
        wait(list(in_flight))
        for future in list(in_flight):
            finished(future)

    add(todo)
    if stream is not None:
        futures, partitions = stream.start()
        running.update(futures)
        add(partitions)
        if stream.selection is not None and on_selected is not None:
            on_selected(stream.selection)
            on_selected = None

    def fill() -> None:
        while len(in_flight) < window and queue:
            partition = queue.popleft()
            future = submit(partition)
            in_flight[future] = partition
            running.add(future)

    fill()
    for future in running:
        if future in in_flight:
            finished(future)
        elif stream is not None and stream.owns(future):
            try:
                futures, partitions = stream.on_done(future)
            except Exception:
                stream.cancel()
                drain()
                raise
            running.update(futures)
            if stream.take_restart():  # the catalog is not sorted after all: what was written so far goes
                drain()
                queue.clear()
                result.planned.clear()
                result.failures.clear()  # of partitions that are thrown away
                result.n_resumed = 0
                progress.reset()
                plan.remove_parts()
                done.clear()
            add(partitions)
            if stream.selection is not None and on_selected is not None:
                on_selected(stream.selection)
                on_selected = None
        fill()
    return result

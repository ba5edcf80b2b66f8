"""The run graph: the source ships to each worker once, the tile choice is made once by the planner, the stamps
stay on the worker that cut them (one fused task per partition on CPU workers), and the window of partitions
in flight stays bounded."""

from __future__ import annotations

import io
import os

import pandas as pd
from conftest import run_config
from counting_source import CountingTileSource, log_lines
from distributed.diagnostics.plugin import SchedulerPlugin

from survey_deblend.pipeline import run
from survey_deblend.pipeline.run import WINDOW_MIN, in_flight_window


class PeakPartitions(SchedulerPlugin):
    """The most partition tasks the scheduler held at once."""

    name = "peak-partitions"

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self.peak = 0

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        held = sum(1 for k in self.scheduler.tasks if str(k).startswith("partition-"))
        self.peak = max(self.peak, held)


def test_source_ships_once_per_worker_and_tiles_are_chosen_once(small_field, checkpoint, client, tmp_path):
    log = tmp_path / "source.log"
    source = CountingTileSource(small_field.tiles_dir, log)
    out = tmp_path / "out"
    config = run_config(small_field, checkpoint, out, "output.partition_rows=4", "model.measure_recon=false")
    scheduler = client.cluster.scheduler
    counter = PeakPartitions(scheduler)
    scheduler.add_plugin(counter)
    try:
        summary = run(config, client, stream=io.StringIO(), source=source)
    finally:
        scheduler.remove_plugin(name=counter.name)
    assert summary.n_partitions >= 20  # many tasks, so "once per task" and "once per worker" differ
    # a window, not every partition: finished tasks linger until their release reaches the scheduler, so the
    # scheduler may briefly hold a few more than the window, never a number that grows with the partitions
    window = in_flight_window(client)
    assert 1 <= counter.peak <= 2 * window < summary.n_partitions, (counter.peak, window, summary.n_partitions)
    events = log_lines(log)
    workers = set(client.run(os.getpid).values())
    unpickled = [pid for event, pid in events if event == "unpickle"]
    # once per worker, plus once by the scheduler (it unpickles the graph; on a LocalCluster it is this process)
    places = workers | {os.getpid()}
    assert unpickled and set(unpickled) <= places
    assert len(unpickled) <= len(places), f"source unpickled {len(unpickled)} times in {len(places)} processes"
    planned = [pid for event, pid in events if event == "plan"]
    assert planned == [os.getpid()], f"tiles chosen by {planned} (the planner is {os.getpid()})"
    frame = pd.read_parquet(out)
    assert len(frame) == summary.n_selected and frame["coadd_objects_id"].is_unique


def test_fused_and_chained_graphs_write_the_same_rows(small_field, checkpoint, client, tmp_path):
    """The GPU chain (fetch -> predict -> write) and the fused CPU task give the same Parquet."""
    frames = []
    for fuse in (True, False):
        out = tmp_path / f"out-{fuse}"
        config = run_config(small_field, checkpoint, out, "model.measure_recon=false")
        run(config, client, stream=io.StringIO(), fuse=fuse)
        frames.append(pd.read_parquet(out).sort_values("coadd_objects_id").drop(columns="run_id")
                      .reset_index(drop=True))
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_window_is_a_few_partitions_per_worker_thread(client):
    threads = sum(client.nthreads().values())
    assert in_flight_window(client) == max(WINDOW_MIN, 2 * threads)

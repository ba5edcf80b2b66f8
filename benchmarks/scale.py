"""What the client and the scheduler hold as the catalog grows: ``survey-deblend run`` on synthetic SVA1 catalogs.

For each size (1 M, 10 M, 100 M rows; ``--quick`` stops at 10 M) the im3shape and gold catalogs are written once
(FITS, SVA1 schema, streamed chunk by chunk by ``catalog.synthetic.write_catalogs_streamed``, so 100 M rows never
sit in memory) and kept in ``--workdir`` (``--delete-after`` removes each size's files once measured); then the
run goes in a fresh process (so the client's peak RSS is its own) on a LocalCluster of 2 single-thread workers.
Catalogs of at least ``output.stage_min_rows`` rows (``--stage-min-rows``; default the configuration's) are
selected by the workers into the output's staging area (``pipeline.stream``; these catalogs are sorted by ID, so
the partitions of the first ID ranges run while the rest is staged: ``streamed``), smaller ones on the client.
ONLY IN THIS BENCHMARK the cutouts and the inference are replaced by trivial stand-ins (``scale_parts.py``: 1-pixel zero
stamps, NaN predictions), so the figures are those of selection, planning, the scheduler and the client, not of
the model. Prints one JSON line per size with ``client_peak_rss_mb`` (the client process, which on a
LocalCluster also hosts the scheduler), ``scheduler_peak_tasks``, ``first_partition_s`` (start of ``run`` to the
first finished partition), ``plan_rows_per_s`` (selected rows / seconds of planning); the last line is the
largest size run.

    python benchmarks/scale.py --workdir /tmp/scale-work --quick     # 1 M and 10 M rows
    python benchmarks/scale.py --workdir /tmp/scale-work             # and 100 M (about 21 GB of FITS)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = (1_000_000, 10_000_000, 100_000_000)
PARTITION_ROWS = 20_000


def catalogs(workdir: Path, n: int) -> dict:
    """The catalogs of ``n`` random rows, written once (a marker file says they are complete)."""
    from survey_deblend.catalog.synthetic import write_catalogs_streamed

    folder = workdir / f"catalog-{n}"
    done = folder / "complete.json"
    if not done.is_file():
        t0 = time.perf_counter()
        paths = write_catalogs_streamed(folder, n=n, seed=0)
        peak_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # its own process
        done.write_text(json.dumps({"im3shape": str(paths["im3shape"]), "gold": str(paths["gold"]),
                                    "write_s": round(time.perf_counter() - t0, 1), "write_peak_rss_mb": peak_mb}))
    return json.loads(done.read_text())


class TaskCounter:
    """Scheduler plugin: the most tasks the scheduler held at once, and when the first partition finished."""

    name = "scale-task-counter"

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self.peak = 0
        self.first_done: float | None = None

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        self.peak = max(self.peak, len(self.scheduler.tasks))
        if self.first_done is None and finish == "memory" and str(key).startswith(("partition-", "write-")):
            self.first_done = time.perf_counter()


class RssSampler(threading.Thread):
    """This process's resident memory every half second, to say when the peak came (which phase of the run)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []  # (perf_counter, MB)
        self.done = threading.Event()

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self.done.wait(0.5):
            with open("/proc/self/statm") as handle:
                self.samples.append((time.perf_counter(), int(handle.read().split()[1]) * page / 2**20))

    def peak_at(self, t0: float) -> float | None:
        """Seconds from ``t0`` to the largest sample."""
        return round(max(self.samples, key=lambda s: s[1])[0] - t0, 1) if self.samples else None

    def at(self, when: float) -> float | None:
        """The last sample before ``when`` (MB)."""
        before = [mb for t, mb in self.samples if t <= when]
        return round(before[-1]) if before else None


def _streamed(out: Path) -> bool:
    """Whether the run's staging streamed (ID-sorted catalogs: partitions planned per group of ID ranges)."""
    from survey_deblend.pipeline.plan import STAGING_DIR
    from survey_deblend.pipeline.staging import SUMMARY_NAME

    summary = out / STAGING_DIR / SUMMARY_NAME
    return summary.is_file() and bool(json.loads(summary.read_text()).get("per_range"))


def one_size(workdir: Path, n: int, stage_min_rows: int | None = None) -> dict:
    """One run over the catalogs of ``n`` rows in this process; the figures of the issue."""
    sys.path.insert(0, str(HERE))
    from distributed.diagnostics.plugin import SchedulerPlugin
    from scale_parts import NoPixelSource, NullPlugin

    from survey_deblend.cluster import open_client
    from survey_deblend.config import load
    from survey_deblend.config.run import ClusterConfig, RunConfig
    from survey_deblend.models.checkpoint import write_untrained_checkpoint
    from survey_deblend.pipeline import run

    paths = catalogs(workdir, n)
    checkpoint = workdir / "untrained.pt"  # checked at the edge like any run's; never loaded (NullPlugin)
    if not checkpoint.is_file():
        write_untrained_checkpoint(checkpoint)
    config = load(RunConfig, None, [
        f"catalog.shear={paths['im3shape']}", f"catalog.gold={paths['gold']}", f"model.checkpoint={checkpoint}",
        f"output.out={workdir / f'out-{n}'}", f"output.partition_rows={PARTITION_ROWS}", "output.overwrite=true",
        "output.progress=false", "model.measure_recon=false", "model.stamp_size_pix=3", "images.source=tiles:/none",
        "model.metacal=false",  # stamps of no pixels: nothing to calibrate (the trivial inference)
        *([f"output.stage_min_rows={stage_min_rows}"] if stage_min_rows is not None else []),
    ])
    with open_client(ClusterConfig(n_workers=2, threads_per_worker=1, dashboard_address=":0")) as client:
        scheduler = client.cluster.scheduler
        counter = type("Counter", (TaskCounter, SchedulerPlugin), {})(scheduler)
        scheduler.add_plugin(counter)
        sampler = RssSampler()
        sampler.start()
        t0 = time.perf_counter()
        summary = run(config, client, stream=io.StringIO(), source=NoPixelSource(), plugin=NullPlugin())
        seconds = time.perf_counter() - t0
        sampler.done.set()
    return {
        "n_rows": n, "n_selected": summary.n_selected, "n_partitions": summary.n_partitions,
        "client_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "client_rss_peak_at_s": sampler.peak_at(t0),
        "client_rss_after_select_mb": sampler.at(t0 + summary.timings["select_s"] + summary.timings["plan_s"]),
        "scheduler_peak_tasks": counter.peak,
        "first_partition_s": round(counter.first_done - t0, 2) if counter.first_done else None,
        "plan_rows_per_s": round(summary.n_selected / max(summary.timings["plan_s"], 1e-9)),
        "select_s": round(summary.timings["select_s"], 2),
        "select_cpu_s": round(summary.timings["select_cpu_s"], 2), "plan_s": round(summary.timings["plan_s"], 2),
        "verify_s": round(summary.timings["verify_s"], 2), "total_s": round(seconds, 1),
        "staged": n >= config.output.stage_min_rows, "streamed": _streamed(workdir / f"out-{n}"),
        "catalog_write_s": paths["write_s"],
        "catalog_write_peak_rss_mb": paths.get("write_peak_rss_mb"), "load_avg_1m": round(os.getloadavg()[0], 2),
        "inference": "trivial stand-in (benchmarks/scale_parts.py): NaN predictions, 1-pixel zero stamps",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="stop at 10 M rows")
    parser.add_argument("--workdir", type=Path, default=Path("scale-work"))
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="row counts (default 1 M, 10 M, 100 M)")
    parser.add_argument("--stage-min-rows", type=int, default=None,
                        help="output.stage_min_rows of the runs (default: the configuration's)")
    parser.add_argument("--delete-after", action="store_true", help="remove each size's catalogs and output once run")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child: run one size here
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.one is not None:
        print(json.dumps(one_size(args.workdir, args.one, args.stage_min_rows)), flush=True)
        return 0
    sizes = args.sizes or [n for n in SIZES if not (args.quick and n > 10_000_000)]
    for n in sizes:
        # the catalogs are written by a process of their own, so the run's process measures only the run
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); import scale; "
                        f"scale.catalogs(__import__('pathlib').Path({str(args.workdir)!r}), {n})"], check=True)
        extra = [] if args.stage_min_rows is None else ["--stage-min-rows", str(args.stage_min_rows)]
        child = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--workdir", str(args.workdir),
                                "--one", str(n), *extra], check=True, capture_output=True, text=True)
        print(child.stdout.strip().splitlines()[-1], flush=True)
        if args.delete_after:
            shutil.rmtree(args.workdir / f"catalog-{n}", ignore_errors=True)
            shutil.rmtree(args.workdir / f"out-{n}", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

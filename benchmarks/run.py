"""End-to-end throughput of ``survey-deblend run`` (catalog -> Parquet) on the demo field with tile cutouts.

Same run, same cores, side by side in one process: one plain process calling the same stage functions in a
loop, the Dask pipeline on a LocalCluster of 1 worker (2 threads) and on one of 2 workers (1 thread each), each
with fused partition tasks (fetch -> predict -> write in one task, what a CPU cluster runs), and the 2 workers
with the three-task chain (``fuse=False``: what a GPU cluster runs, and what every run did before). Both clusters
start once and do a warm-up run (workers import torch and load the model once, as on a long job); then
``--rounds`` rounds run the four settings one after the other, and the figures are medians over rounds (on a
shared, loaded machine the load changes within minutes; interleaving spreads it over every setting).
Prints one JSON line per setting of ``model.measure_recon`` and ``model.metacal`` with the keys ``galaxies_per_s_1w``,
``galaxies_per_s_2w``, ``galaxies_per_s_2w_chain``, ``single_process_galaxies_per_s``, ``dask_overhead_frac``
((t_1w - t_single) / t_single), ``peak_worker_rss_mb``, the machine's load, and ``stages``: seconds per stage
(plain loop: fetch, preprocess, model, write from timers; Dask: compute and transfer seconds per task kind from
the task stream, summed over workers, and the wall time). A last line (``"benchmark": "run_metacal"``) puts
metacalibration on and off side by side (``measure_recon`` off): ``galaxies_per_s_2w_mcal_on``,
``galaxies_per_s_2w_mcal_off``, ``galaxies_per_s_1w_mcal_on``, ``galaxies_per_s_1w_mcal_off``,
``single_process_galaxies_per_s_mcal_on``, ``single_process_galaxies_per_s_mcal_off`` and ``mcal_cost_factor``
(2-worker seconds on / off).

    python benchmarks/run.py            # full: a 4-tile field (--tiles N --tile-size P for a larger one)
    python benchmarks/run.py --quick    # the 2-tile demo field, < 1 minute once the field exists
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def field_paths(workdir: Path, n_tiles: int, tile_size: int):
    from survey_deblend.sim.field import make_des_field

    field_dir = workdir / f"field-{n_tiles}x{tile_size}"
    done = field_dir / "complete.json"
    if not done.is_file():
        paths = make_des_field(field_dir, n_tiles=n_tiles, tile_size_pix=tile_size, seed=0)
        done.write_text(json.dumps({"im3shape": str(paths.im3shape), "gold": str(paths.gold),
                                    "tiles": str(paths.tiles_dir)}))
    return json.loads(done.read_text())


def make_config(field: dict, checkpoint: Path, out: Path, measure_recon: bool, metacal: bool = True):
    from survey_deblend.config import load
    from survey_deblend.config.run import RunConfig

    return load(RunConfig, None, [
        f"catalog.shear={field['im3shape']}", f"catalog.gold={field['gold']}", f"images.source=tiles:{field['tiles']}",
        f"model.checkpoint={checkpoint}", f"output.out={out}", "output.partition_rows=500",
        "output.overwrite=true", "output.progress=false", f"model.measure_recon={str(measure_recon).lower()}",
        f"model.metacal={str(metacal).lower()}",
    ])


class _Timed:
    """A wrapper adding the seconds spent in ``fn`` to ``totals[name]`` (stage timers of the plain loop)."""

    def __init__(self, fn, totals: dict, name: str):
        self.fn, self.totals, self.name = fn, totals, name

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.totals[self.name] = self.totals.get(self.name, 0.0) + time.perf_counter() - t0


def single_process(config, predictor) -> tuple[float, int, dict]:
    """The same stages in one plain process: select, plan (the source's tile choice), then fetch/predict/write
    per partition, verify; returns seconds, galaxies and seconds per stage."""
    from survey_deblend.catalog import select_galaxies
    from survey_deblend.cutouts import open_source
    from survey_deblend.pipeline.plan import ResumePlan
    from survey_deblend.pipeline.run import plan_run, verify_output
    from survey_deblend.pipeline.tasks import fetch_partition, predict_partition, write_partition
    from survey_deblend.schema import CATALOG_COLUMNS

    stages: dict[str, float] = {}
    out = Path(config.output.out)
    t0 = time.perf_counter()
    ResumePlan(out).reset()
    out.mkdir(parents=True, exist_ok=True)
    table = select_galaxies(config.catalog).table.reset_index(drop=True)
    stages["select"] = time.perf_counter() - t0
    source = open_source(config.images.source, config.images)
    size = predictor.source_stamp_size(source.pixel_scale_arcsec)
    partitions, choice = _Timed(plan_run, stages, "plan")(source, table, size, config.output.partition_rows)
    predictor.prepare_frame = _Timed(type(predictor).prepare_frame.__get__(predictor), stages, "preprocess")
    try:
        for p in partitions:
            rows = table.iloc[p.rows][list(CATALOG_COLUMNS)].reset_index(drop=True)
            batch = _Timed(fetch_partition, stages, "fetch")(source, rows, size, choice.take(p.rows),
                                                             config.model.fetch_margin_arcsec)
            predictions = _Timed(predict_partition, stages, "predict")(
                batch, config.model.measure_recon, rows, config.model.metacal, config.model.metacal_symmetrize,
                predictor=predictor,
            )
            _Timed(write_partition, stages, "write")(out, p.partition_id, rows, p.tile, predictions,
                                                     predictor.model_id, "single-process")
        _Timed(verify_output, stages, "verify")(out, partitions)
    finally:
        del predictor.prepare_frame
    stages["model"] = stages.pop("predict") - stages["preprocess"]
    return time.perf_counter() - t0, len(table), stages


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def task_stream_stages(records: list[dict]) -> dict[str, float]:
    """Compute and transfer seconds per task kind (the key's prefix: partition, fetch, predict, write), summed."""
    stages: dict[str, float] = {}
    for record in records:
        kind = str(record["key"]).split("-", 1)[0].strip("('\"")
        for part in record.get("startstops", ()):
            action = part["action"]
            if action in ("compute", "transfer"):
                name = f"{kind}_{action}" if action == "compute" else "transfer"
                stages[name] = stages.get(name, 0.0) + part["stop"] - part["start"]
    return {k: round(v, 3) for k, v in sorted(stages.items())}


def timed_dask_run(client, config, fuse: bool | None = None) -> tuple[float, int, dict]:
    """One timed run on ``client``'s cluster; seconds, galaxies and seconds per stage from the task stream."""
    from distributed import get_task_stream

    from survey_deblend.pipeline import run

    with get_task_stream(client) as stream:
        t0 = time.perf_counter()
        summary = run(config, client, stream=io.StringIO(), fuse=fuse)
        seconds = time.perf_counter() - t0
    stages = task_stream_stages(stream.data)
    wanted = ("select_s", "plan_s", "verify_s", "fetch_s", "predict_s", "write_s")  # the last three: fused tasks
    stages.update({k: round(v, 3) for k, v in summary.timings.items() if k in wanted and v > 0})
    stages["wall_s"] = round(seconds, 3)
    return seconds, summary.n_selected, stages


def interleaved(config, predictor, rounds: int) -> dict:
    """``rounds`` rounds of: plain loop, 1 worker (2 threads), 2 workers fused, 2 workers chained, side by side on
    two clusters started (and warmed up) once, so that a changing load hits every setting alike. Returns the
    seconds of each setting per round, the galaxies, the peak worker RSS and the stages of the last round."""
    import dataclasses
    from contextlib import ExitStack

    from survey_deblend.cluster import open_client
    from survey_deblend.config.run import ClusterConfig
    from survey_deblend.pipeline import run

    warm = dataclasses.replace(config, output=dataclasses.replace(config.output,
                                                                   out=Path(str(config.output.out) + "-warm")))
    times: dict[str, list[float]] = {"plain": [], "1w": [], "2w": [], "2w_chain": []}
    stages: dict[str, dict] = {}
    with ExitStack() as stack:
        clients = {
            n: stack.enter_context(open_client(ClusterConfig(n_workers=n, threads_per_worker=threads,
                                                             dashboard_address=":0")))
            for n, threads in ((1, os.cpu_count() or 1), (2, 1))
        }
        for client in clients.values():
            run(warm, client, stream=io.StringIO())  # workers import torch and load the model once
        single_process(config, predictor)  # warm-up of the plain loop
        n_seen = set()
        for _ in range(rounds):
            t, n, stages["plain"] = single_process(config, predictor)
            stages["plain"] = {k: round(v, 3) for k, v in sorted(stages["plain"].items())}
            times["plain"].append(t)
            n_seen.add(n)
            for name, client, fuse in (("1w", clients[1], None), ("2w", clients[2], None),
                                       ("2w_chain", clients[2], False)):
                t, n, stages[name] = timed_dask_run(client, config, fuse)
                times[name].append(t)
                n_seen.add(n)
        rss = max(max(c.run(_peak_rss_mb).values()) for c in clients.values())
    assert len(n_seen) == 1, n_seen
    return {"times": times, "n": n_seen.pop(), "rss": rss, "stages": stages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the 2-tile demo field (same keys)")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work"))
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: shipped, else untrained)")
    parser.add_argument("--tiles", type=int, default=4, help="tiles of the simulated field (full run)")
    parser.add_argument("--tile-size", type=int, default=1600, help="tile side in pixels (full run)")
    parser.add_argument("--no-recon", action="store_true", help="only model.measure_recon=false (skip HSM)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    args = parser.parse_args()
    import torch

    from survey_deblend.inference import Predictor

    n_tiles, tile_size = (2, 1000) if args.quick else (args.tiles, args.tile_size)
    args.workdir.mkdir(parents=True, exist_ok=True)
    field = field_paths(args.workdir, n_tiles, tile_size)
    checkpoint = args.model
    if checkpoint is None:
        from survey_deblend.inference import default_checkpoint

        try:
            checkpoint = default_checkpoint()
        except Exception:  # no shipped checkpoint yet: the same architecture, untrained, runs at the same speed
            from survey_deblend.models.checkpoint import write_untrained_checkpoint

            checkpoint = write_untrained_checkpoint(args.workdir / "untrained.pt")
    torch.set_num_threads(os.cpu_count() or 1)
    settings = [(False, True), (False, False)] + ([] if args.quick or args.no_recon else [(True, True)])
    side_by_side: dict[str, float] = {}
    for measure_recon, metacal in settings:
        config = make_config(field, checkpoint, args.workdir / "out", measure_recon, metacal)
        predictor = Predictor.from_checkpoint(checkpoint, device="cpu", batch_size=config.model.batch_size)
        load_before = os.getloadavg()[0]
        result = interleaved(config, predictor, 1 if args.quick else args.rounds)
        n, times = result["n"], result["times"]
        median = {k: float(np.median(v)) for k, v in times.items()}
        if not measure_recon:
            tag = "on" if metacal else "off"
            side_by_side.update({f"galaxies_per_s_2w_mcal_{tag}": round(n / median["2w"], 1),
                                 f"galaxies_per_s_1w_mcal_{tag}": round(n / median["1w"], 1),
                                 f"single_process_galaxies_per_s_mcal_{tag}": round(n / median["plain"], 1),
                                 f"seconds_2w_mcal_{tag}": median["2w"]})
        print(json.dumps({
            "galaxies_per_s_1w": round(n / median["1w"], 1),
            "galaxies_per_s_2w": round(n / median["2w"], 1),
            "galaxies_per_s_2w_chain": round(n / median["2w_chain"], 1),
            "single_process_galaxies_per_s": round(n / median["plain"], 1),
            "dask_overhead_frac": round((median["1w"] - median["plain"]) / median["plain"], 3),
            "ratio_2w_to_plain": round(median["plain"] / median["2w"], 3),
            "ratio_2w_to_2w_chain": round(median["2w_chain"] / median["2w"], 3),
            "rounds": args.rounds, "seconds_per_round": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "peak_worker_rss_mb": round(result["rss"], 1),
            "stages": result["stages"],
            "load_avg_1m_before": round(load_before, 2),
            "n_galaxies": n, "measure_recon": measure_recon, "metacal": metacal, "field": f"{n_tiles}x{tile_size}px",
            "cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "model": str(checkpoint),
        }), flush=True)
    cost = side_by_side.pop("seconds_2w_mcal_on") / side_by_side.pop("seconds_2w_mcal_off")
    print(json.dumps({"benchmark": "run_metacal", **side_by_side, "mcal_cost_factor": round(cost, 3),
                      "n_galaxies": n, "field": f"{n_tiles}x{tile_size}px", "measure_recon": False,
                      "cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}), flush=True)
    for extra in (args.workdir / "out", args.workdir / "out-warm"):
        shutil.rmtree(extra, ignore_errors=True)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())

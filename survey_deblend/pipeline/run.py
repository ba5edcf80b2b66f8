"""``run(config, client)``: the futures graph of ``survey-deblend run`` (DESIGN.md, "The run").

Selection on the client, partitions by locality key, then per partition ``fetch_stamps`` -> ``predict_shapes``
(``resources={"GPU": 1}`` when the cluster has GPU workers) -> ``write_partition`` as futures. Finished
partitions are skipped on a re-run of the same configuration; at the end the output is read back and checked
against the selection (every galaxy exactly once), and the manifest records counts and timings.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from distributed import Client, as_completed

from survey_deblend.cluster import cluster_has_gpu_workers
from survey_deblend.config.run import RunConfig
from survey_deblend.errors import SurveyDeblendError
from survey_deblend.pipeline.inputs import ModelInfo, RunInputs, check_inputs
from survey_deblend.pipeline.manifest import config_hash, prepare_output, write_manifest
from survey_deblend.pipeline.plan import PART_PREFIX, Partition, ResumePlan, plan_partitions
from survey_deblend.pipeline.plugin import PredictorPlugin, ensure_plugin
from survey_deblend.pipeline.progress import ProgressLine, format_summary
from survey_deblend.pipeline.tasks import fetch_stamps, predict_shapes, write_partition
from survey_deblend.schema import CATALOG_COLUMNS


@dataclass
class RunSummary:
    """What a run did: where, how many galaxies per status, how fast, and how many partitions were resumed."""

    out: Path
    run_id: str
    model_id: str
    n_selected: int
    counts: dict[str, int]
    n_partitions: int
    n_resumed: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    cut_flow: dict[str, Any] = field(default_factory=dict)

    @property
    def galaxies_per_s(self) -> float:
        return self.n_selected / self.seconds if self.seconds > 0 else float("inf")

    def format(self) -> str:
        return format_summary(self.counts, self.n_selected, self.seconds, str(self.out), self.n_resumed)


def stamp_size_pix(config: RunConfig, model: ModelInfo, source_pixel_scale: float) -> int:
    """Cutout side in source pixels: the configured one, or the smallest odd size covering the model stamp."""
    if config.model.stamp_size_pix is not None:
        return int(config.model.stamp_size_pix)
    from survey_deblend.preprocess import source_stamp_size

    return source_stamp_size(source_pixel_scale, model.pixel_scale_arcsec, model.stamp_size)


def _submit_partition(
    client: Client, partition: Partition, table: pd.DataFrame, source: Any, size_pix: int, config: RunConfig,
    model: ModelInfo, run_id: str, gpu: bool,
) -> Any:
    rows = table.iloc[partition.rows][list(CATALOG_COLUMNS)].reset_index(drop=True)
    pid = partition.partition_id
    stamps = client.submit(
        fetch_stamps, source, rows["ra"].to_numpy(), rows["dec"].to_numpy(), size_pix,
        key=f"fetch-{run_id}-{pid}", retries=2, pure=False,
    )
    predictions = client.submit(
        predict_shapes, stamps, config.model.measure_recon,
        key=f"predict-{run_id}-{pid}", resources={"GPU": 1} if gpu else None, retries=1, pure=False,
    )
    out = str(Path(config.output.out).resolve())
    return client.submit(
        write_partition, out, pid, rows, partition.tile, predictions, model.model_id, run_id,
        key=f"write-{run_id}-{pid}", retries=2, pure=False,
    )


def verify_output(out_dir: Path, partitions: list[Partition], expected_ids: np.ndarray) -> dict[str, int]:
    """Read back ids and statuses of every part; every selected galaxy must appear exactly once."""
    plan = ResumePlan(out_dir)
    stale = plan.stale_parts(p.partition_id for p in partitions)
    if stale:
        raise SurveyDeblendError(f"{stale[0]}: part file not in this run's plan (use --overwrite)")
    frames = [pq.read_table(plan.part_path(p.partition_id), columns=["coadd_objects_id", "status"]).to_pandas()
              for p in partitions]
    got = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"coadd_objects_id": [], "status": []})
    ids = got["coadd_objects_id"].to_numpy()
    n_dup = len(ids) - len(np.unique(ids))
    missing = np.setdiff1d(expected_ids, ids)
    extra = np.setdiff1d(ids, expected_ids)
    if n_dup or len(missing) or len(extra):
        raise SurveyDeblendError(
            f"{out_dir}: output does not match the selection ({n_dup} duplicated, {len(missing)} missing, "
            f"{len(extra)} unexpected galaxies)"
        )
    return {str(k): int(v) for k, v in got["status"].value_counts().sort_index().items()}


def run(config: RunConfig, client: Client, stream: TextIO | None = None, inputs: RunInputs | None = None) -> RunSummary:
    """Run the whole job on ``client``'s cluster and return its summary (the caller owns the cluster).

    ``inputs`` is the result of ``check_inputs(config)`` when the caller checked them already (the CLI does,
    before it starts a cluster); without it the inputs are checked here.
    """
    from survey_deblend.catalog import select_galaxies
    from survey_deblend.cutouts import open_source

    stream = stream or sys.stderr
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(config.output.out)
    model = (inputs or check_inputs(config)).model
    # Refuse a folder of another configuration before any work (the hash needs only the config and the model).
    manifest = prepare_output(out_dir, config, model.model_id, config_hash(config, model.model_id))
    run_id = manifest["run_id"]

    t0 = time.perf_counter()
    selection = select_galaxies(config.catalog)
    table = selection.table.reset_index(drop=True)
    timings["select_s"] = time.perf_counter() - t0
    print(selection.cut_flow.format(), file=stream)

    t0 = time.perf_counter()
    cache_dir = config.images.cache_dir or out_dir / "_cache"
    source = open_source(config.images.source, config.images, cache_dir=cache_dir)
    keys = source.locality_keys(table["ra"].to_numpy(), table["dec"].to_numpy())
    partitions = plan_partitions(table, keys, config.output.partition_rows)
    size_pix = stamp_size_pix(config, model, float(source.pixel_scale_arcsec))
    timings["plan_s"] = time.perf_counter() - t0

    plan = ResumePlan(out_dir)
    done = plan.done()
    todo = [p for p in partitions if p.partition_id not in done]
    manifest.update(
        cut_flow=selection.cut_flow.to_dict(), n_selected=len(table), n_partitions=len(partitions),
        stamp_size_pix=size_pix, model_path=str(model.path),
    )
    write_manifest(out_dir, manifest)

    gpu = cluster_has_gpu_workers(client)
    print(f"dashboard: {client.dashboard_link}", file=stream)
    print(
        f"{len(table):,} galaxies in {len(partitions)} partitions ({len(done)} already done); "
        f"inference on {'GPU' if gpu else 'CPU'} workers; output {out_dir}",
        file=stream,
    )
    plugin = PredictorPlugin(
        model.path, config.model.device, config.model.bf16, config.model.compile, model_id=model.model_id,
        batch_size=config.model.batch_size,
    )
    ensure_plugin(client, plugin)

    t0 = time.perf_counter()
    progress = ProgressLine(len(partitions), len(table), stream=stream, enabled=config.output.progress)
    progress.update(partitions=len(done), galaxies=sum(int(d.get("n_rows", 0)) for d in done.values()))
    futures = {_submit_partition(client, p, table, source, size_pix, config, model, run_id, gpu): p for p in todo}
    failures: list[str] = []
    for future in as_completed(futures):
        try:
            info = future.result()
        except Exception as exc:  # report every failed partition at the end, keep the finished ones
            failures.append(f"partition {futures[future].partition_id}: {type(exc).__name__}: {exc}")
            continue
        progress.update(galaxies=int(info["n_rows"]))
    progress.close()
    timings["partitions_s"] = time.perf_counter() - t0
    if failures:
        raise SurveyDeblendError(
            f"{len(failures)} partitions failed (finished ones are kept; re-run to resume); first: {failures[0]}"
        )

    t0 = time.perf_counter()
    plan.clean_tmp()  # writes cut short by a killed worker were redone under fresh temporary names
    counts = verify_output(out_dir, partitions, table["coadd_objects_id"].to_numpy())
    timings["verify_s"] = time.perf_counter() - t0
    seconds = time.perf_counter() - t_start
    timings["total_s"] = seconds
    manifest.update(
        state="complete", counts=counts, timings=timings, n_resumed=len(done),
        finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        galaxies_per_s=len(table) / seconds if seconds > 0 else None,
        parts=sorted(f"{PART_PREFIX}{p.partition_id}.parquet" for p in partitions),
    )
    write_manifest(out_dir, manifest)
    summary = RunSummary(
        out=out_dir, run_id=run_id, model_id=model.model_id, n_selected=len(table), counts=counts,
        n_partitions=len(partitions), n_resumed=len(done), seconds=seconds, timings=timings,
        cut_flow=selection.cut_flow.to_dict(),
    )
    print(summary.format(), file=stream)
    return summary

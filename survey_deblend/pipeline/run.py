"""``run(config, client)``: the futures graph of ``survey-deblend run`` (DESIGN.md, "The run").

A shear catalog of at least ``output.stage_min_rows`` rows is selected by the workers into ``out/_staging``
(``pipeline.stream``, ``pipeline.staging``): the client plans the partitions from counts, each partition task reads
its own rows there and its source chooses the tiles. For a catalog sorted by ID the partitions of each ID range are
planned and submitted as soon as that range is joined, while the rest is still being staged (per (range, key));
otherwise once everything is staged, per key as below. A smaller catalog is selected on the client (faster at that
size); the tile choice is then made once by the source's ``plan`` (sliced per partition when it is submitted, it
travels with the partition's task), and the partitions are per locality key, in ID order, in near-equal chunks.
Either way the rows written, and every value in them, are the same.
The source goes to every worker once (the result of one task every task needing it names, never pickled into each
task). On CPU workers each partition is one fused task (``process_partition``: fetch -> predict -> write, the
stamps never travel between workers); with GPU workers ``fetch_partition`` -> ``predict_partition``
(``resources={"GPU": 1}``) -> ``write_partition``. A bounded window of partitions is in flight and refills as parts
finish (``pipeline.window``), so the scheduler holds the staging tasks and a few partitions per worker thread, not
one chain per partition. Finished partitions are skipped on a re-run of the same configuration; at the end the
output is checked against the plan from the part files' footers (row counts) and the done-markers (status counts,
id checksums) without reading any id back; the manifest records counts and timings.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import pyarrow.parquet as pq
from distributed import Client

from survey_deblend.cluster import cluster_has_gpu_workers
from survey_deblend.config.run import RunConfig
from survey_deblend.errors import SurveyDeblendError
from survey_deblend.pipeline.inputs import ModelInfo, RunInputs, check_inputs
from survey_deblend.pipeline.manifest import config_hash, prepare_output, write_manifest
from survey_deblend.pipeline.plan import PART_PREFIX, Partition, ResumePlan, plan_partitions
from survey_deblend.pipeline.plugin import PredictorPlugin, ensure_plugin
from survey_deblend.pipeline.progress import ProgressLine, format_summary
from survey_deblend.pipeline.staging import StagedPartition
from survey_deblend.pipeline.stream import PARTITION_PRIORITY, StagingStream
from survey_deblend.pipeline.tasks import (
    fetch_partition,
    partition_rows,
    predict_partition,
    process_partition,
    write_partition,
)
from survey_deblend.pipeline.window import WINDOW_MIN, in_flight_window, run_window  # noqa: F401 (re-exported)
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


def _source(source: Any) -> Any:
    """The cutout source as a task result (see ``_run_window``)."""
    return source


def _submit_partition(
    client: Client, partition: Partition | StagedPartition, table: pd.DataFrame | None, choice: Any, source: Any,
    size_pix: int, config: RunConfig, model: ModelInfo, run_id: str, chain: bool, gpu: bool,
) -> Any:
    """One partition's task (fused) or chain of tasks. ``table`` None: the partition is staged, its tasks read
    their rows (``StagedRows``) and the source chooses the tiles there; else its rows and tile choice travel."""
    pid = partition.partition_id
    out = str(Path(config.output.out).resolve())
    if table is None:
        rows, choice = partition.rows, None
    else:
        rows = table.iloc[partition.rows][list(CATALOG_COLUMNS)].reset_index(drop=True)
        choice = None if choice is None else choice.take(partition.rows)
    mcal = {"symmetrize": config.model.metacal_symmetrize}
    if not chain:
        return client.submit(
            process_partition, source, rows, choice, size_pix, config.model.measure_recon, out, pid,
            partition.tile, model.model_id, run_id, None, config.model.metacal, **mcal,
            margin_arcsec=config.model.fetch_margin_arcsec, key=f"partition-{run_id}-{pid}", retries=2, pure=False,
            priority=PARTITION_PRIORITY,
        )
    if table is None:  # read the staged rows once, in a task the three stages name
        rows = client.submit(partition_rows, rows, key=f"rows-{run_id}-{pid}", retries=2, pure=False,
                             priority=PARTITION_PRIORITY)
    stamps = client.submit(fetch_partition, source, rows, size_pix, choice, config.model.fetch_margin_arcsec,
                           key=f"fetch-{run_id}-{pid}", retries=2, pure=False, priority=PARTITION_PRIORITY)
    predictions = client.submit(
        predict_partition, stamps, config.model.measure_recon, rows, config.model.metacal, **mcal,
        key=f"predict-{run_id}-{pid}", resources={"GPU": 1} if gpu else None, retries=1, pure=False,
        priority=PARTITION_PRIORITY,
    )
    return client.submit(
        write_partition, out, pid, rows, partition.tile, predictions, model.model_id, run_id,
        key=f"write-{run_id}-{pid}", retries=2, pure=False, priority=PARTITION_PRIORITY,
    )


def verify_output(out_dir: Path, partitions: list[Partition] | list[StagedPartition]) -> dict[str, int]:
    """Every planned galaxy exactly once, checked without reading ids back: the partitions of the plan are
    disjoint and cover the selection; each one's part file must hold as many rows as planned (its Parquet
    footer) and its done-marker the planned id checksum; no part file outside the plan. Returns status counts."""
    plan = ResumePlan(out_dir)
    stale = plan.stale_parts(p.partition_id for p in partitions)
    if stale:
        raise SurveyDeblendError(f"{stale[0]}: part file not in this run's plan (use --overwrite)")
    markers = plan.done()
    counts: Counter[str] = Counter()
    problems: list[str] = []
    for p in partitions:
        path = plan.part_path(p.partition_id)
        marker = markers.get(p.partition_id)
        if marker is None:
            problems.append(f"{path.name}: missing or without its done-marker")
            continue
        n_rows = pq.read_metadata(path).num_rows
        if n_rows != p.n_rows or int(marker.get("n_rows", -1)) != n_rows:
            problems.append(f"{path.name}: {n_rows} rows (marker {marker.get('n_rows')}), planned {p.n_rows}")
        elif p.ids_checksum and marker.get("id_checksum") != p.ids_checksum:
            problems.append(f"{path.name}: its galaxy ids are not the planned ones (id checksum differs)")
        counts.update({str(k): int(v) for k, v in marker.get("counts", {}).items()})
    if problems:
        raise SurveyDeblendError(
            f"{out_dir}: output does not match the selection ({len(problems)} bad parts; first: {problems[0]})"
        )
    return dict(sorted(counts.items()))


def stages_on_workers(config: RunConfig) -> bool:
    """Whether the selection is staged by the workers (``pipeline.staging``): an ID match of a shear catalog of
    at least ``output.stage_min_rows`` rows (its header says how many). Smaller catalogs select faster on the
    client; the sky match has no staged form yet."""
    from survey_deblend.catalog import open_catalog

    if config.catalog.match != "id" or config.catalog.shear is None:
        return False
    return open_catalog(config.catalog.shear, "im3shape catalog").n_rows >= config.output.stage_min_rows


def plan_run(source: Any, table: pd.DataFrame, size_pix: int, partition_rows: int) -> tuple[list[Partition], Any]:
    """Partitions of ``table`` and the source's one tile choice for all its rows (None when it does not plan);
    each partition's task gets ``choice.take(rows)`` when it is submitted (only the window holds slices)."""
    ra, dec = table["ra"].to_numpy(), table["dec"].to_numpy()
    choice = source.plan(ra, dec, size_pix) if hasattr(source, "plan") else None
    # grouped by the source's locality key (a coadd tile; for SIA the sky cell of one query, DESIGN.md "The run")
    return plan_partitions(table, source.locality_keys(ra, dec), partition_rows), choice


def source_task(client: Client, source: Any, run_id: str) -> Any:
    """The source as the result of one task, not scattered data: the scheduler keeps its spec, so a worker lost
    with it (a cancelled SLURM job, an elastic pool shrinking) means a recompute, not a lost run. Each worker gets
    it once (computed there, or fetched from a peer) and every task that needs it names this key."""
    return client.submit(_source, source, key=f"source-{run_id}", pure=False, retries=2)


def run(
    config: RunConfig, client: Client, stream: TextIO | None = None, inputs: RunInputs | None = None,
    source: Any = None, fuse: bool | None = None, plugin: PredictorPlugin | None = None,
) -> RunSummary:
    """Run the whole job on ``client``'s cluster and return its summary (the caller owns the cluster).

    ``inputs`` is the result of ``check_inputs(config)`` when the caller checked them already (the CLI does,
    before it starts a cluster); without it the inputs are checked here. ``source``: an already open
    ``CutoutSource`` (None: ``images.source``). ``fuse``: one task per partition (None: unless the cluster has
    GPU workers; False forces the three-task chain, for comparison in ``benchmarks/run.py``). ``plugin``: the
    worker plugin holding the Predictor (None: the configured checkpoint; ``benchmarks/scale.py`` passes one
    with a trivial predictor).
    """
    from survey_deblend.catalog import select_galaxies
    from survey_deblend.cutouts import open_source

    stream_out = stream or sys.stderr
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(config.output.out)
    model = (inputs or check_inputs(config)).model
    # Refuse a folder of another configuration before any work (the hash needs only the config and the model).
    manifest = prepare_output(out_dir, config, model.model_id, config_hash(config, model.model_id))
    run_id = manifest["run_id"]
    cache_dir = config.images.cache_dir or out_dir / "_cache"

    staged = stages_on_workers(config)
    source_future = staging = None
    todo: list = []
    table = choice = None
    if staged:  # the workers select into out/_staging while the partitions of joined ID ranges run
        if source is None:
            source = open_source(config.images.source, config.images, cache_dir=cache_dir)
        size_pix = stamp_size_pix(config, model, float(source.pixel_scale_arcsec))
        source_future = source_task(client, source, run_id)
        staging = StagingStream(client, config.catalog, source_future, out_dir, manifest["config_hash"],
                               config.output.partition_rows)
        print("selecting on the workers (out/_staging); partitions start as ID ranges are joined", file=stream_out)
    else:
        t0, cpu0 = time.perf_counter(), time.process_time()
        selection = select_galaxies(config.catalog)
        table, cut_flow = selection.table.reset_index(drop=True), selection.cut_flow
        timings["select_s"] = time.perf_counter() - t0
        timings["select_cpu_s"] = time.process_time() - cpu0  # on the client
        print(cut_flow.format(), file=stream_out)
        t0 = time.perf_counter()
        if source is None:
            source = open_source(config.images.source, config.images, cache_dir=cache_dir)
        size_pix = stamp_size_pix(config, model, float(source.pixel_scale_arcsec))
        todo, choice = plan_run(source, table, size_pix, config.output.partition_rows)
        timings["plan_s"] = time.perf_counter() - t0
        manifest.update(cut_flow=cut_flow.to_dict(), n_selected=len(table), n_partitions=len(todo))
    manifest.update(stamp_size_pix=size_pix, model_path=str(model.path))
    write_manifest(out_dir, manifest)

    gpu = cluster_has_gpu_workers(client)
    fused = (not gpu) if fuse is None else bool(fuse)
    print(f"dashboard: {client.dashboard_link}", file=stream_out)
    print(f"inference on {'GPU' if gpu else 'CPU'} workers; output {out_dir}", file=stream_out)
    plugin = plugin or PredictorPlugin(
        model.path, config.model.device, config.model.bf16, config.model.compile, model_id=model.model_id,
        batch_size=config.model.batch_size,
    )
    ensure_plugin(client, plugin)

    def on_selected(selection: Any) -> None:  # a staging finished: its cut flow, as the client path prints it
        timings["select_s"] = time.perf_counter() - t_start
        timings["select_cpu_s"] = selection.cpu_s  # on the workers
        print(selection.cut_flow.format(), file=stream_out)
        manifest.update(cut_flow=selection.cut_flow.to_dict(), n_selected=selection.n_selected)
        write_manifest(out_dir, manifest)

    plan = ResumePlan(out_dir)
    t0 = time.perf_counter()
    progress = ProgressLine(0, 0, stream=stream_out, enabled=config.output.progress)
    if source_future is None and todo:
        source_future = source_task(client, source, run_id)

    def submit(partition: Partition | StagedPartition) -> Any:
        return _submit_partition(client, partition, table, choice, source_future, size_pix, config, model, run_id,
                                 not fused, gpu)

    window = run_window(client, submit, todo, staging, plan, progress, on_selected)
    if source_future is not None:
        source_future.release()
    progress.close()
    partitions, failures = window.planned, window.failures
    n_selected = sum(p.n_rows for p in partitions)
    if staging is not None:
        timings["plan_s"] = staging.plan_s
        cut_flow = staging.selection.cut_flow
    timings["partitions_s"] = time.perf_counter() - t0
    timings.update(window.stage_s)
    manifest.update(n_selected=n_selected, n_partitions=len(partitions))
    print(f"{n_selected:,} galaxies in {len(partitions)} partitions ({window.n_resumed} already done)",
          file=stream_out)
    if failures:
        raise SurveyDeblendError(
            f"{len(failures)} partitions failed (finished ones are kept; re-run to resume); first: {failures[0]}"
        )

    t0 = time.perf_counter()
    plan.clean_tmp()  # writes cut short by a killed worker were redone under fresh temporary names
    counts = verify_output(out_dir, partitions)
    timings["verify_s"] = time.perf_counter() - t0
    seconds = time.perf_counter() - t_start
    timings["total_s"] = seconds
    manifest.update(
        state="complete", counts=counts, timings=timings, n_resumed=window.n_resumed,
        finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        galaxies_per_s=n_selected / seconds if seconds > 0 else None,
        parts=sorted(f"{PART_PREFIX}{p.partition_id}.parquet" for p in partitions),
    )
    write_manifest(out_dir, manifest)
    summary = RunSummary(
        out=out_dir, run_id=run_id, model_id=model.model_id, n_selected=n_selected, counts=counts,
        n_partitions=len(partitions), n_resumed=window.n_resumed, seconds=seconds, timings=timings,
        cut_flow=cut_flow.to_dict(),
    )
    print(summary.format(), file=stream_out)
    return summary

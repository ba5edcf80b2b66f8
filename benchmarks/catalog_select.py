"""Benchmark of the catalog stage: select + ID match on synthetic im3shape and gold catalogs.

For each size it writes synthetic catalogs (im3shape with ``rows`` rows, gold with about as many) to a
temporary folder, then runs ``select_galaxies`` in a fresh subprocess so that generation does not pollute
the memory figure, and prints one JSON line per (size, scheduler):
``rows`` (im3shape rows), ``rows_per_s`` (im3shape rows per second of select + match, imports excluded),
``peak_rss_mb`` (peak resident memory of that subprocess), plus context keys.
Then, per size, one line comparing the release's compressed format with plain FITS: ``fits_rows_per_s`` and
``fits_gz_rows_per_s`` (im3shape rows per second read through ``CatalogReader.to_dask`` with the selection's
ten shear columns; for ``.fits.gz`` this includes the one streaming decompression into the spool),
``select_fits_gz_rows_per_s`` (the whole selection with ``im3shape.fits.gz`` and the plain gold, as the release
ships them), and each one's ``peak_rss_mb`` (bounded: one block of rows, whatever the file size);
``*_rows_per_cpu_s`` give the same per CPU second of the reading process (robust to a loaded machine).

    .venv/bin/python benchmarks/catalog_select.py            # 1 M and 5 M rows, threads and synchronous
    .venv/bin/python benchmarks/catalog_select.py --quick    # small sizes, same keys, well under a minute
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: per address space, so not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # not Linux: includes the parent's


def measure(shear: str, gold: str, scheduler: str, chunk_rows: int) -> dict:
    """Run one selection in this process and return its figures (called in the child process).

    A first selection on a tiny catalog pays the one-off costs (lazy imports, first Dask graph) before the clock
    starts; they are reported as ``startup_s``, the same at any size.
    """
    from survey_deblend.catalog import select_galaxies
    from survey_deblend.catalog.synthetic import write_catalogs
    from survey_deblend.config.catalog import CatalogConfig

    with tempfile.TemporaryDirectory(prefix="catalog-warmup-") as tmp:
        tiny = write_catalogs(tmp, n=2000, seed=1)
        start = time.perf_counter()
        select_galaxies(CatalogConfig(shear=tiny.im3shape, gold=tiny.gold, scheduler=scheduler))
        startup_s = time.perf_counter() - start
    baseline_mb = peak_rss_mb()
    cfg = CatalogConfig(shear=Path(shear), gold=Path(gold), chunk_rows=chunk_rows, scheduler=scheduler)
    start, cpu_start = time.perf_counter(), time.process_time()
    selection = select_galaxies(cfg)
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "rows": selection.cut_flow.rows_in,
        "rows_per_s": round(selection.cut_flow.rows_in / seconds),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "baseline_rss_mb": round(baseline_mb, 1),
        "seconds": round(seconds, 3),
        "startup_s": round(startup_s, 3),
        "cpu_s": round(cpu_s, 3),  # CPU seconds of all threads; with "synchronous", ~ the wall time when idle
        "selected": len(selection.table),
        "scheduler": scheduler,
        "chunk_rows": chunk_rows,
    }


def measure_read(path: str) -> dict:
    """Read the shear columns of ``path`` through the Dask row ranges (in this process, the child)."""
    from survey_deblend.catalog.cuts import SHEAR_COLUMNS
    from survey_deblend.catalog.readers import open_catalog
    from survey_deblend.catalog.synthetic import write_catalogs

    def read_all(file) -> int:
        reader = open_catalog(file)
        rows = int(reader.to_dask(SHEAR_COLUMNS, 1_000_000).map_partitions(len).compute(scheduler="synchronous").sum())
        assert rows == reader.n_rows
        return rows

    with tempfile.TemporaryDirectory(prefix="catalog-warmup-") as tmp:  # imports and the first graph, untimed
        tiny = write_catalogs(tmp, n=2000, seed=1).im3shape
        read_all(tiny)
        read_all(_gzip_copy(tiny))
    baseline_mb = peak_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = read_all(path)
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    return {"rows_per_s": round(rows / seconds), "rows_per_cpu_s": round(rows / cpu_s), "seconds": round(seconds, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1), "baseline_rss_mb": round(baseline_mb, 1)}


def _gzip_copy(path: Path) -> Path:
    """``path`` gzipped beside it (level 6, gzip's default), as the release ships its catalogs."""
    packed = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 22)
    return packed


def _child(*argv: str) -> dict:
    child = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def compare_gzip(paths, rows: int, chunk_rows: int) -> dict:
    """fits vs fits.gz: read rate of the shear columns, and the whole selection from the gzipped im3shape."""
    packed = _gzip_copy(paths.im3shape)
    plain_read, packed_read = _child("--child-read", str(paths.im3shape)), _child("--child-read", str(packed))
    select = _child("--child", str(packed), str(paths.gold), "synchronous", str(chunk_rows))
    return {
        "measure": "fits_vs_fits_gz",
        "rows": rows,
        "fits_rows_per_s": plain_read["rows_per_s"],
        "fits_gz_rows_per_s": packed_read["rows_per_s"],
        "gz_slowdown": round(plain_read["rows_per_s"] / packed_read["rows_per_s"], 1),
        # per CPU second of the reading process: the figure that survives a shared, loaded machine
        "fits_rows_per_cpu_s": plain_read["rows_per_cpu_s"],
        "fits_gz_rows_per_cpu_s": packed_read["rows_per_cpu_s"],
        "select_fits_gz_rows_per_s": select["rows_per_s"],
        "fits_peak_rss_mb": plain_read["peak_rss_mb"],
        "fits_gz_peak_rss_mb": packed_read["peak_rss_mb"],
        "select_fits_gz_peak_rss_mb": select["peak_rss_mb"],
        "baseline_rss_mb": packed_read["baseline_rss_mb"],
        "fits_mb": round(paths.im3shape.stat().st_size / 2**20, 1),
        "fits_gz_mb": round(packed.stat().st_size / 2**20, 1),
    }


def run_size(rows: int, schedulers: list[str], chunk_rows: int, seed: int) -> None:
    from survey_deblend.catalog.synthetic import write_catalogs

    with tempfile.TemporaryDirectory(prefix="catalog-bench-") as tmp:
        paths = write_catalogs(tmp, n=rows, seed=seed)
        input_mb = (paths.im3shape.stat().st_size + paths.gold.stat().st_size) / 2**20
        for scheduler in schedulers:
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(paths.im3shape), str(paths.gold), scheduler, str(chunk_rows)],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
            result["input_mb"] = round(input_mb, 1)
            print(json.dumps(result), flush=True)
        print(json.dumps(compare_gzip(paths, rows, chunk_rows)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small catalogs (same keys), under a minute")
    parser.add_argument("--sizes", type=int, nargs="+", help="im3shape rows per measurement")
    parser.add_argument("--schedulers", nargs="+", default=["threads", "synchronous"])
    parser.add_argument("--chunk-rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-read", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_read:
        print(json.dumps(measure_read(args.child_read)))
        return
    if args.child:
        shear, gold, scheduler, chunk_rows = args.child
        print(json.dumps(measure(shear, gold, scheduler, int(chunk_rows))))
        return
    sizes = args.sizes or ([100_000, 500_000] if args.quick else [1_000_000, 5_000_000])
    chunk_rows = min(args.chunk_rows, 125_000) if args.quick else args.chunk_rows
    for rows in sizes:
        run_size(rows, args.schedulers, chunk_rows, args.seed)


if __name__ == "__main__":
    main()

"""The fault matrix of issue 14 §3: the real job under faults, every selected galaxy exactly once.

On a simulated DES-like field (two coadd tiles, ``sim.make_des_field``) the real ``survey-deblend run`` (shipped
checkpoint, ``measure_recon=false``, partitions of 10 galaxies, a LocalCluster of 2 one-thread workers) runs
under each fault in turn: the local SIA server's injected faults (HTTP 503 at 0-50 %, timeouts, truncated and
HTML bodies, NaN pixels, wrong-size cutouts), a worker SIGKILLed at the first finished part, the whole run
SIGKILLed at three points and re-run with the same command, the disk full while parts are written (a tmpfs,
root only), a tile file truncated on disk (inside its science pixels), every weight map (``wtmap``) failing.
One JSON line per row: ``selected``, ``written``, ``predicted``, ``duplicated``, ``lost`` (read back from the
Parquet), ``statuses``. Then ``band_faults`` (``faults_band``): about 250 galaxies through SIA under issue 14's
bad night (5 % NaN, 5 % truncated, 5 % HTML, 20 % HTTP 503) with the default retries and with one retry,
against the same run without faults: ``predicted_frac_band_faults``, and like for like over the galaxies that
lost a band, ``band_fault_shape_rms`` (faulty - fault-free), ``band_fault_masked_rms`` (the same bands masked on
the fault-free stamps - fault-free: the model's own band-dropout scatter there) and ``band_fault_vs_masked_rms``
(faulty - masked fault-free: ~0 when a faulted band leaves the others alone). The last line sums the matrix:
``duplicated``, ``lost``, next to ``predicted_frac_band_faults`` and the band-fault keys.

    PYTHONPATH=. python benchmarks/faults.py            # the whole matrix (~15 min on a loaded 2-core VM)
    PYTHONPATH=. python benchmarks/faults.py --quick    # a short matrix on a smaller field
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults_band  # noqa: E402
import faults_matrix as fm  # noqa: E402

SIA_ROWS: dict[str, dict[str, Any]] = {
    "sia_503_0pct": {"error_rate": 0.0},
    "sia_503_10pct": {"error_rate": 0.10},
    "sia_503_25pct": {"error_rate": 0.25},
    "sia_503_50pct": {"error_rate": 0.50},
    "sia_timeout_10pct": {"delay_s": 3.0, "delay_rate": 0.10},
    "sia_truncated_10pct": {"truncate_rate": 0.10},
    "sia_html_10pct": {"html_error_rate": 0.10},
    "sia_nan_10pct": {"nan_rate": 0.10},
    "sia_wrong_size_10pct": {"wrong_size_rate": 0.10},
    "sia_wtmap_503_100pct": {"error_rate": 1.0, "product": "wtmap"},  # every weight map fails, no image does
}
QUICK_SIA = ("sia_503_0pct", "sia_503_25pct", "sia_truncated_10pct", "sia_wtmap_503_100pct")
SIA_SETS = ("images.backoff_s=0.05", "images.timeout_s=10")


def line(row: str, out: Path, field: fm.Field, seconds: float, **extra: Any) -> dict[str, Any]:
    result = {"benchmark": "faults", "row": row, **fm.tally(out, field.selected), "seconds": round(seconds, 1),
              **extra}
    print(json.dumps(result), flush=True)
    return result


def sia_row(name: str, faults: dict[str, float], field: fm.Field, work: Path, client, seed: int) -> dict:
    from survey_deblend.cutouts.server import Faults, running_server

    out = work / name
    sets = [s for s in SIA_SETS if not (name.startswith("sia_timeout") and "timeout_s" in s)]
    sets += ["images.timeout_s=1"] if name.startswith("sia_timeout") else []
    with running_server(field.tiles_dir, faults=Faults(seed=seed, **faults)) as url:
        error, seconds = fm.run_in_process(fm.config(field, None, out, f"sia:{url}", *sets), client)
    return line(name, out, field, seconds, error=error)


def worker_killed_row(field: fm.Field, work: Path, client) -> dict:
    out = work / "worker_killed"
    with fm.on_event(lambda: len(fm.parts(out)) >= 1, fm.kill_a_worker(client)) as kill:
        error, seconds = fm.run_in_process(fm.config(field, None, out), client)
    n_parts = int(fm.manifest(out).get("n_partitions", 0))
    return line("worker_killed", out, field, seconds, error=error, killed=kill["fired"], partitions=n_parts)


def run_killed_row(point: str, field: fm.Field, work: Path) -> dict:
    out = work / f"run_killed_{point}"
    command = fm.cli_command(field, None, out)
    log = work / f"run_killed_{point}.log"
    t0 = time.perf_counter()
    code, fired = fm.run_cli(command, log, kill_when=lambda: fm.KILL_POINTS[point](out))
    parts_at_kill = len(fm.parts(out))
    resumed_code, _ = fm.run_cli(command, log)
    info = fm.manifest(out)
    return line(f"run_killed_{point}", out, field, time.perf_counter() - t0, killed=fired, first_exit=code,
                parts_at_kill=parts_at_kill, partitions=info.get("n_partitions"), resume_exit=resumed_code,
                state=info.get("state"), attempts=info.get("attempts"), n_resumed=info.get("n_resumed"))


def disk_full_row(field: fm.Field, work: Path, part_bytes: int) -> dict:
    """Parts on a tmpfs with room for about 2.5 of them: ``survey-deblend run`` fails with one error line and
    keeps its finished parts; the same command completes once there is room (the filler removed)."""
    if os.geteuid() != 0:
        print(json.dumps({"benchmark": "faults", "row": "disk_full", "skipped": "needs root to mount a tmpfs"}))
        return {}
    page = 4096
    leave = 16 * page + int(2.5 * (-(-part_bytes // page) + 1) * page)
    mount, log = work / "small_disk", work / "disk_full.log"
    t0 = time.perf_counter()
    with fm.small_disk(mount, 64 * 2**20):
        out = mount / "out"
        out.mkdir()
        filler = fm.fill_disk(mount, leave)
        command = fm.cli_command(field, None, out)
        code, _ = fm.run_cli(command, log)
        message = [x for x in log.read_text().splitlines() if x.startswith("survey-deblend run: error:")]
        kept = fm.parts(out)
        readable = sum(1 for p in kept if _readable(p))
        filler.unlink()
        second_code, _ = fm.run_cli(command, log)
        return line("disk_full", out, field, time.perf_counter() - t0, first_exit=code,
                    first_error=message[-1][:300] if message else None, parts_kept=len(kept),
                    parts_kept_readable=readable, partitions=fm.manifest(out).get("n_partitions"),
                    resume_exit=second_code, state=fm.manifest(out).get("state"))


def _readable(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_table(path)
    except Exception:  # noqa: BLE001 -- any failure to read back is what is counted
        return False
    return True


def tile_truncated_row(field: fm.Field, work: Path, client) -> dict:
    tiles = work / "tiles_truncated"
    shutil.copytree(field.tiles_dir, tiles)
    victim = fm.truncate_tile(tiles, "i")
    out = work / "tile_truncated"
    error, seconds = fm.run_in_process(fm.config(field, None, out, f"tiles:{tiles}"), client)
    return line("tile_truncated", out, field, seconds, error=error, truncated=victim.name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short matrix on a smaller field")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the fields and outputs here")
    args = parser.parse_args(argv)
    from survey_deblend.cluster import open_client
    from survey_deblend.config.run import ClusterConfig

    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="bench-faults-")
    work = args.workdir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    small = fm.make_field(work / "field_small", tile_size_pix=600, seed=args.seed)
    large = small if args.quick else fm.make_field(work / "field_250", tile_size_pix=1060, seed=args.seed)
    rows: list[dict] = []
    with open_client(ClusterConfig(kind="local", n_workers=2, threads_per_worker=1, dashboard_address=":0")) as client:
        out = work / "no_fault"
        error, seconds = fm.run_in_process(fm.config(small, None, out), client)
        rows.append(line("no_fault_tiles", out, small, seconds, error=error))
        part_bytes = int(np.mean([p.stat().st_size for p in fm.parts(out)]))
        for name, faults in SIA_ROWS.items():
            if not args.quick or name in QUICK_SIA:
                rows.append(sia_row(name, faults, small, work, client, args.seed))
        rows.append(worker_killed_row(small, work, client))
        for point in (("after_first_part",) if args.quick else tuple(fm.KILL_POINTS)):
            rows.append(run_killed_row(point, small, work))
        rows.append(disk_full_row(small, work, part_bytes))
        rows.append(tile_truncated_row(small, work, client))
        band = faults_band.band_faults_rows(large, work, client, args.seed, rows, line, SIA_SETS)
    rows = [r for r in rows if r]
    print(json.dumps({
        "benchmark": "faults_summary", "quick": args.quick, "rows": len(rows),
        **{k: int(sum(r[k] for r in rows)) for k in ("selected", "written", "predicted", "duplicated", "lost")},
        "predicted_frac_band_faults": band["predicted_frac_band_faults"],
        **{k: v for k, v in band.items() if k.startswith(("band_", "galaxies_with", "predicted_frac_band"))},
        "seconds": round(time.perf_counter() - t0, 1), "load_1min": round(os.getloadavg()[0], 1),
    }), flush=True)
    tmp.cleanup()


if __name__ == "__main__":
    main()

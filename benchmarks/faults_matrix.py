"""Helpers of the fault matrix (``benchmarks/faults.py``): a field, one row of the matrix, its tally, the kills.

The job is driven only through its public entry points: ``survey_deblend.pipeline.run(config, client)`` in
process, and ``python -m survey_deblend run ...`` as a subprocess for the rows that SIGKILL the whole run.
Events are read from the output folder (the manifest, the part files), never from task names, so the matrix
keeps working whatever the graph looks like inside.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Field:
    """A simulated DES-like field: its files and the ids the default selection keeps."""

    tiles_dir: Path
    im3shape: Path
    gold: Path
    selected: np.ndarray


def make_field(out_dir: Path, tile_size_pix: int, seed: int = 0) -> Field:
    """Two DES-like coadd tiles (``sim.make_des_field``, as ``survey-deblend simulate field``) and the selection."""
    from survey_deblend.catalog import select_galaxies
    from survey_deblend.sim.field import make_des_field

    paths = make_des_field(out_dir, n_tiles=2, tile_size_pix=tile_size_pix, seed=seed)
    field = Field(paths.tiles_dir, paths.im3shape, paths.gold, np.array([], dtype=np.int64))
    selection = select_galaxies(config(field, None, out_dir / "unused").catalog)
    return Field(paths.tiles_dir, paths.im3shape, paths.gold, selection.table["coadd_objects_id"].to_numpy())


def overrides(field: Field, checkpoint: Path | None, out: Path, images: str | None = None,
              *extra: str) -> list[str]:
    """The ``--set`` overrides of one run of the matrix (model checkpoint None: the shipped one)."""
    return [
        f"catalog.shear={field.im3shape}", f"catalog.gold={field.gold}",
        f"images.source={images or f'tiles:{field.tiles_dir}'}", f"output.out={out}",
        "output.partition_rows=10", "output.progress=false", "model.measure_recon=false",
        *([f"model.checkpoint={checkpoint}"] if checkpoint else []), *extra,
    ]


def config(field: Field, checkpoint: Path | None, out: Path, images: str | None = None, *extra: str):
    from survey_deblend.config import load
    from survey_deblend.config.run import RunConfig

    return load(RunConfig, None, overrides(field, checkpoint, out, images, *extra))


def parts(out: Path) -> list[Path]:
    """The finished part files of an output folder (hidden temporaries excluded, as pandas excludes them)."""
    return sorted(p for p in out.glob("*.parquet") if not p.name.startswith((".", "_")))


def read_output(out: Path) -> pd.DataFrame:
    if not parts(out):
        return pd.DataFrame({"coadd_objects_id": np.array([], dtype=np.int64), "status": [], "e1_pred": [],
                             "e2_pred": [], "bands_used": []})
    return pd.read_parquet(out, columns=["coadd_objects_id", "status", "e1_pred", "e2_pred", "bands_used"])


def tally(out: Path, selected: np.ndarray) -> dict[str, Any]:
    """Galaxies selected, written, predicted, duplicated, lost (and unexpected), read back from the Parquet."""
    frame = read_output(out)
    ids = frame["coadd_objects_id"].to_numpy()
    return {
        "selected": int(len(selected)), "written": int(len(ids)),
        "predicted": int(np.isfinite(frame["e1_pred"].to_numpy(dtype=float)).sum()),
        "duplicated": int(len(ids) - len(np.unique(ids))),
        "lost": int(len(np.setdiff1d(selected, ids))), "unexpected": int(len(np.setdiff1d(ids, selected))),
        "statuses": {str(k): int(v) for k, v in frame["status"].value_counts().sort_index().items()},
    }


def run_in_process(cfg, client) -> tuple[str | None, float]:
    """``pipeline.run``; returns (the error's one-line message or None, seconds)."""
    from survey_deblend.errors import SurveyDeblendError
    from survey_deblend.pipeline import run

    t0 = time.perf_counter()
    try:
        run(cfg, client, stream=io.StringIO())
    except (SurveyDeblendError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}", time.perf_counter() - t0
    return None, time.perf_counter() - t0


@contextmanager
def on_event(condition: Callable[[], bool], action: Callable[[], None], poll_s: float = 0.01) -> Iterator[dict]:
    """Call ``action`` once, as soon as ``condition()`` holds (polled on a thread); yields {"fired": bool}."""
    state = {"fired": False}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if condition():
                action()
                state["fired"] = True
                return
            time.sleep(poll_s)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(timeout=5)


def kill_a_worker(client) -> Callable[[], None]:
    """An action that SIGKILLs one worker process of ``client``'s LocalCluster (its nanny starts a new one)."""
    pids = sorted(client.run(os.getpid).values())

    def action() -> None:
        os.kill(pids[0], signal.SIGKILL)

    return action


def manifest(out: Path) -> dict[str, Any]:
    """The run manifest of an output folder ({} while there is none, or while it is being replaced)."""
    from survey_deblend.pipeline import MANIFEST_NAME

    try:
        return json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}


KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    # the manifest records the plan (n_partitions) before any partition starts
    "after_planning": lambda out: "n_partitions" in manifest(out),
    "after_first_part": lambda out: len(parts(out)) >= 1,
    "near_end": lambda out: len(parts(out)) >= max(1, int(manifest(out).get("n_partitions", 10**9)) - 1),
}


def cli_command(field: Field, checkpoint: Path | None, out: Path) -> list[str]:
    """``survey-deblend run`` as a user types it (one local worker, so the kill catches work in flight)."""
    sets = [a for o in overrides(field, checkpoint, out)[4:] for a in ("--set", o)]
    return [sys.executable, "-m", "survey_deblend", "run", "--catalog", str(field.im3shape), "--gold",
            str(field.gold), "--images", f"tiles:{field.tiles_dir}", "--out", str(out), "--cluster", "local",
            "--workers", "1", "--no-progress", "--set", "cluster.dashboard_address=:0",
            "--set", "cluster.threads_per_worker=1", *sets]


def run_cli(command: list[str], log: Path, kill_when: Callable[[], bool] | None = None,
            timeout_s: float = 600) -> tuple[int, bool]:
    """Run the command in its own session; SIGKILL its whole process group when ``kill_when()`` holds.

    Returns (exit code, whether the kill fired)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with log.open("a") as handle:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        fired = False
        try:
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and time.monotonic() < deadline:
                if kill_when is not None and not fired and kill_when():
                    os.killpg(proc.pid, signal.SIGKILL)
                    fired = True
                time.sleep(0.01)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait(timeout=60)
    if fired:  # the cluster's processes are in the same group: make sure none is left
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return code, fired


@contextmanager
def small_disk(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``path`` (needs root); unmounted on exit."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(path: Path, leave_bytes: int) -> Path:
    """Fill the file system of ``path`` with a filler file until about ``leave_bytes`` are free."""
    filler = path / "filler.bin"
    free = shutil.disk_usage(path).free
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave_bytes))
    return filler


def truncate_tile(tiles_dir: Path, band: str) -> Path:
    """Cut the first tile file of ``band`` in the middle of its science pixels (header intact, pixels and the
    planes after them, such as the weight map, cut short)."""
    from survey_deblend.cutouts.tiles import read_tile_info

    victim = sorted(p for p in tiles_dir.glob("*.fits") if p.stem.endswith(f"_{band}"))[0]
    with fits.open(victim) as hdul:
        info = hdul.fileinfo(read_tile_info(victim).hdu)
    cut = info["datLoc"] + info["datSpan"] // 2
    with victim.open("r+b") as handle:
        handle.truncate(cut)
    return victim

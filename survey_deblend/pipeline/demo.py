"""The offline demo: a simulated DES-like field, served by the local SIA server (or read as tiles), run exactly
as a user's ``survey-deblend run`` with the shipped checkpoint, then compared with the catalog's im3shape shapes.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from survey_deblend.config import load
from survey_deblend.config.run import RunConfig
from survey_deblend.errors import ConfigError
from survey_deblend.schema import USABLE

FIELD_DIR = "field"
OUT_DIR = "out"


@dataclass(frozen=True)
class DemoField:
    """The files of the demo field the run reads (and the truth the comparison may use)."""

    tiles_dir: Path
    im3shape: Path
    gold: Path
    truth: Path | None


def ensure_field(workdir: Path, n_tiles: int, tile_size_pix: int, seed: int, stream: TextIO) -> DemoField:
    """The DES-like field under ``workdir/field``, simulated with GalSim the first time only."""
    from survey_deblend.sim.field import make_des_field

    field_dir = workdir / FIELD_DIR
    marker = field_dir / "field-complete.txt"
    if not marker.is_file():
        print(f"simulating the DES-like field in {field_dir} ({n_tiles} tiles of {tile_size_pix} px) ...", file=stream)
        paths = make_des_field(field_dir, n_tiles=n_tiles, tile_size_pix=tile_size_pix, seed=seed)
        lines = [str(paths.tiles_dir), str(paths.im3shape), str(paths.gold), str(getattr(paths, "truth", "") or "")]
        marker.write_text("\n".join(lines) + "\n")
    tiles, im3shape, gold, truth = (marker.read_text().splitlines() + [""] * 4)[:4]
    return DemoField(Path(tiles), Path(im3shape), Path(gold), Path(truth) if truth else None)


def demo_config(
    field: DemoField, workdir: Path, images: str, overrides: list[str], values: dict[str, Any] | None = None
) -> RunConfig:
    """The RunConfig of the demo: ``pipelines/demo.yaml``'s settings, ``--set`` overrides, then typed values
    (this work folder's paths and the command's options: never YAML text)."""
    settings = [
        "catalog.match=id",
        "output.partition_rows=500",
        "output.overwrite=true",  # the SIA server's port changes every time: always start over
        *overrides,
    ]
    paths = {"catalog.shear": field.im3shape, "catalog.gold": field.gold, "images.source": images,
             "output.out": workdir / OUT_DIR}  # fmt: skip
    return load(RunConfig, None, settings, values={**paths, **(values or {})})


@contextlib.contextmanager
def image_source(kind: str, tiles_dir: Path) -> Iterator[str]:
    """``tiles:DIR``, or ``sia:URL`` of a local SIA server over the tiles for the duration of the run."""
    if kind == "tiles":
        yield f"tiles:{tiles_dir}"
        return
    if kind != "sia":
        raise ConfigError(f"--images: expected sia or tiles, got '{kind}'")
    from survey_deblend.cutouts.server import running_server

    with running_server(tiles_dir) as url:
        yield f"sia:{url}"


def compare_with_im3shape(frame: pd.DataFrame) -> str:
    """Predicted versus im3shape ellipticities over the usable rows: n, mean difference, RMSE, correlation."""
    usable = frame[frame["status"].isin(list(USABLE))]
    lines = [f"predicted vs im3shape ({len(usable):,} usable of {len(frame):,} galaxies)",
             "component  mean(pred - im3shape)    rmse  pearson r"]
    for comp in ("e1", "e2"):
        pred, ref = usable[f"{comp}_pred"].to_numpy(), usable[f"{comp}_im3shape"].to_numpy()
        good = np.isfinite(pred) & np.isfinite(ref)
        if good.sum() < 2:
            lines.append(f"{comp:<9}  {'n/a':>21}")
            continue
        diff = pred[good] - ref[good]
        r = float(np.corrcoef(pred[good], ref[good])[0, 1]) if np.std(pred[good]) > 0 else float("nan")
        lines.append(f"{comp:<9}  {diff.mean():>21.4f}  {np.sqrt((diff**2).mean()):>6.4f}  {r:>9.3f}")
    return "\n".join(lines)


def write_evaluation_report(out: Path, truth: Path | None, stream: TextIO) -> Path:
    """Print the evaluation stage's main table and write its report into ``out/_report/``."""
    from survey_deblend.evaluation.report import print_main_table, write_report
    from survey_deblend.evaluation.run_eval import evaluate_run

    evaluation = evaluate_run(out, truth=truth if truth and truth.is_file() else None, bootstrap=100)
    print(print_main_table(evaluation), file=stream)  # with the calibrated table: <R>, raw and calibrated <e>
    return write_report(out, evaluation=evaluation)


def demo(
    workdir: Path, images: str = "sia", overrides: list[str] | None = None, n_tiles: int = 2,
    tile_size_pix: int = 1000, seed: int = 0, stream: TextIO | None = None, values: dict[str, Any] | None = None,
) -> int:
    """Build the field if absent, serve it, run the real ``run`` job on a local cluster, compare, report.

    ``overrides`` are ``--set`` strings (YAML values); ``values`` typed settings by dotted key (they win).
    """
    from survey_deblend.cluster import open_client
    from survey_deblend.pipeline.run import run

    stream = stream or sys.stdout
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    field = ensure_field(workdir, n_tiles, tile_size_pix, seed, stream)
    with image_source(images, field.tiles_dir) as source:
        config = demo_config(field, workdir, source, list(overrides or []), values)
        with open_client(config.cluster) as client:
            summary = run(config, client, stream=stream)
    frame = pd.read_parquet(summary.out)
    print(compare_with_im3shape(frame), file=stream)
    report = write_evaluation_report(summary.out, field.truth, stream)
    print(f"report: {report / 'report.html'}", file=stream)
    return 0

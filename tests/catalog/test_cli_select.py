"""``survey-deblend select`` through the real CLI: outputs, config and flags, and every bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_deblend.catalog.synthetic import write_frames
from survey_deblend.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["select", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str, code: int, expected_code: int, *fragments: str) -> None:
    assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("survey-deblend select: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_select_writes_parquet_and_cut_flow(capsys, random_catalogs, tmp_path):
    out = tmp_path / "sel" / "selected.parquet"
    code, stdout, _ = _run(capsys, "--catalog", random_catalogs.im3shape, "--gold", random_catalogs.gold, "--out", out)
    assert code == 0
    table = pd.read_parquet(out)
    flow = json.loads((tmp_path / "sel" / "selected.cutflow.json").read_text())
    assert flow["rows_in"] == 3000 and flow["rows_out"] == len(table) > 0
    assert table["coadd_objects_id"].is_unique and table["snr_w"].gt(20).all()
    assert "SNR_W > 20" in stdout and f"wrote {len(table):,} galaxies" in stdout


def test_config_section_and_flags(capsys, random_catalogs, tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text(
        f"catalog:\n  shear: {random_catalogs.im3shape}\n  gold: {random_catalogs.gold}\n"
        f"  wlinfo: {random_catalogs.wlinfo}\n  cuts:\n    snr_w_min: 40\n"
    )
    out = tmp_path / "a.parquet"
    assert _run(capsys, "--config", config, "--out", out)[0] == 0
    assert pd.read_parquet(out)["snr_w"].min() > 40
    # --set overrides the file, flags override both
    out_b = tmp_path / "b.parquet"
    code, stdout, _ = _run(
        capsys,
        "--config",
        config,
        "--set",
        "catalog.cuts.snr_w_min=60",
        "--match",
        "sky",
        "--radius-arcsec",
        "0.5",
        "--out",
        out_b,
    )
    assert code == 0 and 'sky match in gold.fits (< 0.5")' in stdout
    assert pd.read_parquet(out_b)["snr_w"].min() > 60


def test_bad_config_key_exits_2(capsys, random_catalogs, tmp_path):
    code, _, err = _run(
        capsys,
        "--catalog",
        random_catalogs.im3shape,
        "--gold",
        random_catalogs.gold,
        "--set",
        "catalog.cuts.snr=3",
        "--out",
        tmp_path / "x.parquet",
    )
    _one_line_error(err, code, 2, "unknown key 'catalog.cuts.snr'")


def test_missing_file(capsys, random_catalogs, tmp_path):
    code, _, err = _run(
        capsys, "--catalog", tmp_path / "none.fits", "--gold", random_catalogs.gold, "--out", tmp_path / "x.parquet"
    )
    _one_line_error(err, code, 2, "none.fits: im3shape catalog file not found")


def test_not_fits(capsys, random_catalogs, tmp_path):
    bogus = tmp_path / "gold.fits"
    bogus.write_bytes(b"<html>504 Gateway Timeout</html>")
    code, _, err = _run(capsys, "--catalog", random_catalogs.im3shape, "--gold", bogus, "--out", tmp_path / "x.pq")
    _one_line_error(err, code, 2, "gold.fits: not a FITS or Parquet file (gold catalog)")


def test_missing_column(capsys, clean_frames, tmp_path):
    paths = write_frames(tmp_path, clean_frames)
    im3 = tmp_path / "im3.parquet"
    clean_frames.im3shape.drop(columns="SNR_W").to_parquet(im3)
    code, _, err = _run(capsys, "--catalog", im3, "--gold", paths.gold, "--out", tmp_path / "x.parquet")
    _one_line_error(err, code, 2, "im3.parquet: missing column SNR_W")


def test_wrong_dtype(capsys, clean_frames, tmp_path):
    paths = write_frames(tmp_path, clean_frames)
    gold = clean_frames.gold.assign(COADD_OBJECTS_ID=clean_frames.gold["COADD_OBJECTS_ID"].astype("f8"))
    bad_gold = tmp_path / "gold_float_ids.parquet"
    gold.to_parquet(bad_gold)
    code, _, err = _run(capsys, "--catalog", paths.im3shape, "--gold", bad_gold, "--out", tmp_path / "x.parquet")
    _one_line_error(
        err, code, 2, "gold_float_ids.parquet: column COADD_OBJECTS_ID has dtype float64", "expected an integer"
    )


def test_nan_positions(capsys, clean_frames, tmp_path):
    clean_frames.gold.loc[[2, 5], "RA"] = np.nan
    paths = write_frames(tmp_path, clean_frames)
    code, _, err = _run(capsys, "--catalog", paths.im3shape, "--gold", paths.gold, "--out", tmp_path / "x.parquet")
    _one_line_error(err, code, 2, "gold.fits: 2 rows with NaN or out-of-range RA/DEC (first at row 2)")


def test_duplicate_gold_ids_are_reported(capsys, clean_frames, tmp_path):
    clean_frames.gold = pd.concat([clean_frames.gold, clean_frames.gold.iloc[[0, 1]]], ignore_index=True)
    paths = write_frames(tmp_path, clean_frames)
    out = tmp_path / "x.parquet"
    code, stdout, _ = _run(capsys, "--catalog", paths.im3shape, "--gold", paths.gold, "--out", out)
    assert code == 0 and len(pd.read_parquet(out)) == 12
    assert re.search(r"^duplicate gold IDs \(ignored\) +2$", stdout, re.M)
    assert json.loads((tmp_path / "x.cutflow.json").read_text())["gold_duplicate_ids"] == 2


def test_every_row_cut_exits_1_and_shows_the_cut_flow(capsys, random_catalogs, tmp_path):
    out = tmp_path / "x.parquet"
    code, stdout, err = _run(
        capsys,
        "--catalog",
        random_catalogs.im3shape,
        "--gold",
        random_catalogs.gold,
        "--set",
        "catalog.cuts.snr_w_min=100000",
        "--out",
        out,
    )
    _one_line_error(err, code, 1, "every row was cut")
    assert "SNR_W > 100000" in stdout and "rows in" in stdout
    assert not out.exists()
    assert json.loads((tmp_path / "x.cutflow.json").read_text())["rows_out"] == 0


def test_make_demo_catalog(capsys, tmp_path):
    code, stdout, _ = _run(capsys, "--make-demo-catalog", tmp_path / "demo", "--rows", "300", "--seed", "2")
    assert code == 0 and "300 rows" in stdout
    assert {p.name for p in (tmp_path / "demo").iterdir()} == {"im3shape.fits", "gold.fits", "wlinfo.fits"}


def test_console_script_demo(tmp_path):
    """The installed ``survey-deblend`` command, as ``make demo`` runs it (in a scratch working directory)."""
    script = Path(sys.executable).with_name("survey-deblend")
    result = subprocess.run(
        [str(script), "select", "--demo", "--rows", "2000"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    selected = pd.read_parquet(tmp_path / "catalogs" / "demo" / "selected.parquet")
    assert 0 < len(selected) < 2000 and "wrote" in result.stdout


@pytest.mark.parametrize("argv", [["--match", "nearest"]])
def test_bad_flag_value_is_refused(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(["select", *argv])
    assert info.value.code == 2

"""Evaluation of a run folder: known answers against the truth, the report files, and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from survey_deblend.cli import main
from survey_deblend.errors import InputError
from survey_deblend.evaluation import write_report
from survey_deblend.evaluation.run_eval import evaluate_run

SLOPE, OFFSET = 1.1, 0.01  # the fixture's predictions: SLOPE * truth + OFFSET (conftest.py)


@pytest.fixture(scope="module")
def evaluation(run_folder):
    out, truth, _ = run_folder
    return evaluate_run(out, truth=truth, bootstrap=30)


@pytest.fixture(scope="module")
def report_dir(run_folder, tmp_path_factory):
    """The report of a copy of the run folder, written once through the public function."""
    out, truth, _ = run_folder
    copy = tmp_path_factory.mktemp("report") / "out"
    shutil.copytree(out, copy)
    return write_report(copy, truth=truth, bootstrap=40)


def _by_key(ev) -> dict:
    return {r["key"]: r for r in ev.comparisons}


def test_usable_rows_and_status_counts(evaluation, run_folder):
    table = run_folder[2]
    assert evaluation.n_rows == len(table)
    assert evaluation.status_counts == {k: int(v) for k, v in table["status"].value_counts().items()}
    assert evaluation.n_usable == int(table["status"].isin(["ok", "padded"]).sum())


def test_known_slope_and_offset_against_truth(evaluation):
    rows = _by_key(evaluation)
    pred = rows["pred_vs_truth"]
    for k in (1, 2):
        assert pred[f"m{k}"] == pytest.approx(SLOPE - 1, abs=1e-9)
        assert pred[f"c{k}"] == pytest.approx(OFFSET, abs=1e-9)
        assert pred[f"corr{k}"] == pytest.approx(1.0, abs=1e-12)
    im3 = rows["im3shape_vs_truth"]
    assert im3["rmse"] == pytest.approx(0.05, rel=0.15)  # the fixture's im3shape noise
    assert abs(im3["m1"]) < 4 * im3["m1_err"] + 1e-3
    assert evaluation.verdict["closer_by_rmse"] == "predicted"
    assert evaluation.verdict["closer_by_m"] == "im3shape"
    assert evaluation.truth_unmatched == 0


def test_nbc_correction_is_the_ensemble_formula(evaluation):
    df = evaluation.data
    np.testing.assert_allclose(df["e1_im3shape_nbc"], (df["e1_im3shape"] - 0.002) / 0.9)
    np.testing.assert_allclose(df["e2_im3shape_nbc"], (df["e2_im3shape"] + 0.001) / 0.9)
    assert _by_key(evaluation)["pred_vs_im3shape_nbc"]["weighted"] is True


def test_binned_tables_cover_every_usable_galaxy(evaluation):
    for by in ("snr_w", "mag_true", "tile", "n_neighbours"):
        rows = evaluation.binned[f"pred_vs_truth/{by}"]
        assert sum(r["n"] for r in rows) == evaluation.n_usable, by
        for r in rows:  # the known slope holds in every bin
            assert r["m1"] == pytest.approx(SLOPE - 1, abs=1e-9)
    assert {r["bin"] for r in evaluation.binned["pred_vs_truth/n_neighbours"]} <= {"0", "1", "2", "3+"}
    assert {r["bin"] for r in evaluation.binned["pred_vs_im3shape/tile"]} == {"DES0530-5000", "DES0531-5001"}
    snr_bins = [r["bin"] for r in evaluation.binned["pred_vs_im3shape/snr_w"]]
    assert len(snr_bins) == 5 and snr_bins == sorted(snr_bins, key=lambda b: float(b[1:].split(",")[0]))


def test_sentinel_and_null_rows_are_not_used(tmp_path, make_run):
    make_run_table, write_run_folder = make_run
    table, _ = make_run_table(n=80, seed=3)
    table = table[table["status"].isin(["ok", "padded"])].reset_index(drop=True)
    table.loc[:4, "e1_im3shape"] = -9999.0
    table.loc[5:7, "e2_pred"] = np.nan
    write_run_folder(tmp_path / "out", table, n_parts=1)
    ev = evaluate_run(tmp_path / "out", bootstrap=0)
    assert ev.n_usable == len(table) - 8 and _by_key(ev)["pred_vs_im3shape"]["n"] == len(table) - 8


def test_run_folder_still_reads_with_pandas_after_the_report(report_dir, run_folder):
    """The report sits in ``_report`` so that ``pandas.read_parquet(OUT_DIR)`` (DESIGN.md) keeps working."""
    assert report_dir.name == "_report" and report_dir.parent.name == "out"
    assert len(pd.read_parquet(report_dir.parent)) == len(run_folder[2])


def test_report_files(report_dir):
    for name in ("report.md", "report.html", "metrics.json"):
        assert (report_dir / name).stat().st_size > 500, name
    metrics = json.loads((report_dir / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    keys = {r["key"] for r in metrics["comparisons"]}
    assert keys == {"pred_vs_im3shape", "pred_vs_im3shape_nbc", "recon_vs_im3shape", "pred_vs_truth",
                    "im3shape_vs_truth", "im3shape_nbc_vs_truth", "recon_vs_truth"}
    for r in metrics["comparisons"]:
        assert {"n", "m1", "m1_err", "c1", "c1_err", "m2", "m2_err", "c2", "c2_err", "rmse", "rmse1", "rmse2",
                "corr1", "corr2", "roundness"} <= set(r)
    assert metrics["manifest"]["config_hash"] == "cfg-42" and metrics["truth"]["verdict"]["closer_by_rmse"]
    assert len(metrics["binned"]) == 12
    assert len(metrics["figures"]) == 10
    for name in metrics["figures"]:
        img = mpimg.imread(report_dir / name)
        assert img.shape[0] > 200 and img.shape[1] > 300 and float(np.std(img[..., :3])) > 0.01, name
    md = (report_dir / "report.md").read_text()
    assert "| predicted vs truth | 380 |" in md and "snr_w > 20" in md and "error_http" in md


class _Checker(HTMLParser):
    """Collects external references and checks that non-void tags are balanced."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs and not str(attrs[key]).startswith("data:"):
                self.errors.append(f"external {key} in <{tag}>: {attrs[key][:60]}")
        if tag in ("script", "link", "iframe"):
            self.errors.append(f"<{tag}> present")
        if tag == "img":
            self.images += 1
            assert attrs["src"].startswith("data:image/png;base64,") and len(attrs["src"]) > 5000
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def test_html_is_well_formed_and_self_contained(report_dir):
    text = (report_dir / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert checker.images == 10


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium on this machine (not installed by tests)")
def test_html_opens_in_headless_chromium_without_errors(report_dir, tmp_path):
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={tmp_path}", "--dump-dom", (report_dir / "report.html").as_uri()],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0
    assert "survey-deblend evaluation report" in proc.stdout and proc.stdout.count("<img") == 10
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln or "ERR_" in ln]
    assert console == []


def test_cli_prints_main_table_and_writes_report(run_folder, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(run_folder[0], out)
    assert main(["evaluate", str(out), "--bootstrap", "10"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / '_report' / 'report.html'}" in printed
    assert "predicted vs im3shape (raw)" in printed and "380" in printed
    assert (out / "_report" / "report.html").exists() and (out / "_report" / "metrics.json").exists()
    assert "truth" not in {r["key"].split("_vs_")[-1] for r in json.loads(
        (out / "_report" / "metrics.json").read_text())["comparisons"]}


@pytest.mark.parametrize("case", ["missing", "empty", "bad_column", "bad_truth"])
def test_cli_bad_input_is_one_clear_line(case, run_folder, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["evaluate", str(out)]
    if case == "empty":
        out.mkdir()
    elif case == "bad_column":
        out.mkdir()
        pd.DataFrame({"coadd_objects_id": [1], "status": ["ok"]}).to_parquet(out / "part-0.parquet")
    elif case == "bad_truth":
        shutil.copytree(run_folder[0], out)
        bad = tmp_path / "truth.parquet"
        pd.DataFrame({"coadd_objects_id": [1, 2], "z": [0.1, 0.2]}).to_parquet(bad)
        args += ["--truth", str(bad)]
    assert main(args) == InputError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    expected = {"missing": "does not exist", "empty": "no Parquet parts", "bad_column": "e1_pred",
                "bad_truth": "e1"}[case]
    assert expected in err[0] and str(tmp_path) in err[0]


def test_cli_run_without_usable_rows_writes_report_and_fails(tmp_path, capsys, make_run):
    make_run_table, write_run_folder = make_run
    table, _ = make_run_table(n=20, seed=5)
    table["status"] = "error_timeout"
    table[["e1_pred", "e2_pred"]] = np.nan
    write_run_folder(tmp_path / "out", table, n_parts=1)
    assert main(["evaluate", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable galaxies" in err[0]
    metrics = json.loads((tmp_path / "out" / "_report" / "metrics.json").read_text())
    assert metrics["status_counts"] == {"error_timeout": 20} and metrics["comparisons"] == []


def test_module_entry_point_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "survey_deblend", "evaluate", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "does not exist" in proc.stderr


def test_manifest_variants_and_warnings(tmp_path, make_run):
    """``manifest.json`` is read as well; an unfinished run, a missing part and wrong counts are flagged."""
    make_run_table, write_run_folder = make_run
    table, _ = make_run_table(n=60, seed=9)
    out = write_run_folder(tmp_path / "out", table, n_parts=3, manifest_name="manifest.json")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(state="running", counts={"ok": 1})
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "part-00002.parquet").unlink()
    report = write_report(out, bootstrap=0)
    md = (report / "report.md").read_text()
    assert "state is 'running'" in md and "part-00002.parquet" in md and "differ from the rows read" in md
    assert "| snr_w > 20 | 60 |" in md
    saved = json.loads((report / "metrics.json").read_text())
    assert saved["n_parts"] == 2 and saved["manifest"]["state"] == "running"


def test_magnitude_bins_from_the_gold_catalog_of_the_manifest(tmp_path, make_run):
    """Without a truth file, MAG_AUTO_I comes from the gold catalog the run read (matched by id)."""
    from survey_deblend.catalog.synthetic import write_catalogs

    make_run_table, write_run_folder = make_run
    table, truth = make_run_table(n=120, seed=4)
    objects = truth.assign(ra=table["ra"], dec=table["dec"], snr_w=table["snr_w"])
    paths = write_catalogs(tmp_path / "cat", objects, seed=1)
    out = write_run_folder(tmp_path / "out", table, n_parts=2)
    manifest = json.loads((out / "_manifest.json").read_text())
    manifest["config"]["catalog"] = {"shear": str(paths.im3shape), "gold": str(paths.gold)}
    (out / "_manifest.json").write_text(json.dumps(manifest))
    ev = evaluate_run(out, bootstrap=0)
    expected = truth.set_index("coadd_objects_id")["mag_i"]
    np.testing.assert_allclose(ev.data["mag_true"], expected.loc[ev.data["coadd_objects_id"]].to_numpy(), rtol=1e-6)
    assert sum(r["n"] for r in ev.binned["pred_vs_im3shape/mag_true"]) == ev.n_usable
    assert any("gold" in note for note in ev.notes)
    manifest["config"]["catalog"] = {"gold": str(tmp_path / "moved.fits")}
    (out / "_manifest.json").write_text(json.dumps(manifest))
    ev = evaluate_run(out, bootstrap=0)
    assert "pred_vs_im3shape/mag_true" not in ev.binned and "moved.fits" in ev.notes[0]

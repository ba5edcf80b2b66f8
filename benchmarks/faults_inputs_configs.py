"""Configuration cases of ``faults_inputs.py``: YAML syntax, unknown keys, wrong types, ``--set`` mistakes (select)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from faults_inputs_cases import ID, compare, frame_columns, oracle, read_back, write_fits

from survey_deblend.catalog.synthetic import catalog_frames


def config_cases(folder: Path, Case) -> list:  # noqa: N803
    folder.mkdir(parents=True, exist_ok=True)
    frames = catalog_frames(n=200, seed=4)
    shear = write_fits(folder / "im3shape.fits", frame_columns(frames.im3shape))
    gold = write_fits(folder / "gold.fits", frame_columns(frames.gold))
    base = f"catalog:\n  shear: {shear}\n  gold: {gold}\n"
    texts: dict[str, tuple[str | bytes, tuple[str, ...], bool]] = {
        "valid": (base, (), True),
        "valid with snr 30": (base + "  cuts:\n    snr_w_min: 30\n", (), True),
        "unclosed bracket": (base + "  cuts: [1, 2\n", ("line",), False),
        "tab indentation": (base + "\tcuts: {}\n", ("line",), False),
        "bad mapping": ("catalog: shear: x: y\n", ("line",), False),
        "duplicate anchor": (base + "  cuts: *nothing\n", ("line",), False),
        "top-level list": ("- catalog\n- gold\n", ("top level",), False),
        "top-level scalar": ("42\n", ("top level",), False),
        "empty file": ("", ("catalog.shear",), False),
        "only comments": ("# nothing\n", ("catalog.shear",), False),
        "unknown top-level key": (base + "catalogue: {}\n", ("catalogue",), False),
        "unknown catalog key": (base + "  golds: x\n", ("catalog.golds",), False),
        "unknown cuts key": (base + "  cuts:\n    snr_min: 3\n", ("catalog.cuts.snr_min",), False),
        "catalog is a number": ("catalog: 5\n", ("catalog",), False),
        "catalog is a list": ("catalog: [1, 2]\n", ("catalog",), False),
        "cuts is a string": (base + "  cuts: strict\n", ("catalog.cuts",), False),
        "shear is a number": (f"catalog:\n  shear: 5\n  gold: {gold}\n", ("catalog.shear", "5"), False),
        "shear is a list": (f"catalog:\n  shear: [a, b]\n  gold: {gold}\n", ("catalog.shear",), False),
        "gold is a mapping": (f"catalog:\n  shear: {shear}\n  gold: {{}}\n", ("catalog.gold",), False),
        "chunk_rows string": (base + "  chunk_rows: many\n", ("catalog.chunk_rows",), False),
        "chunk_rows float": (base + "  chunk_rows: 1.5\n", ("catalog.chunk_rows",), False),
        "chunk_rows zero": (base + "  chunk_rows: 0\n", ("chunk_rows",), False),
        "chunk_rows bool": (base + "  chunk_rows: true\n", ("catalog.chunk_rows",), False),
        "chunk_rows 1e3": (base + "  chunk_rows: 1e3\n", ("catalog.chunk_rows",), False),
        "match number": (base + "  match: 3\n", ("catalog.match",), False),
        "match unknown": (base + "  match: nearest\n", ("catalog.match",), False),
        "radius string": (base + "  match_radius_arcsec: wide\n", ("catalog.match_radius_arcsec",), False),
        "radius negative": (base + "  match_radius_arcsec: -1\n", ("match_radius_arcsec",), False),
        "radius nan": (base + "  match_radius_arcsec: .nan\n", ("match_radius_arcsec",), False),
        "snr string": (base + "  cuts:\n    snr_w_min: high\n", ("catalog.cuts.snr_w_min",), False),
        "snr list": (base + "  cuts:\n    snr_w_min: [1]\n", ("catalog.cuts.snr_w_min",), False),
        "snr null": (base + "  cuts:\n    snr_w_min: null\n", ("catalog.cuts.snr_w_min",), False),
        "error_flag_zero string": (base + "  cuts:\n    error_flag_zero: 'yes'\n", ("error_flag_zero",), False),
        "error_flag_zero int": (base + "  cuts:\n    error_flag_zero: 1\n", ("error_flag_zero",), False),
        "scheduler unknown": (base + "  scheduler: fast\n", ("catalog.scheduler",), False),
        "binary garbage": (bytes(range(256)) * 4, ("p.yaml",), False),
        "latin-1 bytes": (base.encode() + b"  # caf\xe9\n", ("p.yaml",), False),
    }
    cases = []
    for i, (tag, (text, names, ok)) in enumerate(texts.items()):
        path = folder / f"c{i}" / "p.yaml"
        path.parent.mkdir()
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        out = folder / f"c{i}" / "sel.parquet"
        argv = ["select", "--config", str(path), "--out", str(out)]
        snr = 30.0 if "snr 30" in tag else 20.0
        check = _config_check(out, shear, gold, snr) if ok else None
        cases.append(Case("config_select", tag, argv, (*names, str(path)) if not ok else (), check))
    out = folder / "set.parquet"
    common = ["select", "--catalog", str(shear), "--gold", str(gold), "--out", str(out)]
    sets = {
        "set without =": (["--set", "catalog.cuts.snr_w_min"], ("catalog.cuts.snr_w_min",)),
        "set empty key": (["--set", "=3"], ("=3",)),
        "set unknown key": (["--set", "catalog.cuts.snr=3"], ("catalog.cuts.snr",)),
        "set bad yaml value": (["--set", "catalog.cuts.snr_w_min=[1"], ("catalog.cuts.snr_w_min",)),
        "set through a scalar": (["--set", "catalog.chunk_rows=5", "--set", "catalog.chunk_rows.x=1"],
                                 ("catalog.chunk_rows",)),
        "set wrong type": (["--set", "catalog.cuts.info_flag_zero=maybe"], ("catalog.cuts.info_flag_zero",)),
        "config missing": (["--config", str(folder / "nope.yaml")], ("nope.yaml",)),
        "config is a directory": (["--config", str(folder)], (str(folder),)),
    }
    for tag, (extra, names) in sets.items():
        cases.append(Case("config_select", tag, [*common, *extra], names, None))
    return cases


def _config_check(out: Path, shear: Path, gold: Path, snr: float):
    def check() -> str | None:
        want = oracle(shear, gold)
        im3 = read_back(shear).set_index(ID)
        want = want[im3.loc[want[ID], "SNR_W"].to_numpy() > snr]
        return compare(pd.read_parquet(out), want)

    return check

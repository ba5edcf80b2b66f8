"""The generated cases of ``faults_inputs.py``: malformed catalogs, configurations and tile folders.

Each builder writes its files under a folder and returns ``Case`` objects (the class is passed in, so this module
stays importable on its own). A case that may succeed carries a ``check`` that compares the output with an
oracle computed here with pandas from the written files read back by astropy/pandas (not by the package).
"""

from __future__ import annotations

import bz2
import gzip
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.table import Table

from survey_deblend.catalog.cuts import POSITION_COLUMNS, SHEAR_COLUMNS
from survey_deblend.catalog.synthetic import catalog_frames

ID = "COADD_OBJECTS_ID"
UNNEEDED = ["CHI2", "MEAN_PSF_E1", "RADIUS", "IS_BULGE"]  # im3shape columns the selection never reads


# ---------------------------------------------------------------- writing malformed files


def write_fits(path: Path, columns: dict[str, np.ndarray], layout: str = "table") -> Path:
    """A FITS file with ``columns`` as a binary table in HDU 1 (``layout``: table, hdu2, ascii, primary)."""
    if layout == "ascii":
        ascii_columns = [fits.Column(name=n, format="E15.7", array=np.asarray(v, float)) for n, v in columns.items()]
        hdus = [fits.PrimaryHDU(), fits.TableHDU.from_columns(ascii_columns)]
    elif layout == "primary":
        hdus = [fits.PrimaryHDU(np.zeros((3, 3), np.float32))]
    else:
        table = fits.BinTableHDU(Table(columns))
        image = [fits.ImageHDU(np.zeros((4, 4), np.float32))] if layout == "hdu2" else []
        hdus = [fits.PrimaryHDU(), *image, table]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def write_parquet(path: Path, columns: dict[str, object], row_group_size: int | None = None) -> Path:
    arrays = {n: v if isinstance(v, pa.Array) else pa.array(np.asarray(v)) for n, v in columns.items()}
    pq.write_table(pa.table(arrays), path, row_group_size=row_group_size)
    return path


def frame_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The frame's columns as numpy arrays (text columns as fixed-width strings, which FITS can hold)."""
    columns = {name: frame[name].to_numpy() for name in frame.columns}
    return {name: values.astype(str) if values.dtype == object else values for name, values in columns.items()}


def mistyped(values: np.ndarray, kind: str, fmt: str):
    """``values`` turned into another type: string, vector, the other numeric kind, bool, or with nulls."""
    if kind == "string":
        return np.array([f"v{v}" for v in values])
    if kind == "vector":
        return np.stack([values, values], axis=1) if fmt == "fits" else pa.array([[v, v] for v in values.tolist()])
    if kind == "kind":
        return values.astype(np.float64) if values.dtype.kind in "iu" else np.round(values).astype(np.int64)
    if kind == "bool":
        return values != 0
    if kind == "nulls":
        mask = np.zeros(len(values), bool)
        mask[::7] = True
        return pa.array(values, mask=mask)
    raise ValueError(kind)


def gzip_file(src: Path, dst: Path, cut: int | None = None) -> Path:
    blob = gzip.compress(src.read_bytes(), 6)
    dst.write_bytes(blob if cut is None else blob[:cut])
    return dst


# ---------------------------------------------------------------- the oracle


def read_back(path: Path) -> pd.DataFrame:
    """A catalog read by astropy (FITS, gz) or pandas (Parquet): the oracle's own reader."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a file missing only its padding reads whole, with a warning
        table = Table.read(path, hdu=1)
    return pd.DataFrame({n: np.asarray(table[n]).astype(table[n].dtype.newbyteorder("=")) for n in table.colnames
                         if table[n].ndim == 1})


def oracle(shear: Path, positions: Path) -> pd.DataFrame:
    """The DESIGN.md default selection, ID-joined to the first row of each position ID: id, ra, dec."""
    im3, pos = read_back(shear), read_back(positions)
    e1, e2 = im3["E_1"].to_numpy(float), im3["E_2"].to_numpy(float)
    with np.errstate(all="ignore"):
        keep = (np.isfinite(e1) & np.isfinite(e2) & (e1 != -9999) & (e2 != -9999) & (e1 * e1 + e2 * e2 < 1)
                & (im3["ERROR_FLAG"] == 0) & (im3["INFO_FLAG"] == 0) & (im3["SNR_W"].to_numpy(float) > 20))
    first = pos.drop_duplicates(ID)[[ID, "RA", "DEC"]]
    return im3.loc[keep, [ID]].merge(first, on=ID, how="inner")


def selection_check(out: Path, shear: Path, positions: Path) -> Callable[[], str | None]:
    """Compare the written selection (and its cut flow) with the oracle."""

    def check() -> str | None:
        import json

        got = pd.read_parquet(out)
        want = oracle(shear, positions)
        flow = json.loads(out.with_name(out.stem + ".cutflow.json").read_text())
        if flow["rows_in"] != len(read_back(shear)):
            return f"cut flow says {flow['rows_in']} rows in, the file has {len(read_back(shear))}"
        return compare(got, want)

    return check


def sky_check(out: Path, shear: Path, wlinfo: Path, gold: Path) -> Callable[[], str | None]:
    """With an unbounded radius every selected row gets the nearest gold row (astropy's match_to_catalog_sky)."""

    def check() -> str | None:
        from astropy.coordinates import SkyCoord

        selected = oracle(shear, wlinfo)
        first_gold = read_back(gold).drop_duplicates(ID)
        mine = SkyCoord(selected["RA"].to_numpy(), selected["DEC"].to_numpy(), unit="deg")
        theirs = SkyCoord(first_gold["RA"].to_numpy(), first_gold["DEC"].to_numpy(), unit="deg")
        nearest = mine.match_to_catalog_sky(theirs)[0]
        want = pd.DataFrame({ID: selected[ID].to_numpy(), "RA": first_gold["RA"].to_numpy()[nearest],
                             "DEC": first_gold["DEC"].to_numpy()[nearest]})
        return compare(pd.read_parquet(out), want)

    return check


def compare(got: pd.DataFrame, want: pd.DataFrame) -> str | None:
    ids = got["coadd_objects_id"]
    if not ids.is_unique:
        return f"{int(ids.duplicated().sum())} galaxies written twice"
    missing = set(want[ID]) - set(ids)
    extra = set(ids) - set(want[ID])
    if missing or extra:
        return f"{len(missing)} selected galaxies missing, {len(extra)} unexpected (of {len(want)})"
    merged = want.merge(got, left_on=ID, right_on="coadd_objects_id")
    if not (np.allclose(merged["RA"], merged["ra"]) and np.allclose(merged["DEC"], merged["dec"])):
        return "positions differ from the position catalog's"
    return None


# ---------------------------------------------------------------- catalog cases (select)


def catalog_cases(folder: Path, Case) -> list:  # noqa: N803 - the class is a parameter
    folder.mkdir(parents=True, exist_ok=True)
    frames = catalog_frames(n=400, seed=3)
    im3, gold, wlinfo = frames.im3shape, frames.gold, frames.wlinfo
    good = {"fits": {}, "parquet": {}}
    for fmt, writer in (("fits", write_fits), ("parquet", write_parquet)):
        for name, frame in (("im3shape", im3), ("gold", gold), ("wlinfo", wlinfo)):
            good[fmt][name] = writer(folder / f"good_{name}.{fmt}", frame_columns(frame))
    cases = []
    counter = iter(range(10**6))

    def add(cls, name, shear, gold_path, names, ok, extra_args=(), positions=None):
        out = folder / f"out{next(counter)}" / "sel.parquet"
        argv = ["select", "--catalog", str(shear), "--gold", str(gold_path), "--out", str(out), *extra_args]
        check = selection_check(out, shear, positions or gold_path) if ok else None
        cases.append(Case(cls, name, argv, tuple(names), check))

    def shear_file(fmt, tag, columns, **kw):
        path = folder / f"im3shape_{tag}.{fmt}"
        return (write_fits if fmt == "fits" else write_parquet)(path, columns, **kw)

    def broken(columns: dict, column: str, kind: str, fmt: str) -> dict:
        """``columns`` with ``column`` dropped (``kind`` "missing") or given another type."""
        if kind == "missing":
            del columns[column]
        else:
            columns[column] = mistyped(columns[column], kind, fmt)
        return columns

    # one needed column missing or of another type, in each format
    for fmt in ("fits", "parquet"):
        kinds = ["missing", "string", "vector", "kind", "bool"] + (["nulls"] if fmt == "parquet" else [])
        for column in SHEAR_COLUMNS:
            for kind in kinds:
                columns = broken(frame_columns(im3), column, kind, fmt)
                path = shear_file(fmt, f"{column}_{kind}", columns)
                ok = kind == "nulls" and im3[column].dtype.kind == "f"  # a null float is NaN, then cut
                add(f"shear_column_{fmt}", f"{column} {kind}", path, good[fmt]["gold"], (path.name, column), ok)
        for column in POSITION_COLUMNS:
            for kind in kinds:
                columns = broken(frame_columns(gold), column, kind, fmt)
                path = (write_fits if fmt == "fits" else write_parquet)(folder / f"gold_{column}_{kind}.{fmt}", columns)
                add(f"gold_column_{fmt}", f"{column} {kind}", good[fmt]["im3shape"], path, (path.name, column), False)
        for column in UNNEEDED:  # columns the selection does not read may be anything
            columns = frame_columns(im3)
            columns[column] = mistyped(columns[column], "string", fmt)
            path = shear_file(fmt, f"unneeded_{column}", columns)
            add(f"shear_column_{fmt}", f"unneeded {column} string", path, good[fmt]["gold"], (path.name,), True)

    _value_cases(folder, im3, gold, good, add, shear_file)
    _structure_cases(folder, im3, good, add)
    cases += _wlinfo_and_flag_cases(folder, Case, good, wlinfo, counter)
    return cases


def _value_cases(folder, im3, gold, good, add, shear_file) -> None:
    """Well-typed files with odd values: NaN, inf, huge, extreme IDs, duplicates, empty."""
    int64_max = np.iinfo(np.int64).max
    edits: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], bool]] = {
        "nan_e1": (lambda f: f.assign(E_1=np.where(np.arange(len(f)) % 9 == 0, np.nan, f["E_1"])), True),
        "inf_snr": (lambda f: f.assign(SNR_W=np.where(np.arange(len(f)) % 5 == 0, np.inf, f["SNR_W"])), True),
        "nan_snr": (lambda f: f.assign(SNR_W=np.where(np.arange(len(f)) % 5 == 0, np.nan, f["SNR_W"])), True),
        "huge_e": (lambda f: f.assign(E_1=np.where(np.arange(len(f)) % 4 == 0, 1e300, f["E_1"])), True),
        "huge_snr": (lambda f: f.assign(SNR_W=np.float32(3e38)), True),
        "e_exactly_one": (lambda f: f.assign(E_1=np.where(np.arange(len(f)) % 3 == 0, 1.0, f["E_1"]), E_2=0.0), True),
        "huge_flags": (lambda f: f.assign(ERROR_FLAG=np.where(np.arange(len(f)) % 3 == 0, 2**31 - 1, 0)), True),
        "nan_nbc_w": (lambda f: f.assign(NBC_M=np.nan, W=np.inf), True),
        "one_row": (lambda f: f[f["ERROR_FLAG"].eq(0) & f["INFO_FLAG"].eq(0) & f["SNR_W"].gt(40)].head(1), True),
        "shuffled_columns": (lambda f: f[list(reversed(f.columns))], True),
        "extra_columns": (lambda f: f.assign(RA=np.nan, EXTRA=np.arange(len(f))), True),
        "lowercase_names": (lambda f: f.rename(columns=str.lower), False),
        "all_unmeasured": (lambda f: f.assign(E_1=-9999.0, E_2=-9999.0), False),
        "empty": (lambda f: f.iloc[:0], False),
        "duplicated_ids": (lambda f: f.assign(**{ID: np.where(np.arange(len(f)) % 10 == 1, f[ID].shift(1, fill_value=0),
                                                              f[ID])}), False),
    }
    for fmt in ("fits", "parquet"):
        for tag, (edit, ok) in edits.items():
            frame = edit(im3.copy())
            path = shear_file(fmt, f"value_{tag}", frame_columns(frame))
            names = (path.name, "E_1", "COADD_OBJECTS_ID")
            add(f"shear_values_{fmt}", tag, path, good[fmt]["gold"], names, ok)
    # extreme IDs, written to both catalogs so that they match
    for tag, ids in (("id_int64_max", lambda f: f[ID].where(np.arange(len(f)) != 5, int64_max)),
                     ("id_negative", lambda f: -f[ID])):
        shear_frame, gold_frame = im3.copy(), gold.copy()
        mapping = dict(zip(shear_frame[ID], ids(shear_frame), strict=True))
        shear_frame[ID] = shear_frame[ID].map(mapping)
        gold_frame[ID] = gold_frame[ID].map(lambda v, m=mapping: m.get(v, v))
        shear_path = shear_file("fits", f"value_{tag}", frame_columns(shear_frame))
        gold_path = write_fits(folder / f"gold_value_{tag}.fits", frame_columns(gold_frame))
        add("shear_values_fits", tag, shear_path, gold_path, (shear_path.name,), True)
    huge = pa.array(im3[ID].to_numpy().astype(np.uint64) + np.uint64(2**63))
    path = write_parquet(folder / "im3shape_id_uint64_huge.parquet", {**frame_columns(im3), ID: huge})
    add("shear_values_parquet", "id uint64 beyond int64", path, good["parquet"]["gold"], (path.name, ID), False)
    small = pa.array(im3[ID].to_numpy().astype(np.uint64))
    path = write_parquet(folder / "im3shape_id_uint64.parquet", {**frame_columns(im3), ID: small})
    add("shear_values_parquet", "id uint64 in range", path, good["parquet"]["gold"], (path.name,), True)
    path = write_parquet(folder / "im3shape_row_groups.parquet", frame_columns(im3), row_group_size=7)
    add("shear_values_parquet", "row groups of 7", path, good["parquet"]["gold"], (path.name,), True)
    for tag, values in (("timestamp", pa.array(np.zeros(len(im3), "datetime64[s]"))),
                        ("decimal", pa.array([None] * len(im3), pa.decimal128(5, 2))),
                        ("dictionary", pa.array([f"x{i % 3}" for i in range(len(im3))]).dictionary_encode())):
        path = write_parquet(folder / f"im3shape_snr_{tag}.parquet", {**frame_columns(im3), "SNR_W": values})
        add("shear_column_parquet", f"SNR_W {tag}", path, good["parquet"]["gold"], (path.name, "SNR_W"), False)
    # positions: bad values, duplicates, nothing in common
    position_edits = {
        "nan_ra": (lambda f: f.assign(RA=np.where(np.arange(len(f)) == 3, np.nan, f["RA"])), False),
        "inf_dec": (lambda f: f.assign(DEC=np.where(np.arange(len(f)) == 8, -np.inf, f["DEC"])), False),
        "dec_91": (lambda f: f.assign(DEC=np.where(np.arange(len(f)) == 8, 91.0, f["DEC"])), False),
        "ra_huge": (lambda f: f.assign(RA=np.where(np.arange(len(f)) == 8, 1e308, f["RA"])), False),
        "ra_negative": (lambda f: f.assign(RA=f["RA"] - 360.0), True),
        "duplicated_ids": (lambda f: pd.concat([f, f.iloc[::3].assign(RA=0.0)], ignore_index=True), True),
        "no_common_ids": (lambda f: f.assign(**{ID: f[ID] + 10**12}), False),
        "empty": (lambda f: f.iloc[:0], False),
    }
    for fmt in ("fits", "parquet"):
        for tag, (edit, ok) in position_edits.items():
            columns = frame_columns(edit(gold.copy()))
            path = (write_fits if fmt == "fits" else write_parquet)(folder / f"gold_value_{tag}.{fmt}", columns)
            add(f"gold_values_{fmt}", tag, good[fmt]["im3shape"], path, (path.name, "RA", "DEC"), ok)


def _structure_cases(folder, im3, good, add) -> None:
    """Broken files: truncated, wrong HDU, not FITS, compressed, unreadable paths."""
    good_fits, good_gold = good["fits"]["im3shape"], good["fits"]["gold"]
    raw = good_fits.read_bytes()
    with fits.open(good_fits) as hdul:
        data_end = hdul[1].fileinfo()["datLoc"] + hdul[1].header["NAXIS1"] * hdul[1].header["NAXIS2"]
    files: dict[str, tuple[Path, bool]] = {}
    for cut in (0, 100, 2880, 5000, len(raw) // 2, data_end - 1, len(raw) - 1):
        path = folder / f"im3shape_cut{cut}.fits"
        path.write_bytes(raw[:cut])
        files[f"fits truncated at {cut} B"] = (path, cut >= data_end)  # only the padding lost: still complete
    for layout in ("hdu2", "ascii", "primary"):
        files[f"fits layout {layout}"] = (write_fits(folder / f"im3shape_{layout}.fits", frame_columns(im3), layout),
                                          False)
    text = folder / "im3shape_text.fits"
    text.write_text("COADD_OBJECTS_ID,E_1\n1,0.1\n")
    files["text named .fits"] = (text, False)
    files["gzip"] = (gzip_file(good_fits, folder / "im3shape_ok.fits.gz"), True)
    for cut in (10, 3000, 20000, -8):
        size = len(gzip.compress(raw, 6))
        files[f"gzip truncated at {cut % size} B"] = (gzip_file(good_fits, folder / f"im3shape_gzcut{cut}.fits.gz",
                                                                cut=cut % size), False)
    files["gzip of a short FITS"] = (gzip_file(folder / "im3shape_cut5000.fits", folder / "im3shape_gzshort.fits.gz"),
                                     False)
    files["gzip of text"] = (gzip_file(text, folder / "im3shape_gztext.fits.gz"), False)
    files["gzip of gzip"] = (gzip_file(folder / "im3shape_ok.fits.gz", folder / "im3shape_gzgz.fits.gz"), False)
    bz = folder / "im3shape.fits.bz2"
    bz.write_bytes(bz2.compress(raw))
    files["bzip2"] = (bz, False)
    parquet_raw = good["parquet"]["im3shape"].read_bytes()
    for cut in (4, len(parquet_raw) // 2, len(parquet_raw) - 3):
        path = folder / f"im3shape_pqcut{cut}.parquet"
        path.write_bytes(parquet_raw[:cut])
        files[f"parquet truncated at {cut} B"] = (path, False)
    files["a directory"] = (folder, False)
    files["missing file"] = (folder / "nope_im3shape.fits", False)
    for tag, (path, ok) in files.items():
        add("shear_files", tag, path, good_gold, (path.name,), ok,
            positions=good_gold)
    gz_gold = gzip_file(good_gold, folder / "gold_ok.fits.gz")
    add("gold_files", "gold gzip", good_fits, gz_gold, (gz_gold.name,), True)
    cut_gold = gzip_file(good_gold, folder / "gold_gzcut.fits.gz", cut=4000)
    add("gold_files", "gold gzip truncated", good_fits, cut_gold, (cut_gold.name,), False)
    half = folder / "gold_cut.fits"
    half.write_bytes(good_gold.read_bytes()[: good_gold.stat().st_size // 2])
    add("gold_files", "gold truncated", good_fits, half, (half.name,), False)
    add("gold_files", "gold missing", good_fits, folder / "nope_gold.fits", ("nope_gold.fits",), False)
    image = write_fits(folder / "gold_hdu2.fits", {"RA": np.zeros(3)}, "hdu2")
    add("gold_files", "gold table in HDU 2", good_fits, image, (image.name,), False)


def _wlinfo_and_flag_cases(folder, Case, good, wlinfo, counter) -> list:  # noqa: N803
    """wlinfo as the position source, and command-line flags with bad values."""
    cases = []
    shear, gold, wl = good["fits"]["im3shape"], good["fits"]["gold"], good["fits"]["wlinfo"]

    def out() -> Path:
        return folder / f"out{next(counter)}" / "sel.parquet"

    target = out()
    cases.append(Case("wlinfo", "wlinfo id match", ["select", "--catalog", str(shear), "--wlinfo", str(wl),
                                                      "--out", str(target)], (wl.name,),
                      selection_check(target, shear, wl)))
    for tag, edit in (("missing RA", lambda f: f.drop(columns="RA")), ("nan DEC", lambda f: f.assign(DEC=np.nan)),
                      ("one row short", lambda f: f.iloc[:-1]), ("reversed", lambda f: f.iloc[::-1])):
        path = write_fits(folder / f"wlinfo_{tag.replace(' ', '_')}.fits", frame_columns(edit(wlinfo.copy())))
        target = out()
        argv = ["select", "--catalog", str(shear), "--gold", str(gold), "--wlinfo", str(path), "--match", "sky",
                "--out", str(target)]
        cases.append(Case("wlinfo", f"sky match, wlinfo {tag}", argv, (path.name, "RA", "DEC"), None))
    flags = {
        "chunk-rows 0": ["--chunk-rows", "0"],
        "chunk-rows -5": ["--chunk-rows", "-5"],
        "chunk-rows abc": ["--chunk-rows", "abc"],
        "radius 0": ["--match", "sky", "--radius-arcsec", "0"],
        "radius -1": ["--match", "sky", "--radius-arcsec", "-1"],
        "radius nan": ["--match", "sky", "--radius-arcsec", "nan"],
        "radius inf": ["--match", "sky", "--radius-arcsec", "inf"],
        "match bogus": ["--match", "nearest"],
    }
    for tag, extra in flags.items():
        target = out()
        argv = ["select", "--catalog", str(shear), "--gold", str(gold), "--wlinfo", str(wl), "--out", str(target),
                *extra]
        check = sky_check(target, shear, wl, gold) if tag == "radius inf" else None  # inf: the nearest, however far
        cases.append(Case("select_flags", tag, argv, ("chunk", "radius", "match"), check))
    argv = ["select", "--catalog", str(shear), "--gold", str(gold), "--out", str(folder)]
    cases.append(Case("select_flags", "out is a directory", argv, (str(folder),), None))
    argv = ["select", "--catalog", str(shear), "--gold", str(gold), "--out", "/proc/version/sel.parquet"]
    cases.append(Case("select_flags", "out not writable", argv, ("/proc/version",), None))
    cases.append(Case("select_flags", "no out", ["select", "--catalog", str(shear), "--gold", str(gold)], ("--out",)))
    cases.append(Case("select_flags", "no catalog", ["select", "--out", str(out())], ("catalog",)))
    return cases


def config_cases(folder: Path, Case) -> list:  # noqa: N803
    """Configuration files and ``--set`` mistakes for ``select`` (faults_inputs_configs)."""
    from faults_inputs_configs import config_cases as build

    return build(folder, Case)


def pipeline_cases(folder: Path, Case, cluster_address: str | None) -> list:  # noqa: N803
    """``run`` cases: tile folders, catalogs through the whole job, run configurations (faults_inputs_run)."""
    from faults_inputs_run import pipeline_cases as build

    return build(folder, Case, cluster_address)


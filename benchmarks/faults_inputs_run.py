"""The ``run`` cases of ``faults_inputs.py``: tile folders, catalogs through the whole job, run configurations.

A small DES-like field (two coadd tiles with TAN WCS, five bands, catalogs in the SVA1 schema) and an untrained
checkpoint are written once; every case runs ``survey-deblend run`` on the fuzz's own cluster (``--cluster
tcp://...``) with one thing broken. A successful run must write every selected galaxy exactly once.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from faults_inputs_cases import compare, frame_columns, oracle, write_fits

from survey_deblend.catalog.synthetic import FIRST_ID, write_catalogs
from survey_deblend.cutouts.synthetic import DES_PIXEL_SCALE_ARCSEC, Blob, write_field

CENTRES = [(60.0, -45.0), (60.02, -45.0)]
TILE_PIX = 120


def make_field(folder: Path, per_tile: int = 8, seed: int = 0):
    """Tiles and catalogs: ``per_tile`` galaxies inside each tile, 2 off the survey, 2 cut by SNR."""
    rng = np.random.default_rng(seed)
    half = 0.35 * TILE_PIX * DES_PIXEL_SCALE_ARCSEC / 3600.0
    ra = np.concatenate([r + rng.uniform(-half, half, per_tile) / np.cos(np.radians(d)) for r, d in CENTRES]
                        + [np.array([70.0, 70.1])])
    dec = np.concatenate([d + rng.uniform(-half, half, per_tile) for _, d in CENTRES] + [np.array([-50.0, -50.0])])
    n = len(ra)
    snr = rng.uniform(25.0, 200.0, n)
    snr[:2] = 10.0
    angle = rng.uniform(0, np.pi, n)
    objects = pd.DataFrame({"coadd_objects_id": FIRST_ID + 7 * np.arange(n, dtype=np.int64), "ra": ra, "dec": dec,
                            "e1": 0.3 * np.cos(2 * angle), "e2": 0.3 * np.sin(2 * angle), "snr_w": snr,
                            "mag_i": rng.uniform(20.0, 23.0, n)})
    blobs = [Blob(r, d, 10 ** (-0.4 * (m - 30.0)), 0.5, 0.4) for r, d, m in zip(ra, dec, objects["mag_i"], strict=True)]
    tiles = folder / "tiles"
    write_field(tiles, CENTRES, blobs, tile_size_pix=TILE_PIX, noise_sigma=1.0, seed=seed)
    return tiles, write_catalogs(folder / "catalogs", objects, seed=seed)


def _tile_variant(tiles: Path, folder: Path, name: str, edit) -> Path:
    """A copy of the tile folder with ``edit(first_tile_path)`` applied."""
    target = folder / "variants" / name
    shutil.copytree(tiles, target)
    edit(sorted(target.glob("*.fits"))[0], target)
    return target


def _rewrite_header(drop: tuple[str, ...] = (), **cards):
    def edit(path: Path, _folder: Path) -> None:
        with fits.open(path) as hdul:
            header, data = hdul[1].header.copy(), hdul[1].data.copy()
        for key in drop:
            header.remove(key, ignore_missing=True, remove_all=True)
        for key, value in cards.items():
            header[key] = value
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=header)]).writeto(path, overwrite=True)

    return edit


def _truncate(fraction: float):
    def edit(path: Path, _folder: Path) -> None:
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * fraction)])

    return edit


def _nan_pixels(path: Path, _folder: Path) -> None:
    with fits.open(path) as hdul:
        header, data = hdul[1].header.copy(), hdul[1].data.copy()
    data[:] = np.nan
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=header)]).writeto(path, overwrite=True)


def _cube(path: Path, _folder: Path) -> None:
    with fits.open(path) as hdul:
        data = hdul[1].data.copy()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.stack([data, data]))]).writeto(path, overwrite=True)


def _gzip_tile(path: Path, _folder: Path) -> None:
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()


def _rename(path: Path, folder: Path) -> None:
    _rewrite_header(drop=("TILENAME", "BAND"))(path, folder)
    path.rename(path.with_name("mystery.fits"))


TILE_EDITS = {
    "extra text file": (lambda p, f: (f / "README.txt").write_text("tiles\n"), True),
    "subfolder": (lambda p, f: (f / "old").mkdir(), True),
    "tile is text": (lambda p, f: p.write_text("SIMPLE = T\n"), False),
    "tile zero bytes": (lambda p, f: p.write_bytes(b""), False),
    "tile without WCS": (_rewrite_header(drop=("CTYPE1", "CTYPE2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CRVAL1",
                                               "CRVAL2", "CRPIX1", "CRPIX2")), False),
    "tile with a broken CTYPE": (_rewrite_header(CTYPE1="RA---XYZ"), False),
    "tile without MAGZERO": (_rewrite_header(drop=("MAGZERO",)), True),
    "tile with MAGZERO text": (_rewrite_header(MAGZERO="thirty"), True),
    "tile truncated in its data": (_truncate(0.6), True),  # its galaxies keep their rows, status error_bad_fits
    "tile truncated in its header": (_truncate(0.004), False),
    "tile with a 3-D image": (_cube, False),
    "tile of NaN pixels": (_nan_pixels, True),
    "tile gzipped": (_gzip_tile, True),
    "tile named without tile or band": (_rename, False),
    "broken symlink": (lambda p, f: (f / "DES9999-5000_r0001p01_g.fits").symlink_to(f / "gone.fits"), True),
    "one band missing": (lambda p, f: p.unlink(), True),
}


def pipeline_cases(folder: Path, Case, cluster_address: str | None) -> list:  # noqa: N803
    from survey_deblend.models.checkpoint import write_untrained_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    tiles, paths = make_field(folder)
    checkpoint = write_untrained_checkpoint(folder / "untrained.pt", seed=0)
    counter = iter(range(10**6))
    cases = []

    def argv(shear=paths.im3shape, gold=paths.gold, images=None, *extra, out=None, with_gold=True):
        out = out or folder / f"out{next(counter)}"
        args = ["run", "--catalog", str(shear), *(["--gold", str(gold)] if with_gold else []),
                "--images", images or f"tiles:{tiles}", "--model", str(checkpoint), "--cluster", str(cluster_address),
                "--out", str(out), "--no-progress", "--set", "model.measure_recon=false",
                "--set", "output.partition_rows=6", *extra]
        return args, out

    def run_check(out: Path, shear: Path, gold: Path):
        def check() -> str | None:
            return compare(pd.read_parquet(out), oracle(shear, gold))

        return check

    args, out = argv()
    cases.append(Case("run_tiles", "good field", args, (), run_check(out, paths.im3shape, paths.gold)))
    for tag, (edit, ok) in TILE_EDITS.items():
        variant = _tile_variant(tiles, folder, f"v{next(counter)}", edit)
        args, out = argv(images=f"tiles:{variant}")
        names = (str(variant), variant.name)
        cases.append(Case("run_tiles", tag, args, names, run_check(out, paths.im3shape, paths.gold) if ok else None))
    empty = folder / "variants" / "empty"
    empty.mkdir(parents=True)
    only_text = folder / "variants" / "text_only"
    only_text.mkdir()
    (only_text / "notes.txt").write_text("x")
    for tag, images in (("empty folder", f"tiles:{empty}"), ("missing folder", f"tiles:{folder / 'nope'}"),
                        ("folder is a file", f"tiles:{paths.gold}"), ("only a text file", f"tiles:{only_text}"),
                        ("no folder named", "tiles:"), ("unknown source kind", "ftp://x")):
        args, _ = argv(images=images)
        cases.append(Case("run_tiles", tag, args, (images.partition(":")[2] or images, "images"), None,
                          {"subprocess": tag == "missing folder"}))
    cases += _catalog_cases(folder, paths, argv, run_check, Case)
    cases += _config_cases(folder, argv, checkpoint, Case)
    return cases


def _catalog_cases(folder: Path, paths, argv, run_check, Case) -> list:  # noqa: N803
    cases = []
    release = folder / "release"
    release.mkdir()
    shear_gz = release / "sva1_gold_r1.0_im3shape.fits.gz"
    shear_gz.write_bytes(gzip.compress(paths.im3shape.read_bytes()))
    shutil.copy(paths.gold, release / "sva1_gold_r1.0_catalog.fits")
    args, out = argv(shear_gz, with_gold=False)
    cases.append(Case("run_catalogs", "release .fits.gz alone, gold beside", args, (),
                      run_check(out, paths.im3shape, paths.gold), {"subprocess": True}))
    im3 = pd.DataFrame(frame_columns_from(paths.im3shape))
    gold = pd.DataFrame(frame_columns_from(paths.gold))
    broken = {
        "shear missing E_2": (im3.drop(columns="E_2"), gold, "E_2"),
        "shear repeated IDs": (im3.assign(**{"COADD_OBJECTS_ID": im3["COADD_OBJECTS_ID"].where(
            np.arange(len(im3)) != 5, im3["COADD_OBJECTS_ID"].iloc[6])}), gold, "COADD_OBJECTS_ID"),
        "shear empty": (im3.iloc[:0], gold, "im3shape"),
        "gold NaN RA": (im3, gold.assign(RA=np.where(np.arange(len(gold)) == 4, np.nan, gold["RA"])), "RA"),
        "gold DEC string": (im3, gold.assign(DEC=gold["DEC"].map(str)), "DEC"),
    }
    for tag, (shear_frame, gold_frame, column) in broken.items():
        base = folder / "broken" / tag.replace(" ", "_")
        base.mkdir(parents=True)
        shear = write_fits(base / "im3shape.fits", frame_columns(shear_frame))
        gold_path = write_fits(base / "gold.fits", frame_columns(gold_frame))
        args, _ = argv(shear, gold_path)
        cases.append(Case("run_catalogs", tag, args, (column, str(base)), None))
    return cases


def frame_columns_from(path: Path) -> dict[str, np.ndarray]:
    from faults_inputs_cases import read_back

    return frame_columns(read_back(path))


def _config_cases(folder: Path, argv, checkpoint: Path, Case) -> list:  # noqa: N803
    text = folder / "not_a_model.pt"
    text.write_text("not a checkpoint")
    overrides = {
        "images.concurrency 0": ("images.concurrency=0", "images.concurrency"),
        "images.bands empty": ("images.bands=[]", "images.bands"),
        "images.bands unknown": ("images.bands=[q]", "bands q"),
        "images.timeout_s negative": ("images.timeout_s=-1", "images.timeout_s"),
        "images.retries negative": ("images.retries=-1", "images.retries"),
        "images.pixel_scale_arcsec 0": ("images.pixel_scale_arcsec=0", "images.pixel_scale_arcsec"),
        "output.partition_rows 0": ("output.partition_rows=0", "output.partition_rows"),
        "output.partition_rows text": ("output.partition_rows=many", "output.partition_rows"),
        "model.batch_size 0": ("model.batch_size=0", "model.batch_size"),
        "model.stamp_size_pix -3": ("model.stamp_size_pix=-3", "model.stamp_size_pix"),
        "model.device tpu": ("model.device=tpu", "model.device"),
        "model.checkpoint text": (f"model.checkpoint={text}", text.name),
        "model.checkpoint missing": (f"model.checkpoint={folder / 'gone.pt'}", "gone.pt"),
        "cluster.kind bogus": ("cluster.kind=bogus", "cluster"),
        "cluster.n_workers text": ("cluster.n_workers=two", "cluster.n_workers"),
        "unknown key": ("output.colour=blue", "output.colour"),
    }
    cases = []
    for tag, (override, name) in overrides.items():
        args, _ = argv()
        if override.startswith(("model.checkpoint", "cluster.kind")):  # the flag would win over --set
            flag = "--model" if override.startswith("model") else "--cluster"
            args[args.index(flag) + 1] = override.partition("=")[2]
        else:
            args += ["--set", override]
        cases.append(Case("run_config", tag, args, (name,), None, {"subprocess": tag == "unknown key"}))
    out_file = folder / "out_is_a_file"
    out_file.write_text("x")
    args, _ = argv(out=out_file)
    cases.append(Case("run_config", "out is a file", args, (out_file.name,), None))
    listed = folder / "out_list.yaml"
    listed.write_text("output:\n  out: [1]\n")
    args, _ = argv()
    at = args.index("--out")
    del args[at : at + 2]  # the flag would win over the file
    cases.append(Case("run_config", "output.out a list", [*args, "--config", str(listed)], ("output.out",), None))
    bad_yaml = folder / "bad.yaml"
    bad_yaml.write_text("output: [\n")
    args, _ = argv()
    cases.append(Case("run_config", "config not YAML", [*args, "--config", str(bad_yaml)], (bad_yaml.name,), None))
    return cases

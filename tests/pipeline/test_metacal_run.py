"""Metacalibration inside the real run (issue 12 item 4): a DES-like GalSim field, the shipped checkpoint, a real
LocalCluster, Parquet read back with pandas. On by default; ``model.metacal=false`` gives the other columns bit for
bit; a re-run reproduces every column (fixnoise seeded by the id); a row without a PSF keeps its row as no_psf."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from survey_deblend.schema import NO_PSF, OK, PADDED, PREDICTED, USABLE, names_in

CALIBRATION = list(names_in("calibration"))
MODEL = list(names_in("model"))


@pytest.fixture(scope="module")
def des_field(tmp_path_factory):
    """One 600-pixel DES-like tile (GalSim, the simulation's own PSF in MEAN_PSF_*) and its catalogs; the first
    selected galaxy's MEAN_PSF_FWHM is NaN in the im3shape file."""
    from survey_deblend.sim.field import make_des_field

    paths = make_des_field(tmp_path_factory.mktemp("mcal-field"), n_tiles=1, tile_size_pix=600, seed=1)
    with fits.open(paths.im3shape, mode="update") as hdul:
        data = hdul[1].data
        first = int(np.flatnonzero(data["SNR_W"] > 20)[0])
        data["MEAN_PSF_FWHM"][first] = np.nan
        no_psf_id = int(data["COADD_OBJECTS_ID"][first])
    return paths, no_psf_id


def _run(paths, out: Path, client, *extra: str) -> pd.DataFrame:
    from survey_deblend.config import load
    from survey_deblend.config.run import RunConfig
    from survey_deblend.pipeline.run import run

    overrides = [f"catalog.shear={paths.im3shape}", f"catalog.gold={paths.gold}", "catalog.match=id",
                 f"images.source=tiles:{paths.tiles_dir}", f"output.out={out}", "output.partition_rows=30",
                 "output.progress=false", "model.measure_recon=false", *extra]  # fmt: skip
    run(load(RunConfig, None, overrides), client, stream=io.StringIO())
    return pd.read_parquet(out).sort_values("coadd_objects_id").reset_index(drop=True)


def test_metacal_in_run_on_off_rerun_and_no_psf(des_field, tmp_path, client):
    paths, no_psf_id = des_field
    on = _run(paths, tmp_path / "on", client)  # metacal is on by default
    off = _run(paths, tmp_path / "off", client, "model.metacal=false")
    again = _run(paths, tmp_path / "again", client, "model.metacal=true")

    # the row without a PSF keeps its row and its predictions, with its own status and no calibration
    bad = on[on["coadd_objects_id"] == no_psf_id]
    assert len(bad) == 1 and bad["status"].iloc[0] == NO_PSF
    assert np.isfinite(bad[["e1_pred", "e2_pred", "z_pred"]].to_numpy()).all()
    assert bad[CALIBRATION].isna().all(axis=None)
    assert off.loc[off["coadd_objects_id"] == no_psf_id, "status"].iloc[0] in USABLE

    usable = on[on["status"].isin(list(USABLE))]
    assert len(usable) >= 30 and set(on["status"]) <= set(PREDICTED) | {"no_coverage"}
    assert np.isfinite(usable[CALIBRATION].to_numpy()).all()
    # the shipped network's response on DES-like galaxies: diagonal near the paired LSST figure (~0.8), the
    # off-diagonal small (the PSF is round); the per-galaxy spread is wide, so the band is for the mean
    r11, r22 = usable["r11"].mean(), usable["r22"].mean()
    assert 0.3 < r11 < 1.5 and 0.3 < r22 < 1.5, (r11, r22)
    assert abs(usable["r12"].mean()) < 0.25 and abs(usable["r21"].mean()) < 0.25
    # the noshear image is a reconvolved, re-noised copy: shapes close to, not equal to, the original's
    assert np.corrcoef(usable["e1_mcal"], usable["e1_pred"])[0, 1] > 0.7
    assert not np.array_equal(usable["e1_mcal"].to_numpy(), usable["e1_pred"].to_numpy())

    # metacal off: the calibration columns null, everything else bit for bit the metacal-on run
    assert off[CALIBRATION].isna().all(axis=None)
    pd.testing.assert_frame_equal(on[["coadd_objects_id", *MODEL]], off[["coadd_objects_id", *MODEL]])
    # the same statuses, but for stamps whose metacal margin (model.metacal_margin_arcsec) reaches past the tile:
    # their cut is padded with zeros there (their model stamp is the same, so are their predictions)
    same_status = on["coadd_objects_id"] != no_psf_id
    changed = set(zip(off.loc[same_status, "status"], on.loc[same_status, "status"], strict=True)) - {
        (s, s) for s in off["status"]}
    assert changed <= {(OK, PADDED)}, changed

    # a re-run reproduces every column exactly (the fixnoise fields are drawn from the galaxy ids)
    columns = [c for c in on.columns if c != "run_id"]
    pd.testing.assert_frame_equal(on[columns], again[columns])


def test_metacal_is_in_the_configuration_hash(tmp_path):
    from survey_deblend.config import load
    from survey_deblend.config.run import RunConfig
    from survey_deblend.pipeline.manifest import config_hash

    on, off = (load(RunConfig, None, [f"model.metacal={v}"]) for v in ("true", "false"))
    assert on.model.metacal and not off.model.metacal and load(RunConfig, None, []).model.metacal
    assert config_hash(on, "m") != config_hash(off, "m")

"""A DES tile with a known non-30 zeropoint (MAGZERO 27.5) through the whole run: the model sees the same flux.

Two fields of the same sky: one with MAGZERO 30, one with MAGZERO 27.5 whose pixels are in those units (every
pixel 10**(0.4 (27.5 - 30)) times the first's). The zeropoint is read from the tile header by the source, carried
by the batch's frame and applied by the Predictor: the normalized stamps the Predictor builds and the predictions
of the two runs must agree, while the raw pixels differ tenfold and the same pixels read as MAGZERO 30 do not.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd
import pytest
from conftest import run_config
from field import make_small_field

from survey_deblend.pipeline import run
from survey_deblend.schema import USABLE

ZP_LOW = 27.5
PREDICTED = ["e1_pred", "e2_pred", "e_sigma_pred", "z_pred", "z_sigma_pred"]


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    root = tmp_path_factory.mktemp("zeropoint")
    return {zp: make_small_field(root / f"zp{zp}", n_per_tile=12, noise_sigma=0.0, magzero=zp) for zp in (30.0, ZP_LOW)}


def _stamps(field, predictor, frame: pd.DataFrame):
    from survey_deblend.cutouts import open_source

    source = open_source(f"tiles:{field.tiles_dir}")
    ra, dec = frame["ra"].to_numpy(), frame["dec"].to_numpy()
    size = predictor.source_stamp_size(source.pixel_scale_arcsec)
    return source.fetch(ra, dec, size, choice=source.plan(ra, dec, size))


def test_magzero_27_5_tile_gives_the_model_the_same_flux(fields, checkpoint, client, tmp_path):
    from survey_deblend.inference import Predictor

    outputs = {}
    for zp, field in fields.items():
        out = tmp_path / f"out-{zp}"
        run(run_config(field, checkpoint, out, "model.measure_recon=false"), client, stream=io.StringIO())
        outputs[zp] = pd.read_parquet(out).sort_values("coadd_objects_id").reset_index(drop=True)
    high, low = outputs[30.0], outputs[ZP_LOW]
    assert (high["coadd_objects_id"].to_numpy() == low["coadd_objects_id"].to_numpy()).all()
    ok = high["status"].isin(list(USABLE)).to_numpy()  # ok, or padded (a stamp or its metacal margin off the tile)
    assert ok.sum() >= 30 and (low["status"] == high["status"]).all()

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    batch_high = _stamps(fields[30.0], predictor, high[ok])
    batch_low = _stamps(fields[ZP_LOW], predictor, low[ok])
    assert batch_low.frame.zeropoints == (ZP_LOW,) * len(batch_low.bands)  # read from MAGZERO, not guessed
    assert batch_high.frame.zeropoints == (30.0,) * len(batch_high.bands)
    np.testing.assert_allclose(batch_low.images, batch_high.images * 10 ** (0.4 * (ZP_LOW - 30.0)),
                               rtol=1e-5, atol=1e-6 * batch_high.images.max())

    seen_high, _ = predictor.prepare_frame(batch_high.images, batch_high.frame, batch_high.band_mask)
    seen_low, _ = predictor.prepare_frame(batch_low.images, batch_low.frame, batch_low.band_mask)
    np.testing.assert_allclose(seen_low, seen_high, rtol=1e-4, atol=1e-5)
    guessed = dataclasses.replace(batch_low.frame, zeropoints=batch_high.frame.zeropoints)
    seen_guessed, _ = predictor.prepare_frame(batch_low.images, guessed, batch_low.band_mask)
    assert not np.allclose(seen_guessed, seen_high, rtol=1e-2, atol=1e-3)  # a DES-30 guess would show

    for name in PREDICTED:
        np.testing.assert_allclose(low.loc[ok, name], high.loc[ok, name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert high.loc[ok, "e1_pred"].std() > 0  # galaxies differ, so equal predictions are not a constant model

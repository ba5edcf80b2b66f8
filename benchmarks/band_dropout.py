"""What losing one band costs the shipped model: the evidence behind ``cutouts.status.REQUIRED_BANDS``.

On a simulated DES-like field (``sim.make_des_field``, stamps cut by ``TileSource``), predicts every galaxy with
i SNR above 15 with all bands, then with each band masked in turn (its pixels zeroed, its mask bit cleared, as a
failed band is). Prints one JSON line per band with ``rmse_vs_truth`` (per component, against the true
ellipticity), ``rms_shift`` (against the all-band prediction) and ``median_sigma`` (the model's own stated
uncertainty), then a summary line. ``--quick`` uses a smaller field.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import pandas as pd

from survey_deblend.cutouts.tiles import TileSource
from survey_deblend.inference import Predictor
from survey_deblend.sim.field import make_des_field


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller field, about a minute")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-dropout-") as tmp:
        paths = make_des_field(tmp, n_tiles=2, tile_size_pix=500 if args.quick else 800, seed=args.seed)
        truth = pd.read_parquet(paths.truth)
        truth = truth[truth["snr_i"] > 15]
        source = TileSource(paths.tiles_dir)
        predictor = Predictor.from_checkpoint()
        size = predictor.source_stamp_size(source.pixel_scale_arcsec)
        batch = source.fetch(truth["ra"].to_numpy(), truth["dec"].to_numpy(), size)
    usable = batch.usable
    images, mask, truth = batch.images[usable], batch.band_mask[usable], truth[usable]
    e_true = truth[["e1", "e2"]].to_numpy()

    def predict(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
        frame = batch.frame  # the stamps' own survey and zeropoints (a tile's MAGZERO)
        out = predictor.predict(images, frame.bands, frame.pixel_scale_arcsec, band_mask=mask, measure_recon=False,
                                zeropoints=frame.zeropoints, survey=frame.survey)
        return out[["e1_pred", "e2_pred", "e_sigma_pred"]].to_numpy()

    full = predict(images, mask)
    lines = {}
    for dropped in (None, *source.bands):
        if dropped is None:
            pred = full
        else:
            b = source.bands.index(dropped)
            masked, zeroed = mask.copy(), images.copy()
            masked[:, b], zeroed[:, b] = False, 0.0
            pred = predict(zeroed, masked)
        lines[dropped or "none"] = {
            "benchmark": "band_dropout", "quick": args.quick, "dropped": dropped or "none", "galaxies": int(len(pred)),
            "rmse_vs_truth": round(float(np.sqrt(np.mean((pred[:, :2] - e_true) ** 2))), 4),
            "rms_shift": round(float(np.sqrt(np.mean((pred[:, :2] - full[:, :2]) ** 2))), 4),
            "median_sigma": round(float(np.median(pred[:, 2])), 4),
        }
        print(json.dumps(lines[dropped or "none"]))
    others = [v["rms_shift"] for k, v in lines.items() if k not in ("none", "i")]
    print(json.dumps({"benchmark": "band_dropout_summary", "i_shift": lines["i"]["rms_shift"],
                      "max_other_shift": max(others), "i_rmse": lines["i"]["rmse_vs_truth"],
                      "all_bands_rmse": lines["none"]["rmse_vs_truth"]}))


if __name__ == "__main__":
    main()

"""How wide a margin metacalibration needs: the same paired LSST stamps metacalibrated with several margins.

Each shard is a paired set (``simulate lsst --kind paired``, seed ``--seed + i``) rendered ``max(--pads)`` pixels
wider on every side than the model's 45-pixel stamp (the same scenes: neighbours drawn in the 45-pixel field,
``LsstSimConfig.neighbour_field_pix``). For every pad p the stamp is cut to 45 + 2p pixels, metacalibrated
(symmetrized, order 2, the shared fixnoise field cut the same way) and cropped to the model's stamp after the
shear, as ``survey-deblend run`` does with ``model.metacal_margin_arcsec``; pad 0 is the stamp sheared alone.
Prints per shard, then at the end, a JSON line with ``m1, m2`` per pad and ``dm1, dm2`` of each pad against the
widest (jackknifed over base scenes on the same stamps, so far tighter than either m).

    nice -n 10 python benchmarks/metacal_margins.py --pads 0 2 4 8 12 --shards 4 [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def measure_shard(work: Path, seed: int, n: int, shear: float, pads: list[int], shapes) -> Path:
    """Simulate one shard, measure every pad, keep ``(6, n, 2)`` shapes per pad (five images + the turn)."""
    import metacal_shards as ms

    from survey_deblend.calibration import border_noise_sigma, metacal_response
    from survey_deblend.calibration.psf import sim_psf_model
    from survey_deblend.sim.dataset import open_dataset

    path = work / "results" / f"margins-{seed}-{n}-{'-'.join(map(str, pads))}.npz"
    if path.is_file():
        return path
    widest = max(pads)
    data = ms.simulate(work, n, seed, shear, margin=widest)
    ds = open_dataset(data)
    idx = ms.selected_stamps(ds, 20.0)
    pair = ds.read("pair_id", idx).astype(np.int64)
    out = {"pair": seed * ms.PAIR_STRIDE + pair, "g": np.stack([ds.read("g1_applied", idx),
           ds.read("g2_applied", idx)], 1).astype(np.float64)}  # fmt: skip
    shapes_per_pad = {p: np.empty((6, len(idx), 2)) for p in pads}
    for lo in range(0, len(idx), 1024):
        sl = slice(lo, min(lo + 1024, len(idx)))
        blend = ds.read("blend", idx[sl])
        noise = ms.pair_noise(pair[sl], idx[sl] % 2, border_noise_sigma(blend), seed, blend.shape[-1])
        for p in pads:
            inner = slice(widest - p, blend.shape[-1] - widest + p)
            cut = (..., inner, inner)
            stamps = np.ascontiguousarray(blend[cut])
            res = metacal_response(stamps, sim_psf_model("LSST", ms.BANDS, len(stamps)), 0.2, shapes,
                                   noise_sigma=border_noise_sigma(stamps), noise=np.ascontiguousarray(noise[cut]),
                                   symmetrize="noshear", margin=p)  # fmt: skip
            shapes_per_pad[p][:5, sl], shapes_per_pad[p][5, sl] = res.sheared, res.rotated[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out, **{f"pad{p}": v for p, v in shapes_per_pad.items()})
    shutil.rmtree(data, ignore_errors=True)
    return path


def figures(paths: list[Path], pads: list[int]) -> dict[str, object]:
    """m1, m2 per pad and each pad minus the widest, on the stamps of every shard in ``paths``."""
    import metacal_shards as ms

    from survey_deblend.calibration import paired_bias_difference, paired_shear_bias

    parts = [dict(np.load(p)) for p in paths]
    res = {k: np.concatenate([p[k] for p in parts], axis=1 if k.startswith("pad") else 0) for k in parts[0]}
    est = {p: ms.noshear_symmetrized(res[f"pad{p}"]) for p in pads}
    widest = max(pads)
    line: dict[str, object] = {"benchmark": "metacal_margins", "n_shards": len(parts), "n_stamps": len(res["pair"])}
    for p in pads:
        d = paired_shear_bias(*est[p][:1], res["g"], res["pair"], est[p][1])
        line[f"pad{p}"] = {k: round(d[k], 5) for k in ("m1", "m1_err", "m2", "m2_err")}
        if p != widest:
            diff = paired_bias_difference(*est[p], *est[widest], res["g"], res["pair"])
            line[f"pad{p}_minus_pad{widest}"] = {k: round(diff[k], 5) for k in ("dm1", "dm1_err", "dm2", "dm2_err")}
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("work/bench-metacal-margins"))
    parser.add_argument("--pads", type=int, nargs="+", default=[0, 2, 4, 8, 12])
    parser.add_argument("--n", type=int, default=8000, help="stamps per shard (8 per base scene)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=501)
    parser.add_argument("--shear", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one shard of 800 stamps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))  # metacal_shards
    from survey_deblend.inference import Predictor

    predictor = Predictor.from_checkpoint(None, device="cpu")

    def shapes(stack, mask):
        frame = predictor.predict(stack, ("u", "g", "r", "i", "z", "y"), 0.2, band_mask=mask, measure_recon=False)
        return frame["e1_pred"].to_numpy(), frame["e2_pred"].to_numpy()

    n, shards = (800, 1) if args.quick else (args.n, args.shards)
    pads = sorted(set(args.pads))
    paths = []
    for seed in range(args.seed, args.seed + shards):
        paths.append(measure_shard(args.work, seed, n, args.shear, pads, shapes))
        line = figures(paths, pads)
        print(json.dumps({**line, "model": predictor.model_id, "load_avg_1min": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()

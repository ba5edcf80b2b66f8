"""Predictor and training throughput on CPU with 2 threads (issue 5), one JSON line per measurement.

Keys: ``cpu_images_per_s`` (deblender encoder + regressor on normalized stamps, the goal is >= 5,000/s),
``cpu_predict_images_per_s`` (the same from raw LSST stamps, preprocessing included),
``cpu_predict_des_images_per_s`` (raw DES grizY 35x35 stamps: band mapping, units, resampling included),
``cpu_train_images_per_s`` (one deblender training step: encoder forward/backward through the decoder).

    python benchmarks/inference.py [--checkpoint PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _rate(fn, n_images: int, repeats: int) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_images / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)

    from survey_deblend.inference import Predictor
    from survey_deblend.models.checkpoint import write_untrained_checkpoint
    from survey_deblend.models.networks import kl_divergence
    from survey_deblend.surveys import stamp_frame

    path = args.checkpoint
    if path is None:
        try:
            from survey_deblend.inference import default_checkpoint

            path = default_checkpoint()
        except Exception:
            path = write_untrained_checkpoint(Path(tempfile.mkdtemp()) / "untrained.pt")
    predictor = Predictor.from_checkpoint(path, device="cpu", batch_size=args.batch_size)
    n = 2048 if args.quick else 8192
    repeats = 2 if args.quick else 3
    rng = np.random.default_rng(0)
    m_b = np.asarray(predictor.metadata["m_b"], dtype=np.float32)
    raw = (rng.exponential(0.05, (n, 6, 45, 45)) * m_b[None, :, None, None]).astype(np.float32)
    normed, mask = predictor.prepare(raw, predictor.model_bands, 0.2)
    common = {"threads": torch.get_num_threads(), "batch_size": args.batch_size, "n": n, "model": predictor.model_id}

    rate = _rate(lambda: predictor.encode_normalized(normed, mask), n, repeats)
    print(json.dumps({"benchmark": "inference", "cpu_images_per_s": round(rate, 1), **common}), flush=True)
    bands = predictor.model_bands
    rate = _rate(lambda: predictor.predict(raw, bands, 0.2, measure_recon=False), n, repeats)
    print(json.dumps({"benchmark": "inference", "cpu_predict_images_per_s": round(rate, 1), **common}), flush=True)
    des = rng.exponential(0.2, (n, 5, 35, 35)).astype(np.float32)
    des_frame = stamp_frame("DES")  # coadd units at the DES zeropoint, DES pixel scale
    rate = _rate(lambda: predictor.predict(des, des_frame.bands, des_frame.pixel_scale_arcsec, measure_recon=False,
                                           zeropoints=des_frame.zeropoints, survey="DES"), n, repeats)
    print(json.dumps({"benchmark": "inference", "cpu_predict_des_images_per_s": round(rate, 1), **common}), flush=True)

    ckpt = predictor.checkpoint
    encoder, decoder = ckpt.build("deblender"), ckpt.build("decoder")
    encoder.train()
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-4)
    batch = 64
    x = torch.from_numpy(normed[:batch].copy())
    m = torch.from_numpy(mask[:batch]).float()
    steps = 8 if args.quick else 24

    def train_steps() -> None:
        for _ in range(steps):
            mu, logvar = encoder(x, m)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            loss = (decoder(z) - x).pow(2).sum(dim=(1, 2, 3)).mean() + 1e-3 * kl_divergence(mu, logvar)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    rate = _rate(train_steps, batch * steps, 1 if args.quick else 2)
    line = {"benchmark": "inference", "cpu_train_images_per_s": round(rate, 1), "stage": "deblender",
            **common, "batch_size": batch}
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

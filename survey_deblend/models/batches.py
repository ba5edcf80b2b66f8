"""One batched pass of the trained networks over normalized stamps, shared by inference and training.

Lives with the networks so that ``training`` (held-out figures) and ``inference`` (the Predictor) run them the
same way without training importing the inference stage below it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from survey_deblend.errors import SurveyDeblendError

EncodeFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def run_in_batches(
    encode: EncodeFn,
    normed: np.ndarray,
    mask: np.ndarray,
    batch_size: int,
    device: torch.device,
    latent_dim: int,
    decoder: torch.nn.Module | None = None,
    decode: bool = False,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(latent, regressor output, reconstruction or None)`` of ``encode(x, mask) -> (mu, output)`` per batch."""
    if decode and decoder is None:
        raise SurveyDeblendError("checkpoint has no decoder: cannot reconstruct")
    latents, outputs, recons = [], [], []
    with torch.inference_mode(), autocast or contextlib.nullcontext():
        for start in range(0, len(normed), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(normed[start : start + batch_size])).to(device)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            m = torch.from_numpy(mask[start : start + batch_size]).to(device, torch.float32)
            mu, out = encode(x, m)
            latents.append(mu.float().cpu().numpy())
            outputs.append(out.float().cpu().numpy())
            if decode:
                recons.append(decoder(mu).float().cpu().numpy())
    latent = np.concatenate(latents) if latents else np.zeros((0, latent_dim), np.float32)
    output = np.concatenate(outputs) if outputs else np.zeros((0, 5), np.float32)
    if not decode:
        return latent, output, None
    return latent, output, np.concatenate(recons) if recons else np.zeros((0, *normed.shape[1:]), np.float32)

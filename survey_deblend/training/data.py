"""Training data: lazy batches from a simulated data set (contract: ``survey_deblend.sim.dataset``).

The set is split once, by a seeded permutation, into training and held-out indices; batches are read from the
memory-mapped shards as sorted index arrays. Band dropout (random absent bands, u absent more often because
DES has none) is drawn here so that every stage sees the same kind of band masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from survey_deblend.errors import InputError
from survey_deblend.preprocess import MODEL_BANDS, mean_per_image_max

IMAGE_FIELDS = ("blend", "isolated", "clean")
LABEL_FIELDS = ("e1", "e2", "z")


@dataclass
class TrainingData:
    """A data set with its training / held-out split and the normalization constants ``M_b``."""

    dataset: Any  # survey_deblend.sim.dataset.SimDataset
    path: Path
    train_idx: np.ndarray
    val_idx: np.ndarray

    @classmethod
    def open(cls, path: str | Path, val_fraction: float, seed: int, max_samples: int | None = None) -> TrainingData:
        """Open ``path`` and split it; checks bands, stamp shape and the fields the trainings need."""
        from survey_deblend.sim.dataset import open_dataset

        path = Path(path)
        dataset = open_dataset(path)
        manifest = dataset.manifest
        bands = tuple(manifest.get("bands", ()))
        if bands != MODEL_BANDS:
            raise InputError(f"{path}/manifest.json: bands {list(bands)} are not the model bands {list(MODEL_BANDS)}")
        missing = [f for f in (*IMAGE_FIELDS, *LABEL_FIELDS) if f not in dataset.fields]
        if missing:
            raise InputError(f"{path}: data set lacks field '{missing[0]}'")
        n = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
        if n < 4:
            raise InputError(f"{path}: only {n} samples, too few to split into training and held-out sets")
        order = np.random.default_rng(seed).permutation(n)
        n_val = min(max(1, int(round(val_fraction * n))), n - 1)
        return cls(dataset, path, np.sort(order[n_val:]), np.sort(order[:n_val]))

    @property
    def manifest(self) -> dict:
        """The data set's manifest (JSON types only)."""
        return self.dataset.manifest

    def pixel_scale(self) -> float:
        """Pixel scale of the stamps in arcsec."""
        return float(self.manifest.get("pixel_scale_arcsec", 0.2))

    def psf_fwhm(self) -> dict[str, float]:
        """PSF FWHM per band (arcsec) as the simulation recorded it."""
        return {str(k): float(v) for k, v in (self.manifest.get("psf_fwhm_arcsec") or {}).items()}

    def m_b(self, max_images: int = 20000) -> np.ndarray:
        """``M_b``: mean per-image maximum of each band of the blended inputs over (up to) the training split."""
        idx = self.train_idx[:max_images]
        return mean_per_image_max(self.dataset.read("blend", idx))

    def median_max(self, max_images: int = 20000) -> np.ndarray:
        """Median per-image maximum per band (the target of dynamic-range matching)."""
        block = self.dataset.read("blend", self.train_idx[:max_images])
        return np.median(block.reshape(block.shape[0], block.shape[1], -1).max(axis=2), axis=0)

    def read(self, field: str, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (sorted) of one field as a contiguous array."""
        return np.ascontiguousarray(self.dataset.read(field, idx))

    def describe(self) -> dict[str, Any]:
        """Plain-type description of the data for the checkpoint metadata."""
        m = self.manifest
        return {
            "path": str(self.path),
            "n_samples": int(len(self.train_idx) + len(self.val_idx)),
            "n_train": int(len(self.train_idx)),
            "n_val": int(len(self.val_idx)),
            "seed": m.get("seed"),
            "kind": m.get("kind", m.get("config", {}).get("kind") if isinstance(m.get("config"), dict) else None),
            "stamp_size": m.get("stamp_size"),
            "pixel_scale_arcsec": m.get("pixel_scale_arcsec"),
            "simulation_config": m.get("config"),
        }


def random_band_mask(n: int, n_bands: int, rng: np.random.Generator, p_band: float, p_u: float) -> np.ndarray:
    """Band masks ``(n, B)`` with each band absent with probability ``p_band`` and u (index 0) also with ``p_u``.

    The i band (index 3) is never dropped, so that every input keeps a detection band.
    """
    mask = rng.random((n, n_bands)) >= p_band
    mask[:, 0] &= rng.random(n) >= p_u
    mask[:, min(3, n_bands - 1)] = True
    return mask


def iterate_batches(idx: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Split ``idx`` into batches (shuffled when ``rng`` is given), each sorted for fast memmap reads."""
    order = rng.permutation(idx) if rng is not None else np.asarray(idx)
    return [np.sort(order[s : s + batch_size]) for s in range(0, len(order), batch_size)]


class Normalizer(torch.nn.Module):
    """Arcelin normalization on the device: ``tanh(asinh(beta * x / M_b))`` with absent bands zeroed."""

    def __init__(self, m_b: np.ndarray, beta: float) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(beta / np.asarray(m_b), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalize ``(N, B, S, S)``; multiply by ``mask`` when given."""
        out = torch.tanh(torch.asinh(x * self.scale))
        if mask is not None:
            out = out * mask[:, :, None, None].to(out.dtype)
        return out

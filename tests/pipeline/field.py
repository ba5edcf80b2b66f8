"""A tiny real field for the pipeline tests: DES-like FITS tiles with TAN WCS, SVA1-schema catalogs, a checkpoint.

Tiles come from the cutout stage's writer, catalogs from the catalog stage's writer, the checkpoint is an
untrained (real) model: the same files a user's run reads, only small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from survey_deblend.catalog.synthetic import FIRST_ID, write_catalogs
from survey_deblend.cutouts.synthetic import DES_PIXEL_SCALE_ARCSEC, Blob, write_field
from survey_deblend.surveys import DES_BANDS

TILE_CENTRES = [(60.0, -45.0), (60.03, -45.0), (60.0, -44.98)]


@dataclass(frozen=True)
class SmallField:
    tiles_dir: Path
    im3shape: Path
    gold: Path
    n_objects: int
    n_off_survey: int
    n_low_snr: int


def psf_of(row: np.ndarray) -> dict[str, np.ndarray]:
    """Known im3shape MEAN_PSF_* per catalog row (DES pixels, PSF ellipticity), for the run to carry through."""
    return {"psf_fwhm": 3.0 + 0.01 * row, "psf_e1": 0.001 * (row % 7), "psf_e2": -0.002 * (row % 5)}


def make_small_field(
    out_dir: Path, n_per_tile: int = 40, tile_size_pix: int = 180, seed: int = 0, magzero: float = 30.0,
    noise_sigma: float = 1.0,
) -> SmallField:
    """``n_per_tile`` galaxies inside each tile, 3 off the survey, 4 cut by SNR; catalogs in the SVA1 schema.

    The tiles carry ``MAGZERO = magzero`` and their pixels are in those units: the same sky at another
    ``magzero`` has every pixel scaled by 10**(0.4 (magzero - 30)) (noise included when ``noise_sigma`` is 0).
    """
    rng = np.random.default_rng(seed)
    half_deg = 0.4 * tile_size_pix * DES_PIXEL_SCALE_ARCSEC / 3600.0
    ra, dec = [], []
    for ra0, dec0 in TILE_CENTRES:
        dec.append(dec0 + rng.uniform(-half_deg, half_deg, n_per_tile))
        ra.append(ra0 + rng.uniform(-half_deg, half_deg, n_per_tile) / np.cos(np.radians(dec0)))
    n_off = 3
    ra.append(np.full(n_off, 70.0) + np.arange(n_off) * 0.1)
    dec.append(np.full(n_off, -50.0))
    ra, dec = np.concatenate(ra), np.concatenate(dec)
    n = len(ra)
    snr = rng.uniform(25.0, 200.0, n)
    n_low = 4
    snr[:n_low] = 10.0
    e_mod, angle = rng.uniform(0.0, 0.5, n), rng.uniform(0.0, np.pi, n)
    objects = pd.DataFrame(
        {
            "coadd_objects_id": FIRST_ID + np.arange(n, dtype=np.int64) * 7,
            "ra": ra, "dec": dec, "e1": e_mod * np.cos(2 * angle), "e2": e_mod * np.sin(2 * angle),
            "snr_w": snr, "mag_i": rng.uniform(20.0, 23.0, n),
            **psf_of(np.arange(n)),
        }
    )
    blobs = [Blob(r, d, 10 ** (-0.4 * (m - 30.0)), 0.5, 0.4) for r, d, m in zip(ra, dec, objects["mag_i"], strict=True)]
    tiles_dir = Path(out_dir) / "tiles"
    units = 10 ** (0.4 * (magzero - 30.0))
    scale = {band: (1.0 + 0.25 * b) * units for b, band in enumerate(DES_BANDS)}  # write_field's default, in units
    write_field(tiles_dir, TILE_CENTRES, blobs, tile_size_pix=tile_size_pix, noise_sigma=noise_sigma, seed=seed,
                magzero=magzero, band_flux_scale=scale)
    paths = write_catalogs(Path(out_dir) / "catalogs", objects, seed=seed)
    return SmallField(tiles_dir, paths.im3shape, paths.gold, n, n_off, n_low)

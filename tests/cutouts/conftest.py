"""Small real tile fields for the cutout tests: 2 overlapping tiles x 5 bands, and the same sky through a
flipped, a rotated and a compressed WCS. Positions are given in tile-0 pixel coordinates and turned into sky
coordinates through tile 0's standard WCS, so expectations are known exactly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from survey_deblend.cutouts.synthetic import Blob, tile_wcs, write_field
from survey_deblend.surveys import DES_BANDS

TILE = 400
CENTRE = (80.0, -50.0)
BANDS = DES_BANDS
# Tile 1 sits 300 px east of tile 0 (east = -x in tile 0): they overlap over tile-0 columns 0..99.
TILE1_OFFSET_PIX = 300
# Positions in tile-0 pixel coordinates (x, y), all on pixel centres.
POSITIONS = {
    "elongated": (150.0, 210.0),  # inside tile 0 only; elongated east-west
    "round": (-150.0, 120.0),  # inside tile 1 only (tile 1 lacks Y)
    "edge": (392.0, 300.0),  # 7.5 px from tile 0's west edge, no other tile: padded
    "overlap_tile0": (60.0, 250.0),  # 60.5 px inside tile 0, 39.5 inside tile 1
    "overlap_tile1": (30.0, 250.0),  # 30.5 px inside tile 0, 69.5 inside tile 1
    "outside": (900.0, 200.0),  # off every tile
}
FLUX = {"elongated": 2000.0, "round": 800.0, "edge": 600.0}


@dataclass(frozen=True)
class Field:
    """Where the tile directories are and where the sources sit."""

    std: Path
    flipped: Path
    rotated: Path
    compressed: Path
    ra: dict[str, float]
    dec: dict[str, float]
    band_scale: dict[str, float]

    def radec(self, *names: str) -> tuple[np.ndarray, np.ndarray]:
        return np.array([self.ra[n] for n in names]), np.array([self.dec[n] for n in names])


@pytest.fixture(scope="session")
def field(tmp_path_factory: pytest.TempPathFactory) -> Field:
    root = tmp_path_factory.mktemp("tiles")
    wcs0 = tile_wcs(*CENTRE, (TILE, TILE))
    centre = (TILE - 1) / 2
    ra1, dec1 = wcs0.all_pix2world(centre - TILE1_OFFSET_PIX, centre, 0)
    centres = [CENTRE, (float(ra1), float(dec1))]
    ra, dec = {}, {}
    for name, (x, y) in POSITIONS.items():
        r, d = wcs0.all_pix2world(x, y, 0)
        ra[name], dec[name] = float(r), float(d)
    blobs = [
        Blob(ra["elongated"], dec["elongated"], FLUX["elongated"], 2.0, 0.6),
        Blob(ra["round"], dec["round"], FLUX["round"], 0.8, 0.8),
        Blob(ra["edge"], dec["edge"], FLUX["edge"], 0.8, 0.8),
    ]
    band_scale = {b: 1.0 + 0.5 * i for i, b in enumerate(BANDS)}
    # DES coadd file layout: SCI, MSK, WGT (the SIA server answers three rows per image)
    common = dict(tile_size_pix=TILE, bands=BANDS, band_flux_scale=band_scale, missing={(1, "Y")},
                  layout=("SCI", "MSK", "WGT"))
    write_field(root / "std", centres, blobs, **common)
    write_field(root / "flipped", centres, blobs, flip_x=True, **common)
    write_field(root / "rotated", centres, blobs, rotation_deg=30.0, **common)
    write_field(root / "compressed", centres, blobs, compress=True, **common)
    return Field(root / "std", root / "flipped", root / "rotated", root / "compressed", ra, dec, band_scale)

"""A tiny GalSim data set in the simulation contract (common brief 3), for the model tests.

Exponential galaxies with sheared shapes, colours that follow redshift, a Moffat PSF, a neighbour at 1.2-3"
in most scenes, Gaussian noise. Small and fast (two GalSim draws per scene) but real images.
"""

from __future__ import annotations

from pathlib import Path

import galsim
import numpy as np

from survey_deblend.shapes import compose_shear
from survey_deblend.sim.dataset import field_specs, write_manifest, write_shard

BANDS = ("u", "g", "r", "i", "z", "y")
PIXEL_SCALE = 0.2
STAMP = 45
NOISE_SIGMA = 8.0
PSF_FWHM = 0.8
# colour slopes: band flux relative to i changes with redshift (a smooth, learnable SED trend)
COLOUR_SLOPE = np.array([-1.2, -0.8, -0.4, 0.0, 0.3, 0.5])


def _draw(profile: galsim.GSObject, psf: galsim.GSObject, offset: tuple[float, float]) -> np.ndarray:
    image = galsim.Convolve(profile, psf).drawImage(nx=STAMP, ny=STAMP, scale=PIXEL_SCALE, offset=offset)
    return image.array.astype(np.float32)


def make_scenes(n: int, seed: int, blend_fraction: float = 0.8) -> dict[str, np.ndarray]:
    """Draw ``n`` scenes; returns every contract field."""
    rng = np.random.default_rng(seed)
    psf = galsim.Moffat(beta=3.5, fwhm=PSF_FWHM)
    out = {k: np.zeros((n, 6, STAMP, STAMP), np.float32) for k in ("blend", "isolated", "clean")}
    labels = {k: np.zeros(n, np.float64) for k in ("e1", "e2", "z", "mag_i", "snr", "blendedness")}
    n_neighbours = np.zeros(n, np.int64)
    for i in range(n):
        z = rng.uniform(0.2, 2.0)
        colour = 10 ** (-0.4 * COLOUR_SLOPE * (z - 1.0))
        flux_i = 10 ** rng.uniform(3.6, 4.6)
        g = rng.uniform(0.0, 0.6) * np.exp(2j * rng.uniform(0, np.pi))
        hlr = rng.uniform(0.5, 0.9)
        shear = rng.normal(0, 0.02, 2)
        e1, e2 = compose_shear(g.real, g.imag, shear[0], shear[1])
        gal = galsim.Exponential(half_light_radius=hlr).shear(g1=g.real, g2=g.imag).shear(g1=shear[0], g2=shear[1])
        central = _draw(gal, psf, tuple(rng.uniform(-0.5, 0.5, 2)))
        clean = central[None] * (flux_i * colour)[:, None, None].astype(np.float32)
        blend = clean.copy()
        if rng.random() < blend_fraction:
            r, angle = rng.uniform(6.0, 15.0), rng.uniform(0, 2 * np.pi)
            z_n = rng.uniform(0.2, 2.0)
            colour_n = 10 ** (-0.4 * COLOUR_SLOPE * (z_n - 1.0))
            gn = rng.uniform(0.0, 0.5) * np.exp(2j * rng.uniform(0, np.pi))
            neighbour = galsim.Exponential(half_light_radius=rng.uniform(0.4, 1.0)).shear(g1=gn.real, g2=gn.imag)
            img = _draw(neighbour, psf, (r * np.cos(angle), r * np.sin(angle)))
            blend += img[None] * (10 ** rng.uniform(3.6, 4.6) * colour_n)[:, None, None].astype(np.float32)
            n_neighbours[i] = 1
            labels["blendedness"][i] = 1.0 - float((clean[3] ** 2).sum() / max((blend[3] * clean[3]).sum(), 1e-9))
        noise = rng.normal(0.0, NOISE_SIGMA, (6, STAMP, STAMP)).astype(np.float32)
        out["clean"][i], out["isolated"][i], out["blend"][i] = clean, clean + noise, blend + noise
        labels["e1"][i], labels["e2"][i], labels["z"][i] = e1, e2, z
        labels["mag_i"][i] = 27.0 - 2.5 * np.log10(flux_i)
        labels["snr"][i] = float(np.sqrt((clean[3] ** 2).sum()) / NOISE_SIGMA)
    return {**out, **labels, "n_neighbours": n_neighbours}


def write_tiny_dataset(out_dir: str | Path, n: int, seed: int = 0, shard_size: int = 300) -> Path:
    """Write ``n`` scenes in shards of ``shard_size`` with a contract manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards, arrays = [], {}
    for k, start in enumerate(range(0, n, shard_size)):
        arrays = make_scenes(min(shard_size, n - start), seed * 1000 + k)
        shards.append(write_shard(out_dir, k, start, arrays).to_dict())
    write_manifest(
        out_dir,
        {
            "n_samples": n,
            "fields": field_specs(arrays, n),
            "shards": shards,
            "bands": list(BANDS),
            "pixel_scale_arcsec": PIXEL_SCALE,
            "stamp_size": STAMP,
            "seed": seed,
            "kind": "blends",
            "config": {"generator": "tests/models/simdata.py", "noise_sigma": NOISE_SIGMA},
            "psf_fwhm_arcsec": {b: PSF_FWHM for b in BANDS},
        },
    )
    return out_dir

"""Small DES-like coadd tiles with Gaussian sources at known sky positions, for tests, benchmarks and demos.

Sources are drawn through the tile's own WCS (each pixel's sky offset from the source), so a flipped, rotated or
rescaled WCS shows the same sky: exactly what the orientation tests of the cutout sources need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from survey_deblend.cutouts.geometry import tangent_offsets_deg
from survey_deblend.surveys import DES_BANDS, DES_COADD_ZEROPOINT, pixel_scale

DES_PIXEL_SCALE_ARCSEC = pixel_scale("DES")


@dataclass(frozen=True)
class Blob:
    """A Gaussian source: position (deg), total flux (coadd units), sigmas (arcsec) along east and north."""

    ra: float
    dec: float
    flux: float
    sigma_east_arcsec: float
    sigma_north_arcsec: float


def tile_wcs(
    ra0: float, dec0: float, shape: tuple[int, int], scale_arcsec: float = DES_PIXEL_SCALE_ARCSEC,
    rotation_deg: float = 0.0, flip_x: bool = False,
) -> WCS:
    """A TAN WCS centred on (ra0, dec0): standard DES orientation (CD1_1 < 0), optionally rotated or x-flipped."""
    s = scale_arcsec / 3600.0
    theta = np.radians(rotation_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cd = rot @ np.array([[-s, 0.0], [0.0, s]])
    if flip_x:
        cd = cd @ np.array([[-1.0, 0.0], [0.0, 1.0]])
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra0, dec0]
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    wcs.wcs.cd = cd
    return wcs


def render(wcs: WCS, shape: tuple[int, int], blobs: list[Blob], scale_arcsec: float) -> np.ndarray:
    """Image (ny, nx) float32 of the blobs seen through ``wcs``, in flux per pixel of ``scale_arcsec``."""
    image = np.zeros(shape, dtype=np.float64)
    pixel_area = scale_arcsec**2
    for blob in blobs:
        x0, y0 = wcs.all_world2pix(blob.ra, blob.dec, 0)
        if not (np.isfinite(x0) and np.isfinite(y0)):
            continue
        reach = int(np.ceil(6 * max(blob.sigma_east_arcsec, blob.sigma_north_arcsec) / scale_arcsec)) + 1
        xs = np.arange(max(int(x0) - reach, 0), min(int(x0) + reach + 1, shape[1]))
        ys = np.arange(max(int(y0) - reach, 0), min(int(y0) + reach + 1, shape[0]))
        if len(xs) == 0 or len(ys) == 0:
            continue
        gx, gy = np.meshgrid(xs, ys)
        ra, dec = wcs.all_pix2world(gx, gy, 0)
        xi, eta = tangent_offsets_deg(ra, dec, blob.ra, blob.dec)
        xi, eta = xi * 3600.0, eta * 3600.0
        norm = blob.flux * pixel_area / (2 * np.pi * blob.sigma_east_arcsec * blob.sigma_north_arcsec)
        profile = norm * np.exp(-0.5 * ((xi / blob.sigma_east_arcsec) ** 2 + (eta / blob.sigma_north_arcsec) ** 2))
        image[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1] += profile
    return image.astype(np.float32)


def write_tile(
    path: str | Path, wcs: WCS, shape: tuple[int, int], blobs: list[Blob], band: str, tile: str,
    scale_arcsec: float | None = None, compress: bool = False, noise_sigma: float = 0.0, seed: int = 0,
    magzero: float | None = DES_COADD_ZEROPOINT, layout: tuple[str, ...] = ("SCI",),
) -> Path:
    """Write a tile-band FITS: empty primary, then the extensions of ``layout`` in order, each with the WCS.

    ``SCI`` holds the image with ``MAGZERO`` (None: no keyword), BAND and TILENAME; ``MSK`` a zero bad-pixel mask
    and ``WGT`` the inverse-variance weight, as in a DES coadd file (``("SCI", "MSK", "WGT")``).
    """
    path = Path(path)
    if scale_arcsec is None:
        scale_arcsec = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0)
    data = render(wcs, shape, blobs, scale_arcsec)
    if noise_sigma > 0:
        data += np.random.default_rng(seed).normal(0.0, noise_sigma, size=shape).astype(np.float32)
    planes = {
        "SCI": data,
        "MSK": np.zeros(shape, dtype=np.int32),
        "WGT": np.full(shape, 1.0 / noise_sigma**2 if noise_sigma > 0 else 1.0, dtype=np.float32),
    }
    hdus: list[fits.hdu.base.ExtensionHDU] = []
    for name in layout:
        header = wcs.to_header()
        if name == "SCI":
            if magzero is not None:
                header["MAGZERO"] = (magzero, "coadd magnitude zeropoint")
            header["EXPTIME"] = (900.0, "effective exposure time (s)")
            header["BAND"] = band
            header["TILENAME"] = tile
        if compress:
            options = {"quantize_level": 0.0} if name != "MSK" else {}
            hdus.append(fits.CompImageHDU(data=planes[name], header=header, name=name,
                                          compression_type="GZIP_2" if name != "MSK" else "RICE_1", **options))
        else:
            hdus.append(fits.ImageHDU(data=planes[name], header=header, name=name))
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(path, overwrite=True)
    return path


def write_field(
    out_dir: str | Path, centres: list[tuple[float, float]], blobs: list[Blob], tile_size_pix: int = 400,
    bands: tuple[str, ...] = DES_BANDS, band_flux_scale: dict[str, float] | None = None,
    missing: set[tuple[int, str]] = frozenset(), names: list[str] | None = None, **tile_kwargs,
) -> list[Path]:
    """Tiles ``{name}_r0001p01_{band}.fits`` at ``centres``; ``missing`` (tile index, band) pairs are skipped.

    Names default to ``DES{i:04d}-5000``; keyword arguments go to ``tile_wcs`` (scale, rotation, flip) and
    ``write_tile`` (compress, noise, magzero, layout).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wcs_kwargs = {k: tile_kwargs.pop(k) for k in ("scale_arcsec", "rotation_deg", "flip_x") if k in tile_kwargs}
    shape = (tile_size_pix, tile_size_pix)
    paths = []
    for i, (ra0, dec0) in enumerate(centres):
        wcs = tile_wcs(ra0, dec0, shape, **wcs_kwargs)
        name = names[i] if names else f"DES{i:04d}-5000"
        for b, band in enumerate(bands):
            if (i, band) in missing:
                continue
            scale = (band_flux_scale or {}).get(band, 1.0 + 0.25 * b)
            band_blobs = [Blob(x.ra, x.dec, x.flux * scale, x.sigma_east_arcsec, x.sigma_north_arcsec) for x in blobs]
            suffix = ".fits.fz" if tile_kwargs.get("compress") else ".fits"
            paths.append(
                write_tile(out_dir / f"{name}_r0001p01_{band}{suffix}", wcs, shape, band_blobs, band, name,
                           **tile_kwargs)
            )
    return paths

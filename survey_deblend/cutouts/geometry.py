"""Cutting north-up, west-right stamps out of an image with a celestial WCS, whatever its orientation.

Two paths. When the image's pixel grid is the stamp grid up to a flip or a quarter turn (a signed permutation of
the axes at the stamp's pixel scale, as for every DES coadd), pixels are copied: a box is read once and
re-indexed, so values are exact. Otherwise (a general rotation or another pixel scale) each stamp pixel is
sampled on a gnomonic grid centred on the galaxy, mapped through the WCS and interpolated with a cubic spline,
scaled by the pixel-area ratio so that stamps stay in flux per stamp pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.wcs import WCS
from scipy import ndimage

from survey_deblend.cutouts import status as st

# Tolerance on the normalised CD matrix for treating an image as a pure axis permutation (0.02 px over 22 px).
_PERMUTATION_ATOL = 1e-3


def _celestial(wcs: WCS) -> WCS:
    """The celestial part of a WCS; the WCS itself when it already is 2-D (``.celestial`` costs ~1 ms)."""
    return wcs if wcs.naxis == 2 else wcs.celestial


def tangent_offsets_deg(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic (xi east, eta north) offsets in degrees of (ra, dec) from the tangent point (ra0, dec0)."""
    ra_r, dec_r = np.radians(ra), np.radians(dec)
    ra0_r, dec0_r = np.radians(ra0), np.radians(dec0)
    cos_c = np.sin(dec0_r) * np.sin(dec_r) + np.cos(dec0_r) * np.cos(dec_r) * np.cos(ra_r - ra0_r)
    xi = np.cos(dec_r) * np.sin(ra_r - ra0_r) / cos_c
    eta = (np.cos(dec0_r) * np.sin(dec_r) - np.sin(dec0_r) * np.cos(dec_r) * np.cos(ra_r - ra0_r)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def stamp_sky_grid(ra0: np.ndarray, dec0: np.ndarray, size_pix: int, scale_arcsec: float) -> tuple[np.ndarray, ...]:
    """(ra, dec) in degrees, shape (n, S, S), of the pixel centres of north-up west-right stamps around each row.

    Row index = north, column index = west; the centre pixel is ``S // 2``.
    """
    ra0 = np.atleast_1d(np.asarray(ra0, dtype=float))[:, None, None]
    dec0 = np.radians(np.atleast_1d(np.asarray(dec0, dtype=float)))[:, None, None]
    offsets = np.arange(size_pix) - size_pix // 2
    v, u = np.meshgrid(offsets, offsets, indexing="ij")  # v north (rows), u west (columns)
    step = np.radians(scale_arcsec / 3600.0)
    xi, eta = -u * step, v * step  # xi points east
    denom = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.degrees(np.arctan2(xi, denom))
    dec = np.degrees(np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.sqrt(xi**2 + denom**2)))
    return np.mod(ra, 360.0), dec


def pixel_scale_arcsec(wcs: WCS) -> float:
    """Mean pixel side in arcsec at the WCS reference point."""
    return float(np.sqrt(abs(np.linalg.det(_celestial(wcs).pixel_scale_matrix))) * 3600.0)


def axis_permutation(wcs: WCS, scale_arcsec: float) -> np.ndarray | None:
    """The signed permutation P with CD = scale * P, if the image grid is the stamp grid flipped or turned.

    Sky offsets (xi east, eta north) = CD @ (dx, dy). None when the WCS is rotated by a general angle, sheared
    or at another pixel scale.
    """
    cd = _celestial(wcs).pixel_scale_matrix / (scale_arcsec / 3600.0)
    perm = np.round(cd)
    if not np.allclose(cd, perm, atol=_PERMUTATION_ATOL):
        return None
    if not (np.all(np.abs(perm).sum(axis=0) == 1) and np.all(np.abs(perm).sum(axis=1) == 1)):
        return None
    return perm.astype(int)


def edge_distance_pix(wcs: WCS, shape: tuple[int, int], ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Distance in pixels from each position to the nearest image edge; negative outside the image."""
    if len(ra) == 0:
        return np.zeros(0)
    x, y = _celestial(wcs).all_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0)
    ny, nx = shape
    dist = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
    return np.where(np.isfinite(dist), dist, -np.inf)


def _read_box(data: Any, shape: tuple[int, int], q_lo: int, q_hi: int, p_lo: int, p_hi: int) -> np.ndarray:
    """Pixels [q_lo:q_hi, p_lo:p_hi] of ``data`` as float32, zero where the box runs off the image."""
    ny, nx = shape
    box = np.zeros((q_hi - q_lo, p_hi - p_lo), dtype=np.float32)
    y0, y1, x0, x1 = max(q_lo, 0), min(q_hi, ny), max(p_lo, 0), min(p_hi, nx)
    if y1 > y0 and x1 > x0:
        box[y0 - q_lo : y1 - q_lo, x0 - p_lo : x1 - p_lo] = data[y0:y1, x0:x1]
    return box


def cut_stamps(
    data: Any, wcs: WCS, ra: np.ndarray, dec: np.ndarray, size_pix: int, scale_arcsec: float
) -> tuple[np.ndarray, np.ndarray]:
    """Stamps (n, S, S) float32 north up, west right, and a status per row (ok, padded, no_coverage, error_nan).

    ``data`` is anything 2-D that slices (a memmap, ``CompImageHDU.section``); only the boxes around the
    positions are read.
    """
    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    n = len(ra)
    shape = (int(data.shape[-2]), int(data.shape[-1]))
    stamps = np.zeros((n, size_pix, size_pix), dtype=np.float32)
    status = np.full(n, st.NO_COVERAGE, dtype=object)
    if n == 0:
        return stamps, status.astype(str)
    wcs = _celestial(wcs)
    covered = edge_distance_pix(wcs, shape, ra, dec) > 0
    perm = axis_permutation(wcs, scale_arcsec)
    if perm is not None:
        _cut_by_permutation(data, wcs, shape, perm, ra, dec, covered, stamps, status)
    else:
        _cut_by_resampling(data, wcs, shape, ra, dec, scale_arcsec, covered, stamps, status)
    bad = covered & ~np.isfinite(stamps).all(axis=(1, 2))
    status[bad] = st.ERROR_NAN
    stamps[bad] = 0.0
    return stamps, status.astype(str)


def _cut_by_permutation(data, wcs, shape, perm, ra, dec, covered, stamps, status) -> None:
    """Exact copy: stamp pixel (v north, u west) is image pixel centre + P^T @ (-u, v)."""
    size = stamps.shape[-1]
    offsets = np.arange(size) - size // 2
    v, u = np.meshgrid(offsets, offsets, indexing="ij")
    inv = perm.T  # P is orthogonal
    dp = inv[0, 0] * (-u) + inv[0, 1] * v
    dq = inv[1, 0] * (-u) + inv[1, 1] * v
    ii, jj = dq - dq.min(), dp - dp.min()
    box_h, box_w = int(dq.max() - dq.min() + 1), int(dp.max() - dp.min() + 1)
    x, y = _celestial(wcs).all_world2pix(ra, dec, 0)
    ny, nx = shape
    for k in np.flatnonzero(covered):
        pc, qc = int(np.floor(x[k] + 0.5)), int(np.floor(y[k] + 0.5))  # ties up, like the server
        p_lo, q_lo = pc + int(dp.min()), qc + int(dq.min())
        box = _read_box(data, shape, q_lo, q_lo + box_h, p_lo, p_lo + box_w)
        stamps[k] = box[ii, jj]
        inside = p_lo >= 0 and q_lo >= 0 and p_lo + box_w <= nx and q_lo + box_h <= ny
        status[k] = st.OK if inside else st.PADDED


def _cut_by_resampling(data, wcs, shape, ra, dec, scale_arcsec, covered, stamps, status) -> None:
    """Cubic-spline resampling on a gnomonic grid around each galaxy; flux scaled by the pixel-area ratio."""
    size = stamps.shape[-1]
    rows = np.flatnonzero(covered)
    if len(rows) == 0:
        return
    grid_ra, grid_dec = stamp_sky_grid(ra[rows], dec[rows], size, scale_arcsec)
    px, py = _celestial(wcs).all_world2pix(grid_ra.ravel(), grid_dec.ravel(), 0)
    px, py = px.reshape(grid_ra.shape), py.reshape(grid_ra.shape)
    area_ratio = (scale_arcsec / pixel_scale_arcsec(wcs)) ** 2
    ny, nx = shape
    for i, k in enumerate(rows):
        qx, qy = px[i], py[i]
        inside = (qx > -0.5) & (qx < nx - 0.5) & (qy > -0.5) & (qy < ny - 0.5)
        p_lo, p_hi = int(np.floor(qx.min())) - 3, int(np.ceil(qx.max())) + 4
        q_lo, q_hi = int(np.floor(qy.min())) - 3, int(np.ceil(qy.max())) + 4
        box = _read_box(data, shape, q_lo, q_hi, p_lo, p_hi)
        sampled = ndimage.map_coordinates(box, [qy - q_lo, qx - p_lo], order=3, mode="nearest")
        stamps[k] = np.where(inside, sampled * area_ratio, 0.0)
        status[k] = st.OK if inside.all() else st.PADDED

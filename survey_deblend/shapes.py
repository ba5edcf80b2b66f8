"""The ellipticity convention in one place (DESIGN.md, "Conventions").

Ellipticities are in the shear convention, |e| = (a - b) / (a + b): GalSim's ``Shear.g1/g2`` and im3shape's
E_1/E_2, e1 > 0 along +x (west in a north-up stamp), e2 > 0 along the x = y diagonal. HSM's ``e1/e2`` are
distortions, (a^2 - b^2) / (a^2 + b^2), and are converted here, never elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import galsim
import numpy as np

__all__ = [
    "HSMResult",
    "compose_shear",
    "distortion_to_shear",
    "measure_hsm",
    "measure_hsm_batch",
    "rotate_ellipticity",
    "shear_to_distortion",
]


def distortion_to_shear(e1: np.ndarray, e2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert distortions (HSM's e1, e2) to shears (g1, g2): |g| = |e| / (1 + sqrt(1 - |e|^2))."""
    e1, e2 = np.asarray(e1, dtype=float), np.asarray(e2, dtype=float)
    e = np.hypot(e1, e2)
    with np.errstate(invalid="ignore"):
        factor = 1.0 / (1.0 + np.sqrt(np.clip(1.0 - e**2, 0.0, None)))
    return e1 * factor, e2 * factor


def shear_to_distortion(g1: np.ndarray, g2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert shears (g1, g2) to distortions: |e| = 2|g| / (1 + |g|^2)."""
    g1, g2 = np.asarray(g1, dtype=float), np.asarray(g2, dtype=float)
    factor = 2.0 / (1.0 + g1**2 + g2**2)
    return g1 * factor, g2 * factor


def rotate_ellipticity(e1: np.ndarray, e2: np.ndarray, angle_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ellipticity of the profile rotated counter-clockwise by ``angle_rad`` (spin 2: e -> e exp(2i angle))."""
    z = (np.asarray(e1) + 1j * np.asarray(e2)) * np.exp(2j * np.asarray(angle_rad))
    return z.real, z.imag


def compose_shear(
    intrinsic_g1: np.ndarray, intrinsic_g2: np.ndarray, shear_g1: np.ndarray, shear_g2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ellipticity of a profile with intrinsic ellipticity ``intrinsic`` after the reduced shear ``shear``.

    This is GalSim's ``shear + intrinsic`` (the intrinsic shape applied first), i.e. the shape of
    ``profile.shear(intrinsic).shear(shear)``: the PSF-free label of a sheared galaxy.
    """
    g = np.asarray(shear_g1) + 1j * np.asarray(shear_g2)
    e = np.asarray(intrinsic_g1) + 1j * np.asarray(intrinsic_g2)
    out = (e + g) / (1.0 + np.conj(g) * e)
    return out.real, out.imag


@dataclass(frozen=True)
class HSMResult:
    """PSF-corrected HSM shape in the shear convention; ``ok`` is False where HSM failed (g1, g2 are NaN)."""

    g1: float
    g2: float
    ok: bool
    method: str


def measure_hsm(
    image: np.ndarray,
    psf_image: np.ndarray,
    pixel_scale_arcsec: float,
    method: str = "REGAUSS",
    sky_var: float = 0.0,
) -> HSMResult:
    """Measure the PSF-corrected shape of one 2-D stamp with GalSim's HSM, returned as a shear.

    ``psf_image`` is the PSF drawn at the same pixel scale. REGAUSS/LINEAR/BJ give distortions, which are
    converted; KSB gives shears directly.
    """
    gal = galsim.Image(np.ascontiguousarray(image, dtype=np.float64), scale=pixel_scale_arcsec)
    psf = galsim.Image(np.ascontiguousarray(psf_image, dtype=np.float64), scale=pixel_scale_arcsec)
    try:
        res = galsim.hsm.EstimateShear(gal, psf, shear_est=method, sky_var=sky_var, strict=False)
    except (galsim.GalSimError, ValueError, RuntimeError):
        return HSMResult(np.nan, np.nan, False, method)
    if res.error_message:
        return HSMResult(np.nan, np.nan, False, method)
    if res.meas_type == "g":
        return HSMResult(float(res.corrected_g1), float(res.corrected_g2), True, method)
    g1, g2 = distortion_to_shear(res.corrected_e1, res.corrected_e2)
    if not np.isfinite(g1) or np.hypot(g1, g2) >= 1:
        return HSMResult(np.nan, np.nan, False, method)
    return HSMResult(float(g1), float(g2), True, method)


def measure_hsm_batch(
    images: np.ndarray,
    psf_image: np.ndarray,
    pixel_scale_arcsec: float,
    method: str = "REGAUSS",
    sky_var: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Measure a stack ``(N, H, W)`` of single-band stamps; failures are NaN."""
    out = np.full((len(images), 2), np.nan)
    for i, img in enumerate(images):
        r = measure_hsm(img, psf_image, pixel_scale_arcsec, method=method, sky_var=sky_var)
        if r.ok:
            out[i] = (r.g1, r.g2)
    return out[:, 0], out[:, 1]

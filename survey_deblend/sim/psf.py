"""Per-band PSFs with the surveycodex FWHM, built once per (survey, band, model) and reused.

The default is a Moffat profile (beta = 3.5, truncated at 4 FWHM): its wings are close to a Kolmogorov
atmosphere convolved with optics, and its compact support keeps GalSim's FFTs small (fast stamps).
"""

from __future__ import annotations

from functools import cache

import galsim

from survey_deblend.errors import ConfigError
from survey_deblend.surveys import band_facts

MOFFAT_BETA = 3.5
MOFFAT_TRUNC_FWHM = 4.0
# Relaxed accuracy: ~0.5% folding/aliasing errors are far below the sky noise of any stamp we draw.
FAST_GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3, kvalue_accuracy=1e-4)

PSF_MODELS = ("moffat", "kolmogorov")


@cache
def psf_for(survey: str, band: str, model: str = "moffat") -> galsim.GSObject:
    """The PSF of ``band`` of ``survey`` (``"LSST"`` or ``"DES"``), unit flux, FWHM from surveycodex."""
    fwhm = band_facts(survey, band).psf_fwhm_arcsec
    if model == "moffat":
        return galsim.Moffat(beta=MOFFAT_BETA, fwhm=fwhm, trunc=MOFFAT_TRUNC_FWHM * fwhm, gsparams=FAST_GSPARAMS)
    if model == "kolmogorov":
        return galsim.Kolmogorov(fwhm=fwhm, gsparams=FAST_GSPARAMS)
    raise ConfigError(f"psf model '{model}' unknown (known: {', '.join(PSF_MODELS)})")


def psf_image(survey: str, band: str, size: int, model: str = "moffat") -> galsim.Image:
    """The PSF drawn on a ``size`` x ``size`` stamp at the survey pixel scale (pixel response included)."""
    return psf_for(survey, band, model).drawImage(nx=size, ny=size, scale=band_facts(survey, band).pixel_scale_arcsec)


def psf_description(model: str = "moffat") -> dict[str, float | str]:
    """The PSF model's parameters for a manifest (``psf_for`` rebuilds the exact profile from them + FWHM)."""
    if model == "moffat":
        return {"model": model, "beta": MOFFAT_BETA, "trunc_fwhm": MOFFAT_TRUNC_FWHM}
    return {"model": model}

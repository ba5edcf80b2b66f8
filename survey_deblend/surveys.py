"""Survey facts owned once (bands in order, pixel scale, PSF FWHM, zeropoints, exposure, sky) from surveycodex,
and the photometric frame of a set of pixels.

Units follow DESIGN.md "Units": LSST stamps are electrons over the full 10-year exposure
(``counts = t_exp * 10**(-0.4 * (mag - zeropoint))``); DES coadd stamps are in coadd units at magnitude
zeropoint 30, with the sky noise of the full DES depth converted into those units.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import surveycodex
from surveycodex.utilities import mean_sky_level

from survey_deblend.errors import ConfigError

LSST_BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")
DES_BANDS: tuple[str, ...] = ("g", "r", "i", "z", "Y")
DES_COADD_ZEROPOINT = 30.0  # DES coadd magnitude zeropoint (DES_SVA1.md), the unit of DES stamps and tiles

_SURVEY_BANDS = {"LSST": LSST_BANDS, "DES": DES_BANDS}


@dataclass(frozen=True)
class BandFacts:
    """One band of one survey, with the image unit the stage writes in (``flux_zeropoint``)."""

    survey: str
    band: str
    pixel_scale_arcsec: float
    psf_fwhm_arcsec: float
    zeropoint_mag: float  # magnitude giving 1 e-/s (surveycodex)
    exposure_s: float  # full-depth exposure time (surveycodex)
    sky_e_per_pixel: float  # mean sky per pixel over the full exposure, electrons (surveycodex)
    effective_wavelength_nm: float
    flux_zeropoint: float | None  # None: images in electrons; a number: images in units of that zeropoint

    @property
    def unit_per_electron(self) -> float:
        """Image units per electron: 1 for electrons, 10**(0.4 (ZP_image - zp)) / t_exp for coadd units."""
        if self.flux_zeropoint is None:
            return 1.0
        return float(10 ** (0.4 * (self.flux_zeropoint - self.zeropoint_mag)) / self.exposure_s)

    @property
    def sky_sigma(self) -> float:
        """Standard deviation of the sky noise per pixel in image units (Gaussian, sky-only variance)."""
        return float(np.sqrt(self.sky_e_per_pixel) * self.unit_per_electron)

    def electrons_per_unit(self, zeropoint: float | None) -> float:
        """Electrons over the full exposure per pixel unit of AB ``zeropoint`` (None: the pixels are electrons)."""
        if zeropoint is None:
            return 1.0
        return float(self.exposure_s * 10 ** (-0.4 * (zeropoint - self.zeropoint_mag)))

    def flux(self, mag: np.ndarray | float) -> np.ndarray:
        """Total flux in image units of a source of AB magnitude ``mag`` in this band."""
        electrons = self.exposure_s * 10 ** (-0.4 * (np.asarray(mag, dtype=float) - self.zeropoint_mag))
        return electrons * self.unit_per_electron


@dataclass(frozen=True)
class PhotometricFrame:
    """What the pixels of a batch of stamps are: survey, bands in stamp order, pixel scale and flux unit.

    ``zeropoints`` holds one AB magnitude zeropoint per band (the magnitude of a source whose total flux is one
    pixel unit), read from where the data say it (a tile's ``MAGZERO``, an SIA answer's ``magzero``, the
    simulation's own value). ``None`` means the pixels are already the survey's native unit, electrons over its
    full exposure (DESIGN.md "Units"): simulated LSST stamps, BTK blends.
    """

    survey: str
    bands: tuple[str, ...]
    pixel_scale_arcsec: float
    zeropoints: tuple[float, ...] | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", tuple(self.bands))
        object.__setattr__(self, "pixel_scale_arcsec", float(self.pixel_scale_arcsec))
        if self.zeropoints is not None:
            zps = tuple(float(z) for z in self.zeropoints)
            if len(zps) != len(self.bands):
                raise ValueError(f"{len(zps)} zeropoints for {len(self.bands)} bands {list(self.bands)}")
            object.__setattr__(self, "zeropoints", zps)


def survey_bands(survey: str) -> tuple[str, ...]:
    """Band names of ``survey`` in stamp order (LSST ugrizy, DES grizY)."""
    try:
        return _SURVEY_BANDS[survey]
    except KeyError:
        raise ConfigError(f"unknown survey '{survey}' (known: {', '.join(_SURVEY_BANDS)})") from None


@cache
def band_facts(survey: str, band: str) -> BandFacts:
    """Facts for ``band`` of ``survey`` (``"LSST"`` or ``"DES"``), read from surveycodex once and cached."""
    if band not in survey_bands(survey):
        raise ConfigError(f"survey {survey} has no band '{band}' (bands: {' '.join(survey_bands(survey))})")
    sv = surveycodex.get_survey(survey)
    flt = sv.get_filter(band)
    return BandFacts(
        survey=survey,
        band=band,
        pixel_scale_arcsec=float(sv.pixel_scale.to_value("arcsec")),
        psf_fwhm_arcsec=float(flt.psf_fwhm.to_value("arcsec")),
        zeropoint_mag=float(flt.zeropoint.value),
        exposure_s=float(flt.full_exposure_time.to_value("s")),
        sky_e_per_pixel=float(mean_sky_level(survey, band).value),
        effective_wavelength_nm=float(flt.effective_wavelength.to_value("nm")),
        flux_zeropoint=DES_COADD_ZEROPOINT if survey == "DES" else None,
    )


def stamp_frame(survey: str, bands: tuple[str, ...] | None = None) -> PhotometricFrame:
    """The frame this project writes ``survey``'s pixels in (its simulations, DESIGN.md "Units"): LSST in native
    electrons over the full exposure (no zeropoints), DES in coadd units at ``DES_COADD_ZEROPOINT``."""
    bands = survey_bands(survey) if bands is None else tuple(bands)
    facts = [band_facts(survey, b) for b in bands]
    zeropoints = None if facts[0].flux_zeropoint is None else tuple(f.flux_zeropoint for f in facts)
    return PhotometricFrame(survey, bands, pixel_scale(survey), zeropoints)


def pixel_scale(survey: str) -> float:
    """Pixel scale of ``survey`` in arcsec (surveycodex)."""
    return band_facts(survey, survey_bands(survey)[0]).pixel_scale_arcsec

"""Per-galaxy, per-band PSF models for metacalibration: an elliptical profile per stamp and band.

The profile is the simulations' Moffat (``sim.psf``: beta = 3.5, truncated at 4 FWHM), never a Gaussian:
a real PSF (atmosphere and optics) has power-law wings that a Gaussian of the same FWHM lacks, and
deconvolving by a Gaussian would leave those wings in the "PSF-free" galaxy, where the applied shear
stretches them into a spurious, PSF-shaped ellipticity (additive leakage). It is also what the simulated
stamps were drawn with, so on simulations the deconvolution is exact. ``"gaussian"`` and ``"kolmogorov"``
exist for tests and other sources.

Shape: ``fwhm`` (arcsec) of the round profile, then sheared by ``(g1, g2)`` (GalSim ``.shear``, area
preserving, shear convention, +x = West). Its Fourier transform is the round one evaluated at ``A k``
(``A`` the symmetric shear matrix), tabulated once per profile from GalSim's ``kValue``.

Round reconvolution target (``target_fwhm``): the same profile, round, with the FWHM of the PSF's major
axis, ``fwhm * sqrt((1 + |g|) / (1 - |g|))``, dilated by ``1 + 2 |delta|``. This is ngmix/metacal's
"dilate" target (the PSF dilated by 1 + 2|delta|) made round by taking the major axis: in every direction
the target falls in k at least as fast as the PSF evaluated at the sheared wave vector, ``T(k) <= P(S k)``,
so deconvolving and reconvolving never amplifies noise. For a round PSF it is exactly ngmix's target.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import galsim
import numpy as np
import torch

from survey_deblend.errors import InputError
from survey_deblend.sim.psf import FAST_GSPARAMS, MOFFAT_BETA, MOFFAT_TRUNC_FWHM
from survey_deblend.surveys import DES_BANDS, band_facts, pixel_scale

PROFILES = ("moffat", "gaussian", "kolmogorov")
TABLE_Q_MAX = 60.0  # k * FWHM (radians): beyond it every profile's transform is zero at GalSim accuracy
TABLE_STEP = 0.002


def unit_profile(profile: str) -> galsim.GSObject:
    """The round profile of FWHM 1 arcsec (the Moffat of ``sim.psf`` scaled to unit FWHM)."""
    if profile == "moffat":
        return galsim.Moffat(beta=MOFFAT_BETA, fwhm=1.0, trunc=MOFFAT_TRUNC_FWHM, gsparams=FAST_GSPARAMS)
    if profile == "gaussian":
        return galsim.Gaussian(fwhm=1.0, gsparams=FAST_GSPARAMS)
    if profile == "kolmogorov":
        return galsim.Kolmogorov(fwhm=1.0, gsparams=FAST_GSPARAMS)
    raise InputError(f"psf profile '{profile}' unknown (known: {', '.join(PROFILES)})")


@cache
def radial_table(profile: str) -> np.ndarray:
    """Fourier transform of the unit-FWHM round profile on ``q = k * FWHM`` in steps of TABLE_STEP, float64,
    with a trailing zero for everything beyond the table (from GalSim's ``kValue``, like ``sim.render``)."""
    prof = unit_profile(profile)
    coarse = np.concatenate([[0.0], np.geomspace(1e-3, TABLE_Q_MAX, 6000)])
    values = np.array([prof.kValue(galsim.PositionD(q, 0.0)).real for q in coarse])
    q = np.arange(0.0, TABLE_Q_MAX + TABLE_STEP / 2, TABLE_STEP)
    return np.append(np.interp(q, coarse, values), 0.0)


def table_lookup(table: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of a ``radial_table`` (as a tensor) at ``q >= 0``; zero beyond the table."""
    pos = torch.clamp(q * (1.0 / TABLE_STEP), max=float(len(table) - 2))
    i = pos.to(torch.int64)
    w = pos - i
    lo = table[i]
    return lo + w * (table[i + 1] - lo)


def shear_matrix(g1: np.ndarray | float, g2: np.ndarray | float) -> np.ndarray:
    """GalSim's shear matrix ``[[1 + g1, g2], [g2, 1 - g1]] / sqrt(1 - |g|^2)`` (symmetric, det 1), ``(..., 2, 2)``."""
    g1, g2 = np.asarray(g1, dtype=np.float64), np.asarray(g2, dtype=np.float64)
    norm = 1.0 / np.sqrt(1.0 - g1**2 - g2**2)
    return np.stack([np.stack([1 + g1, g2], -1), np.stack([g2, 1 - g1], -1)], -2) * norm[..., None, None]


@dataclass(frozen=True)
class PSFModel:
    """One elliptical PSF per stamp and band: arrays ``(N, B)``; ``usable`` is False where the inputs were not
    (non-finite, FWHM <= 0 or |g| >= 1): such stamps get no metacalibration (NaN response)."""

    fwhm: np.ndarray  # arcsec, of the round profile before its shear
    g1: np.ndarray
    g2: np.ndarray
    profile: str = "moffat"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise InputError(f"psf profile '{self.profile}' unknown (known: {', '.join(PROFILES)})")
        shapes = {np.shape(self.fwhm), np.shape(self.g1), np.shape(self.g2)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise InputError(f"psf model: fwhm, g1, g2 must share one (N, B) shape, got {sorted(shapes)}")

    def __len__(self) -> int:
        return int(np.shape(self.fwhm)[0])

    @property
    def usable(self) -> np.ndarray:
        fwhm, g1, g2 = (np.asarray(a, dtype=np.float64) for a in (self.fwhm, self.g1, self.g2))
        with np.errstate(invalid="ignore"):
            return np.isfinite(fwhm) & np.isfinite(g1) & np.isfinite(g2) & (fwhm > 0) & (np.hypot(g1, g2) < 1)

    def sanitized(self) -> PSFModel:
        """Unusable entries replaced by a harmless round 1" PSF, so batched arithmetic stays finite."""
        ok = self.usable
        return replace(
            self,
            fwhm=np.where(ok, self.fwhm, 1.0),
            g1=np.where(ok, self.g1, 0.0),
            g2=np.where(ok, self.g2, 0.0),
        )

    def rotated90(self) -> PSFModel:
        """The PSF rotated by 90 degrees: a spin-2 shape changes sign, the FWHM stays."""
        return replace(self, g1=-np.asarray(self.g1), g2=-np.asarray(self.g2))

    def subset(self, index: np.ndarray | slice) -> PSFModel:
        return replace(self, fwhm=np.asarray(self.fwhm)[index], g1=np.asarray(self.g1)[index],
                       g2=np.asarray(self.g2)[index])  # fmt: skip

    def target_fwhm(self, delta: float) -> np.ndarray:
        """FWHM of the round reconvolution target: the major axis dilated by ``1 + 2 |delta|`` (module docstring)."""
        g = np.hypot(np.asarray(self.g1, dtype=np.float64), np.asarray(self.g2, dtype=np.float64))
        return np.asarray(self.fwhm, dtype=np.float64) * np.sqrt((1 + g) / (1 - g)) * (1 + 2 * abs(delta))

    def galsim_psf(self, i: int, b: int) -> galsim.GSObject:
        """Stamp ``i``, band ``b`` as a GalSim object (the reference the tests compare with)."""
        prof = unit_profile(self.profile).dilate(float(self.fwhm[i, b]))
        return prof.shear(g1=float(self.g1[i, b]), g2=float(self.g2[i, b]))

    def galsim_target(self, i: int, b: int, delta: float) -> galsim.GSObject:
        return unit_profile(self.profile).dilate(float(self.target_fwhm(delta)[i, b]))


def sim_psf_model(survey: str, bands: tuple[str, ...] | list[str], n: int, profile: str = "moffat") -> PSFModel:
    """The simulations' known PSF (``sim.psf``: round, the surveycodex FWHM of each band) for ``n`` stamps."""
    from survey_deblend.sim.psf import psf_for

    fwhm = np.array([psf_for(survey, b, profile).fwhm for b in bands])
    fwhm = np.broadcast_to(fwhm, (n, len(bands))).astype(np.float64)
    zeros = np.zeros((n, len(bands)))
    return PSFModel(fwhm=fwhm, g1=zeros, g2=zeros.copy(), profile=profile)


def des_band_fwhm_ratios(bands: tuple[str, ...] | list[str] = DES_BANDS, reference: str = "r") -> np.ndarray:
    """DES PSF FWHM of each band over that of ``reference`` (surveycodex, through ``surveys``)."""
    ref = band_facts("DES", reference).psf_fwhm_arcsec
    return np.array([band_facts("DES", b).psf_fwhm_arcsec / ref for b in bands], dtype=np.float64)


def im3shape_psf_model(
    fwhm: np.ndarray,
    e1: np.ndarray,
    e2: np.ndarray,
    bands: tuple[str, ...] | list[str] = DES_BANDS,
    fwhm_unit: str = "pixel",
    pixel_scale_arcsec: float | None = None,
) -> PSFModel:
    """Elliptical Moffat per galaxy from im3shape's ``MEAN_PSF_FWHM``, ``MEAN_PSF_E1``, ``MEAN_PSF_E2``.

    im3shape measures them in r; the other bands get the r FWHM scaled by the survey's per-band FWHM ratio and
    the same ellipticity (an approximation: real PSF ellipticity varies a little with band). im3shape writes
    the FWHM in pixels (``fwhm_unit="pixel"``; ``pixel_scale_arcsec`` None: the DES pixel scale) and e in the
    shear convention of DESIGN.md.
    -9999 or NaN entries make the row unusable (``PSFModel.usable``)."""
    fwhm, e1, e2 = (np.asarray(a, dtype=np.float64) for a in (fwhm, e1, e2))
    bad = ~np.isfinite(fwhm) | (fwhm <= -9998) | (e1 <= -9998) | (e2 <= -9998)
    if fwhm_unit == "pixel":
        fwhm = fwhm * (pixel_scale("DES") if pixel_scale_arcsec is None else pixel_scale_arcsec)
    elif fwhm_unit != "arcsec":
        raise InputError(f"fwhm_unit: expected 'pixel' or 'arcsec', got {fwhm_unit!r}")
    fwhm = np.where(bad, np.nan, fwhm)
    ratios = des_band_fwhm_ratios(bands)
    b = len(bands)
    return PSFModel(
        fwhm=fwhm[:, None] * ratios[None, :],
        g1=np.repeat(e1[:, None], b, axis=1),
        g2=np.repeat(e2[:, None], b, axis=1),
        profile="moffat",
    )

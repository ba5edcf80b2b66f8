"""The galaxy population: magnitudes, redshifts, colours from redshifted CWW SEDs, bulge + disk shapes, shear.

Model (documented choices, BTK/CatSim-like):

- i-band number counts ``dN/dm ~ 10**(0.31 m)`` between the limits asked for (centrals to i = 25.3,
  neighbours to 27).
- Redshift ``p(z | i) ~ z^2 exp(-z/z0)`` with ``z0 = 0.0417 i - 0.744`` (LSST Science Book, eq. 3.8).
- A continuous spectral type ``t`` in [0, 3] (E, Sbc, Scd, Im), bluer on average at higher z; magnitudes in
  every band from GalSim's CWW SEDs redshifted to z and integrated through the bandpasses, interpolated
  between neighbouring templates, normalised to the drawn i magnitude: colours carry redshift, as in real data.
- Bandpasses: GalSim's LSST ugrizy throughputs; GalSim ships no DES curves, so DES grizY are top-hats centred
  on surveycodex's DES effective wavelengths with the widths of the DES filters (approximation).
- Bulge fraction from a Beta distribution whose mean falls from 0.8 (E) to 0.05 (Im); disk half-light radius
  log-normal, larger for brighter galaxies; bulge radius a fraction of it.
- One intrinsic ellipticity per galaxy (bulge and disk share it): each component Gaussian with sigma 0.26,
  |e| < 0.8, random orientation; a reduced shear per galaxy, uniform in the disc |g| < 0.05; the label is
  the composition (``shapes.compose_shear``, GalSim's Shear algebra).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import galsim
import numpy as np

from survey_deblend.shapes import compose_shear
from survey_deblend.sim.render import GalaxyShapes
from survey_deblend.surveys import DES_BANDS, LSST_BANDS, band_facts

SED_TEMPLATES = ("CWW_E_ext", "CWW_Sbc_ext", "CWW_Scd_ext", "CWW_Im_ext")
Z_GRID = np.round(np.arange(0.0, 3.0001, 0.02), 4)
# DES filter widths in nm (approximate FWHM of the DES grizY throughputs, DES DR1): the top-hat stand-ins.
DES_TOPHAT_WIDTH_NM = {"g": 150.0, "r": 146.0, "i": 147.0, "z": 152.0, "Y": 105.0}
COUNT_SLOPE = 0.31  # d log10 N / dm of faint i-band galaxy counts
SIGMA_E = 0.26  # per-component intrinsic ellipticity spread
E_MAX = 0.8
SHEAR_MAX = 0.05
Z_MIN, Z_MAX = 0.02, 3.0


@cache
def bandpasses() -> dict[tuple[str, str], galsim.Bandpass]:
    """``(survey, band) -> galsim.Bandpass`` with AB zeropoints: LSST from GalSim, DES as documented top-hats."""
    out = {("LSST", b): galsim.Bandpass(f"LSST_{b}.dat", "nm").withZeropoint("AB") for b in LSST_BANDS}
    for b in DES_BANDS:
        centre, half = band_facts("DES", b).effective_wavelength_nm, DES_TOPHAT_WIDTH_NM[b] / 2
        top_hat = galsim.LookupTable([centre - half, centre + half], [1.0, 1.0], interpolant="linear")
        out[("DES", b)] = galsim.Bandpass(top_hat, "nm").withZeropoint("AB")
    return out


@cache
def colour_table() -> np.ndarray:
    """Magnitude minus LSST i magnitude, ``(n_templates, n_z, 6 + 5)`` (LSST ugrizy then DES grizY) on Z_GRID."""
    bps = bandpasses()
    keys = [("LSST", b) for b in LSST_BANDS] + [("DES", b) for b in DES_BANDS]
    table = np.empty((len(SED_TEMPLATES), len(Z_GRID), len(keys)))
    for t, name in enumerate(SED_TEMPLATES):
        sed = galsim.SED(f"{name}.sed", "A", "flambda")
        for iz, z in enumerate(Z_GRID):
            sz = sed.atRedshift(float(z))
            mags = np.array([sz.calculateMagnitude(bps[k]) for k in keys])
            table[t, iz] = mags - mags[LSST_BANDS.index("i")]
    return table


def colours_at(sed_type: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Colours (mag - i) ``(G, 11)`` at continuous type ``sed_type`` in [0, 3] and redshift ``z`` (bilinear)."""
    table = colour_table()
    t = np.clip(np.asarray(sed_type, float), 0, len(SED_TEMPLATES) - 1)
    zf = np.clip(np.asarray(z, float), Z_GRID[0], Z_GRID[-1]) / (Z_GRID[1] - Z_GRID[0])
    t0 = np.minimum(t.astype(int), len(SED_TEMPLATES) - 2)
    z0 = np.minimum(zf.astype(int), len(Z_GRID) - 2)
    wt, wz = (t - t0)[:, None], (zf - z0)[:, None]
    return (
        (1 - wt) * (1 - wz) * table[t0, z0]
        + (1 - wt) * wz * table[t0, z0 + 1]
        + wt * (1 - wz) * table[t0 + 1, z0]
        + wt * wz * table[t0 + 1, z0 + 1]
    )


@dataclass(frozen=True)
class Population:
    """Galaxies (arrays of length G): photometry, redshift, morphology, intrinsic shape, shear and label."""

    mag_lsst: np.ndarray  # (G, 6) AB magnitudes in LSST ugrizy
    mag_des: np.ndarray  # (G, 5) AB magnitudes in DES grizY
    z: np.ndarray
    sed_type: np.ndarray  # continuous CWW type: 0 E, 1 Sbc, 2 Scd, 3 Im
    disk_hlr: np.ndarray  # arcsec
    bulge_hlr: np.ndarray  # arcsec
    bulge_frac: np.ndarray
    e1_intrinsic: np.ndarray  # shear convention
    e2_intrinsic: np.ndarray
    g1_shear: np.ndarray  # reduced shear applied to this galaxy
    g2_shear: np.ndarray

    def __len__(self) -> int:
        return len(self.z)

    @property
    def mag_i(self) -> np.ndarray:
        return self.mag_lsst[:, LSST_BANDS.index("i")]

    @property
    def label(self) -> tuple[np.ndarray, np.ndarray]:
        """PSF-free ellipticity after shear (the training label), shear convention."""
        return compose_shear(self.e1_intrinsic, self.e2_intrinsic, self.g1_shear, self.g2_shear)

    @property
    def hlr(self) -> np.ndarray:
        """Approximate half-light radius of bulge + disk (flux-weighted mean of the two), arcsec."""
        return (1 - self.bulge_frac) * self.disk_hlr + self.bulge_frac * self.bulge_hlr

    def mags(self, survey: str) -> np.ndarray:
        return self.mag_lsst if survey == "LSST" else self.mag_des

    def flux(self, survey: str, bands: tuple[str, ...]) -> np.ndarray:
        """Per-band flux ``(G, B)`` in the survey's image units (DESIGN.md "Units")."""
        mags = self.mags(survey)
        order = LSST_BANDS if survey == "LSST" else DES_BANDS
        return np.stack([band_facts(survey, b).flux(mags[:, order.index(b)]) for b in bands], axis=1)

    def shapes(self, x: np.ndarray, y: np.ndarray) -> GalaxyShapes:
        """Rendering shapes at positions ``x, y`` (arcsec, +x West, +y North) with the labels as shapes."""
        g1, g2 = self.label
        return GalaxyShapes(self.disk_hlr, self.bulge_hlr, self.bulge_frac, g1, g2, np.asarray(x), np.asarray(y))

    def with_(self, **changes: np.ndarray) -> Population:
        """A copy with some arrays replaced (e.g. the intrinsic shape rotated, a fixed applied shear)."""
        return replace(self, **changes)


def draw_magnitudes(
    rng: np.random.Generator, n: int, mag_min: float | np.ndarray, mag_max: float | np.ndarray
) -> np.ndarray:
    """i magnitudes from counts ``dN/dm ~ 10**(COUNT_SLOPE m)`` on ``[mag_min, mag_max]`` (inverse CDF);
    the limits may be per-galaxy arrays (a central and its fainter neighbours in one draw)."""
    a = COUNT_SLOPE * np.log(10.0)
    lo, hi = np.exp(a * mag_min), np.exp(a * mag_max)
    return np.log(lo + rng.random(n) * (hi - lo)) / a


def draw_ellipticities(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsic (e1, e2): Gaussian components of spread SIGMA_E, redrawn until |e| < E_MAX."""
    e = rng.normal(0.0, SIGMA_E, size=(n, 2))
    bad = np.hypot(e[:, 0], e[:, 1]) >= E_MAX
    while bad.any():
        e[bad] = rng.normal(0.0, SIGMA_E, size=(int(bad.sum()), 2))
        bad = np.hypot(e[:, 0], e[:, 1]) >= E_MAX
    return e[:, 0], e[:, 1]


def draw_population(
    rng: np.random.Generator, n: int, mag_min: float | np.ndarray, mag_max: float | np.ndarray
) -> Population:
    """``n`` galaxies with i magnitudes in ``[mag_min, mag_max]`` (scalars or per-galaxy arrays; see the
    module docstring for the model)."""
    mag_i = draw_magnitudes(rng, n, mag_min, mag_max)
    z0 = np.maximum(0.0417 * mag_i - 0.744, 0.05)
    z = np.clip(z0 * rng.gamma(3.0, 1.0, n), Z_MIN, Z_MAX)
    sed_type = np.clip(rng.normal(1.1 + 0.6 * z, 0.8), 0.0, len(SED_TEMPLATES) - 1)
    colours = colours_at(sed_type, z)
    mags = mag_i[:, None] + colours
    mean_bf = np.clip(0.8 - 0.25 * sed_type, 0.05, 0.95)
    bulge_frac = rng.beta(4 * mean_bf, 4 * (1 - mean_bf))
    disk_hlr = np.clip(0.6 * 10 ** (-0.12 * (mag_i - 22.0) + rng.normal(0.0, 0.18, n)), 0.08, 3.0)
    bulge_hlr = disk_hlr * rng.uniform(0.3, 0.7, n)
    e1, e2 = draw_ellipticities(rng, n)
    g = SHEAR_MAX * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    return Population(
        mag_lsst=mags[:, : len(LSST_BANDS)],
        mag_des=mags[:, len(LSST_BANDS) :],
        z=z,
        sed_type=sed_type,
        disk_hlr=disk_hlr,
        bulge_hlr=bulge_hlr,
        bulge_frac=bulge_frac,
        e1_intrinsic=e1,
        e2_intrinsic=e2,
        g1_shear=g * np.cos(phi),
        g2_shear=g * np.sin(phi),
    )

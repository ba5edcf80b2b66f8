"""Fast multi-band rendering of bulge + disk galaxies in Fourier space, with GalSim's profiles and PSFs.

Why not ``drawImage`` per galaxy and band: the galaxies are achromatic bulge + disk profiles whose flux alone
changes with band, so a galaxy's Fourier transform is computed once and shared by every band; each band then
costs one multiplication by its PSF and pixel transforms and one inverse FFT for the whole scene. The radial
transforms come from GalSim itself (the exponential in closed form, the de Vaucouleurs and the PSFs
tabulated once from GalSim's ``kValue``), and ``tests/sim`` checks the stamps against GalSim's ``drawImage``.

Conventions: a stamp is ``(B, S, S)`` with S odd, array ``[y, x]``, +x = West, +y = North (DESIGN.md); the
stamp centre is pixel ``S // 2`` (GalSim's true centre), positions are arcsec from it, and a galaxy's
``(g1, g2)`` is the shape of its profile in that frame (shear convention). Pixel values are flux per pixel,
the profile integrated over the pixel (GalSim's default ``method="auto"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import galsim
import numpy as np

from survey_deblend.sim.psf import FAST_GSPARAMS, psf_for
from survey_deblend.surveys import band_facts

EXP_HLR_TO_SCALE = 1.0 / 1.6783469900166605  # exponential: scale radius / half-light radius (GalSim)
_FFT_SIZES = (64, 80, 96, 128, 160, 192, 256, 320, 384, 512)
FFT_MARGIN_PIX = 24  # free pixels around the stamp on the FFT grid: bright neighbours' wings must not wrap in


DEV_TABLE_STEP = 0.01  # spacing in k * half-light radius of the tabulated de Vaucouleurs transform
DEV_TABLE_MAX = 400.0


@cache
def _devaucouleurs_table() -> np.ndarray:
    """Fourier transform of a unit-flux de Vaucouleurs profile of half-light radius 1 on a uniform grid in k
    (step DEV_TABLE_STEP, from GalSim's ``kValue``), float32; a uniform grid makes the lookup a cheap index."""
    prof = galsim.DeVaucouleurs(half_light_radius=1.0, gsparams=FAST_GSPARAMS)
    u_coarse = np.concatenate([[0.0], np.geomspace(1e-3, DEV_TABLE_MAX, 4000)])
    v_coarse = np.array([prof.kValue(galsim.PositionD(x, 0.0)).real for x in u_coarse])
    u = np.arange(0.0, DEV_TABLE_MAX + DEV_TABLE_STEP / 2, DEV_TABLE_STEP)
    return np.append(np.interp(u, u_coarse, v_coarse), 0.0).astype(np.float32)  # trailing 0: beyond the table


def _devaucouleurs_ft(u: np.ndarray) -> np.ndarray:
    """Linear interpolation of the tabulated de Vaucouleurs transform at ``u = k * hlr`` (float32)."""
    table = _devaucouleurs_table()
    pos = np.minimum(u * np.float32(1.0 / DEV_TABLE_STEP), np.float32(len(table) - 2))
    i = pos.astype(np.int32)
    w = pos - i
    lo = table[i]
    return lo + w * (table[i + 1] - lo)


@cache
def _psf_table(survey: str, band: str, model: str, k_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Radial Fourier transform of the (round) PSF up to ``k_max`` (arcsec^-1), tabulated from GalSim."""
    psf = psf_for(survey, band, model)
    k = np.linspace(0.0, k_max, 1500)
    return k, np.array([psf.kValue(galsim.PositionD(x, 0.0)).real for x in k])


def fft_size(stamp_size: int) -> int:
    """FFT grid for a stamp: room for the stamp plus a margin so neighbours' wings do not wrap in."""
    need = stamp_size + 2 * FFT_MARGIN_PIX
    return next((n for n in _FFT_SIZES if n >= need), int(2 ** np.ceil(np.log2(need))))


@dataclass(frozen=True)
class GalaxyShapes:
    """Per-galaxy morphology and placement (arrays of length G), shared by every band and survey."""

    disk_hlr: np.ndarray  # arcsec
    bulge_hlr: np.ndarray  # arcsec
    bulge_frac: np.ndarray  # fraction of the flux in the bulge
    g1: np.ndarray  # shape of the profile (after shear), shear convention
    g2: np.ndarray
    x: np.ndarray  # arcsec from the stamp centre, +x = West
    y: np.ndarray  # arcsec from the stamp centre, +y = North

    def __len__(self) -> int:
        return len(self.disk_hlr)


class StampRenderer:
    """Renders scenes of galaxies on ``(B, S, S)`` stamps of one survey (its bands, pixel scale, PSFs)."""

    def __init__(self, survey: str, bands: tuple[str, ...], stamp_size: int, psf_model: str = "moffat"):
        if stamp_size % 2 == 0:
            raise ValueError(f"stamp_size must be odd (the centre is a pixel), got {stamp_size}")
        self.survey, self.bands, self.stamp_size = survey, tuple(bands), stamp_size
        self.facts = [band_facts(survey, b) for b in self.bands]
        self.scale = self.facts[0].pixel_scale_arcsec
        n = self.n_fft = fft_size(stamp_size)
        self.kx = (2 * np.pi * np.fft.rfftfreq(n, d=self.scale))[None, :]
        self.ky = (2 * np.pi * np.fft.fftfreq(n, d=self.scale))[:, None]
        k = np.hypot(self.kx, self.ky)
        pixel = np.sinc(self.kx * self.scale / (2 * np.pi)) * np.sinc(self.ky * self.scale / (2 * np.pi))
        k_max = float(k.max()) * 1.001
        transfer = []
        for b in self.bands:
            kt, vt = _psf_table(survey, b, psf_model, k_max)
            transfer.append(np.interp(k, kt, vt) * pixel)
        # (-1)^(i + j) moves the origin to pixel (n/2, n/2) of the inverse FFT, so no fftshift is needed.
        centre = np.where((np.arange(n)[:, None] + np.arange(n // 2 + 1)[None, :]) % 2, -1.0, 1.0)
        # (B, N, N//2+1): PSF x pixel response per band, complex64 (float32 FFTs are 4x faster; stamps are float32)
        self.transfer = (np.stack(transfer) * centre).astype(np.complex64)
        half = stamp_size // 2
        self._crop = slice(n // 2 - half, n // 2 + half + 1)
        self._kx32, self._ky32 = self.kx.astype(np.float32), self.ky.astype(np.float32)

    def galaxy_transforms(self, shapes: GalaxyShapes) -> np.ndarray:
        """Unit-flux Fourier transforms of each galaxy at its position, ``(G, N, N//2+1)`` complex64."""
        kx, ky = self._kx32, self._ky32
        col = lambda a: np.asarray(a, dtype=np.float32)[:, None, None]  # noqa: E731
        g1, g2 = col(shapes.g1), col(shapes.g2)
        norm = 1.0 / np.sqrt(1.0 - g1**2 - g2**2)
        # A sheared profile f(S^-1 x) has transform F(S k) (S symmetric, det 1): evaluate the round one there.
        skx = norm * ((1 + g1) * kx + g2 * ky)
        sky = norm * (g2 * kx + (1 - g1) * ky)
        k2 = skx * skx + sky * sky
        r0 = col(shapes.disk_hlr * EXP_HLR_TO_SCALE)
        disk = 1.0 + k2 * (r0 * r0)
        disk = 1.0 / (disk * np.sqrt(disk))
        bulge = _devaucouleurs_ft(np.sqrt(k2) * col(shapes.bulge_hlr))
        bf = col(shapes.bulge_frac)
        phase = np.exp(-1j * (kx * col(shapes.x))).astype(np.complex64)
        phase = phase * np.exp(-1j * (ky * col(shapes.y))).astype(np.complex64)
        return ((1.0 - bf) * disk + bf * bulge) * phase

    def images(self, transforms: np.ndarray, flux: np.ndarray) -> np.ndarray:
        """Noiseless stamps of sums of galaxies: ``flux`` ``(G, B)`` gives ``(B, S, S)``; ``(C, G, B)`` gives
        ``(C, B, S, S)``, one scene per group ``c`` (weights of zero leave a galaxy out of a group)."""
        flux = np.asarray(flux, dtype=np.float32)
        grouped = flux.ndim == 3
        weights = flux if grouped else flux[None]
        c, g, b = weights.shape
        n, m = transforms.shape[-2:]
        # A few galaxies: explicit multiply-adds beat a (threaded, contended) BLAS call on a shared machine.
        weights = weights.transpose(0, 2, 1).reshape(c * b, g)
        scene = weights[:, 0, None, None] * transforms[0]
        for j in range(1, g):
            scene += weights[:, j, None, None] * transforms[j]
        scene = scene.reshape(c, b, n, m)
        scene *= self.transfer
        img = np.fft.irfft2(scene, s=(self.n_fft, self.n_fft), axes=(-2, -1))
        img = img[..., self._crop, self._crop]
        return img if grouped else img[0]

    def images_each(self, transforms: np.ndarray, flux: np.ndarray) -> np.ndarray:
        """One noiseless stamp per galaxy, ``(G, B, S, S)`` (each galaxy alone, e.g. to paste into a tile)."""
        scene = np.asarray(flux, dtype=np.complex64)[:, :, None, None] * transforms[:, None] * self.transfer
        img = np.fft.irfft2(scene, s=(self.n_fft, self.n_fft), axes=(-2, -1))
        return img[..., self._crop, self._crop]

    def render(self, shapes: GalaxyShapes, flux: np.ndarray) -> np.ndarray:
        """Noiseless stamps ``(B, S, S)`` of the scene made of ``shapes`` with per-band ``flux`` ``(G, B)``."""
        if len(shapes) == 0:
            return np.zeros((len(self.bands), self.stamp_size, self.stamp_size), dtype=np.float32)
        return self.images(self.galaxy_transforms(shapes), flux)

    @property
    def sky_sigma(self) -> np.ndarray:
        """Per-band sky noise standard deviation in image units, ``(B,)``."""
        return np.array([f.sky_sigma for f in self.facts])


def galsim_profile(shapes: GalaxyShapes, i: int, flux: float) -> galsim.GSObject:
    """The same galaxy ``i`` as a GalSim object (bulge + disk, sheared, shifted): the reference for tests."""
    disk = galsim.Exponential(half_light_radius=float(shapes.disk_hlr[i]), gsparams=FAST_GSPARAMS)
    bulge = galsim.DeVaucouleurs(half_light_radius=float(shapes.bulge_hlr[i]), gsparams=FAST_GSPARAMS)
    bf = float(shapes.bulge_frac[i])
    prof = (disk * (1 - bf) + bulge * bf).shear(g1=float(shapes.g1[i]), g2=float(shapes.g2[i]))
    return prof.shift(float(shapes.x[i]), float(shapes.y[i])).withFlux(flux)

"""The five metacalibration images of a batch of stamps, batched in Fourier space with torch (CPU or CUDA).

For every stamp and band (each band with its own PSF, ``calibration.psf``): deconvolve by the PSF (times the
pixel response), shear by ``(0, 0), (+d, 0), (-d, 0), (0, +d), (0, -d)`` (``SHEAR_TYPES``; GalSim's
``Shear.g1/g2``, +x = West as DESIGN.md), reconvolve with the round target dilated by ``1 + 2|d|`` (times the
pixel), as ngmix's metacal does with GalSim's ``InterpolatedImage``, ``Deconvolve``, ``shear`` and ``Convolve``.

How, in one pass per batch (no loop over galaxies):

- The stamp is read as a band-limited image (sinc interpolation: GalSim's ``InterpolatedImage`` with a wide
  Lanczos kernel), zero-padded on an FFT grid, coordinates measured from its centre pixel.
- Shearing evaluates the image's transform at ``S k`` (``S`` the shear matrix). ``S k`` is off the FFT grid, so
  the transform there is expanded in ``d = S k - k`` to ``order`` (default 1) from the transforms of the
  stamp times the monomials ``x^a y^b``: ``I(S k) = sum (-i)^(a+b) d_x^a d_y^b / (a! b!) FT(x^a y^b I)(k)``.
  |d . x| <= |delta| |k| |x| is small, every shear reuses the same few FFTs, and the first-order term (what
  the response measures) is exact; the neglected second order is symmetric in +-delta and cancels in R.
- The PSF and target are evaluated exactly at ``S k`` and ``k`` (tabulated radial transforms); where the
  PSF's transform is zero the output is zero. The kernel is ``T(k) Pix(k) / (P(S k) Pix(S k))``, at most 1.
- "fixnoise" (Sheldon & Huff 2017): a noise field of the stamp's level, rotated by 90 degrees, put through the
  same operations and rotated back, is added, so that the noise's sheared correlations are symmetrised and do
  not masquerade as shear. Rotating the operations instead of the field is the same thing exactly: the
  operator conjugated by a 90-degree rotation deconvolves the 90-degree-rotated PSF (g -> -g) and shears by
  -delta. So the noise field goes through that operator, in the same FFT pass.

The output keeps the stamp's size, units and orientation. Its noise is the stamp's own plus the fixnoise field,
both smoothed a little by the reconvolution (the dilated target passes less than the PSF at high k, and modes
beyond the PSF's tabulated support, below ~1e-3 of its peak, are dropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from survey_deblend.calibration.psf import PSFModel, radial_table, shear_matrix, table_lookup
from survey_deblend.errors import InputError

SHEAR_TYPES = ("noshear", "1p", "1m", "2p", "2m")
DEFAULT_DELTA = 0.01
NEGATED = (0, 2, 1, 4, 3)  # index of the shear of opposite sign, for the fixnoise operator
FFT_MARGIN_PIX = 4  # zero pixels around the stamp: the kernel is PSF-sized and nearly a delta (T ~ P)
_SMOOTH = tuple(sorted({2**a * 3**b * 5**c for a in range(1, 10) for b in range(4) for c in range(3)}))


def metacal_shears(delta: float = DEFAULT_DELTA) -> np.ndarray:
    """The applied shears ``(5, 2)`` in the order of ``SHEAR_TYPES``."""
    d = float(delta)
    return np.array([[0.0, 0.0], [d, 0.0], [-d, 0.0], [0.0, d], [0.0, -d]])


def fft_size(stamp_size: int, margin: int = FFT_MARGIN_PIX) -> int:
    """Smallest even 2-3-5-smooth grid that holds the stamp and ``margin`` zero pixels on each side."""
    need = stamp_size + 2 * margin
    return next(n for n in _SMOOTH if n >= need)


def _monomials(order: int) -> list[tuple[int, int]]:
    return [(n - b, b) for n in range(order + 1) for b in range(n + 1)]


@dataclass(frozen=True)
class _Grid:
    """Everything about one (stamp size, FFT size, delta, order, device) that no galaxy changes.

    The stamp sits at ``[:S, :S]`` of the zero-padded grid; coordinates are measured from its centre pixel
    ``S // 2``. The shift theorem's phases cancel between the forward and the inverse transform (every kernel is
    a function of k alone), so no array is rolled."""

    stamp: int
    n_fft: int
    powers: tuple[tuple[int, int], ...]  # the monomials' (a, b) of x^a y^b
    x_pow: torch.Tensor  # (A, S) x^a of the stamp's columns, a = 0..order
    y_pow: torch.Tensor  # (A, S, 1) y^b of the stamp's rows
    coeffs: torch.Tensor  # (M (M//2+1), 5, T) complex Taylor coefficients per frequency and applied shear
    k2: torch.Tensor  # (5, 3, M, M//2+1): (Sk)_x^2, (Sk)_x (Sk)_y, (Sk)_y^2 in radians per pixel
    k_abs: torch.Tensor  # (M, M//2+1) |k|
    pixel: torch.Tensor  # (5, M, M//2+1): Pix(k) box(Sk) / Pix(Sk)


@lru_cache(maxsize=16)
def _grid(stamp: int, n_fft: int, delta: float, order: int, device: str) -> _Grid:
    m = n_fft
    coord = np.where(np.arange(m) < stamp, np.arange(m) - stamp // 2, 0).astype(np.float64)  # pixels from centre
    y, x = np.meshgrid(coord, coord, indexing="ij")
    terms = _monomials(order)
    powers = (np.arange(stamp) - stamp // 2)[None, :] ** np.arange(order + 1)[:, None]  # (A, S)
    kx = 2 * np.pi * np.fft.rfftfreq(m)[None, :]
    ky = 2 * np.pi * np.fft.fftfreq(m)[:, None]
    kx, ky = np.broadcast_arrays(kx, ky)
    shears = metacal_shears(delta)
    coeffs, k2, pixel = [], [], []
    sinc = lambda u: np.sinc(u / (2 * np.pi))  # noqa: E731  pixel response: sin(k/2) / (k/2), k in rad/pixel
    for g1, g2 in shears:
        s = shear_matrix(g1, g2)
        skx, sky = s[0, 0] * kx + s[0, 1] * ky, s[1, 0] * kx + s[1, 1] * ky
        dx, dy = skx - kx, sky - ky
        coeffs.append(
            np.stack([(-1j) ** (a + b) * dx**a * dy**b / (math.factorial(a) * math.factorial(b)) for a, b in terms])
        )
        k2.append(np.stack([skx * skx, skx * sky, sky * sky]))
        # Inside the band (the image is band-limited); the Nyquist row and column are dropped: there +pi and -pi
        # are one frequency, where a sheared or elliptical kernel takes two values (and breaks rotation symmetry).
        band = (np.abs(skx) < np.pi) & (np.abs(sky) < np.pi) & (np.abs(kx) < np.pi - 1e-9) & (np.abs(ky) < np.pi - 1e-9)
        pixel.append(np.where(band, sinc(kx) * sinc(ky) / (sinc(skx) * sinc(sky)), 0.0))
    dev = torch.device(device)
    as_t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt, device=dev)  # noqa: E731
    return _Grid(
        stamp=stamp,
        n_fft=m,
        powers=tuple(terms),
        x_pow=as_t(powers),
        y_pow=as_t(powers[:, :, None]),
        coeffs=as_t(np.stack(coeffs).reshape(len(shears), len(terms), -1).transpose(2, 0, 1).copy(), torch.complex64),
        k2=as_t(np.stack(k2)),
        k_abs=as_t(np.hypot(kx, ky)),
        pixel=as_t(np.stack(pixel)),
    )


@lru_cache(maxsize=8)
def _table(profile: str, device: str) -> torch.Tensor:
    return torch.as_tensor(radial_table(profile), dtype=torch.float32, device=torch.device(device))


def _psf_terms(psf: PSFModel, pixel_scale: float, delta: float, device: torch.device) -> dict[str, torch.Tensor]:
    """Per PSF ``(P, 1, 1)``: FWHM and target FWHM in pixels, and the entries of A^2 (A the PSF's shear matrix)."""
    a = shear_matrix(psf.g1, psf.g2)
    a2 = a @ a
    col = lambda v: torch.as_tensor(np.ravel(v), dtype=torch.float32, device=device)[:, None, None]  # noqa: E731
    return {
        "c": col(np.asarray(psf.fwhm, dtype=np.float64) / pixel_scale),
        "c_target": col(psf.target_fwhm(delta) / pixel_scale),
        "xx": col(a2[..., 0, 0]),
        "xy": col(a2[..., 0, 1]),
        "yy": col(a2[..., 1, 1]),
    }


def _kernels(grid: _Grid, terms: dict[str, torch.Tensor], table: torch.Tensor, flip: bool) -> torch.Tensor:
    """``T(k) Pix(k) / (P(S_s k) Pix(S_s k))`` for the 5 shears and each PSF: ``(5, P, M, M//2+1)`` float32.

    ``flip``: the fixnoise operator (PSF rotated by 90 degrees and every shear negated)."""
    target = table_lookup(table, terms["c_target"] * grid.k_abs)
    out = []
    for s in range(len(SHEAR_TYPES)):
        g = NEGATED[s] if flip else s
        kxx, kxy, kyy = grid.k2[g]
        if flip:  # A(-g)^2 = [[yy, -xy], [-xy, xx]] of A(g)^2
            q2 = terms["yy"] * kxx - 2 * terms["xy"] * kxy + terms["xx"] * kyy
        else:
            q2 = terms["xx"] * kxx + 2 * terms["xy"] * kxy + terms["yy"] * kyy
        p = table_lookup(table, terms["c"] * torch.sqrt(q2))
        ratio = torch.where(p > 1e-9, target / torch.clamp(p, min=1e-9), torch.zeros_like(p))
        out.append(torch.clamp(ratio, max=1.0) * grid.pixel[g])
    return torch.stack(out)


def _unique_psfs(psf: PSFModel) -> tuple[PSFModel, np.ndarray]:
    """The distinct PSFs of a batch (simulations share one per band) and, per (stamp, band), its index."""
    keys = np.stack([np.ravel(psf.fwhm), np.ravel(psf.g1), np.ravel(psf.g2)], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    flat = PSFModel(uniq[:, :1], uniq[:, 1:2], uniq[:, 2:3], profile=psf.profile)
    return flat, inverse.reshape(np.shape(psf.fwhm))


def _transforms(fields: torch.Tensor, grid: _Grid) -> torch.Tensor:
    """``FT(x^a y^b F)`` of ``(L, S, S)`` fields on the zero-padded ``M x M`` grid: ``(L, T, M, M//2+1)``.

    Separable, so the padding costs nothing: the x transform of ``x^a F`` (rows of the stamp only), then the y
    transform of ``y^b`` times that (one column transform per monomial)."""
    m = grid.n_fft
    rows = torch.fft.rfft(fields.unsqueeze(1) * grid.x_pow[:, None, :], n=m, dim=-1)  # (L, A, S, K)
    terms = torch.stack([rows[:, a] * grid.y_pow[b] for a, b in grid.powers], 1)  # (L, T, S, K)
    return torch.fft.fft(terms, n=m, dim=-2)


def _sheared_all(ft: torch.Tensor, grid: _Grid) -> torch.Tensor:
    """The transforms at ``S_s k`` for the 5 shears (Taylor expansion, module docstring): ``(5, L, M, M//2+1)``
    from ``(L, T, M, M//2+1)``, one batched product per frequency (no pass per term)."""
    n, t, m, k = ft.shape
    x = ft.permute(2, 3, 1, 0).reshape(m * k, t, n)  # (P, T, L)
    y = torch.bmm(grid.coeffs, x)  # (P, 5, L)
    return y.reshape(m, k, len(SHEAR_TYPES), n).permute(2, 3, 0, 1)


def _inverse(spectra: torch.Tensor, grid: _Grid) -> torch.Tensor:
    """The ``S x S`` stamps of ``(..., M, M//2+1)`` spectra: inverse y transform, the stamp's rows, inverse x."""
    s, m = grid.stamp, grid.n_fft
    cols = torch.fft.ifft(spectra, dim=-2)[..., :s, :]
    return torch.fft.irfft(cols, n=m, dim=-1)[..., :s]


def _to_tensor(a: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32).to(device)


def metacal_images(
    images: np.ndarray | torch.Tensor,
    psf: PSFModel,
    pixel_scale: float,
    noise_sigma: np.ndarray | None = None,
    delta: float = DEFAULT_DELTA,
    fixnoise: bool = True,
    seed: int = 0,
    noise: np.ndarray | torch.Tensor | None = None,
    order: int = 1,
    device: str | torch.device | None = None,
    chunk: int = 64,
) -> torch.Tensor:
    """The five metacalibration images of ``images`` ``(N, B, S, S)`` (S odd): ``(5, N, B, S, S)`` float32 on
    ``device`` (default: the input tensor's, else CPU), in the order of ``SHEAR_TYPES``.

    ``psf``: one model per stamp and band (``calibration.psf``), ``pixel_scale`` in arcsec. With ``fixnoise``,
    a noise field is added: ``noise`` (N, B, S, S) as given, else Gaussian of ``noise_sigma`` (N, B) drawn
    from ``seed``. ``order``: of the shear's Taylor expansion (1 makes the response exact and the sheared
    images agree with GalSim to ~1e-4 of the peak; 2 to ~5e-5). Stamps with an unusable PSF come out with a
    harmless round PSF's images (the caller marks them). A band that is all zero with zero noise stays zero."""
    if device is None:
        device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    n, b, s = images.shape[0], images.shape[1], images.shape[-1]
    if images.ndim != 4 or images.shape[-2] != s or s % 2 == 0:
        raise InputError(f"stamps: expected (N, B, S, S) with S odd, got {tuple(images.shape)}")
    if np.shape(psf.fwhm) != (n, b):
        raise InputError(f"psf model: expected ({n}, {b}) entries for the stamps, got {np.shape(psf.fwhm)}")
    if not 0 < abs(delta) < 0.1 or order < 1:
        raise InputError(f"metacal: delta must be in (0, 0.1) and order >= 1, got {delta}, {order}")
    if fixnoise and noise is None and noise_sigma is None:
        raise InputError("metacal: fixnoise needs noise_sigma (N, B) or a noise field")
    if fixnoise and noise is None and np.shape(noise_sigma) != (n, b):
        raise InputError(f"noise_sigma: expected shape ({n}, {b}), got {np.shape(noise_sigma)}")
    grid = _grid(s, fft_size(s), float(abs(delta)), int(order), str(device))
    unique, which = _unique_psfs(psf.sanitized())
    terms = _psf_terms(unique, pixel_scale, delta, device)
    table = _table(psf.profile, str(device))
    kernels = _kernels(grid, terms, table, flip=False)  # (5, P, M, M//2+1)
    nkernels = _kernels(grid, terms, table, flip=True) if fixnoise else None
    gen = torch.Generator(device=device).manual_seed(int(seed)) if fixnoise and noise is None else None
    out = torch.empty((len(SHEAR_TYPES), n, b, s, s), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            rows = which[sl]
            shared = bool(np.all(rows == rows[:1]))  # e.g. simulations: one PSF per band, no gather
            idx = torch.as_tensor(rows[:1] if shared else rows, device=device)
            fields = _to_tensor(images[sl], device)
            if fixnoise:
                if noise is not None:
                    field = _to_tensor(noise[sl], device)
                else:
                    sigma = torch.as_tensor(np.asarray(noise_sigma)[sl], dtype=torch.float32, device=device)
                    field = torch.randn(fields.shape, generator=gen, device=device) * sigma[..., None, None]
                fields = torch.stack([fields, field])
            ft = _sheared_all(_transforms(fields.reshape(-1, s, s), grid), grid)  # (5, [2] n B, M, K)
            ft = ft.reshape(len(SHEAR_TYPES), 2 if fixnoise else 1, sl.stop - sl.start, b, *ft.shape[-2:])
            spec = ft[:, 0] * kernels[:, idx]
            if fixnoise:
                spec += ft[list(NEGATED), 1] * nkernels[:, idx]
            out[:, sl] = _inverse(spec, grid)
    return out

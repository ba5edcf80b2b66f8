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
    weights: torch.Tensor  # (T, M, M) monomials x^a y^b on the padded grid, zero outside the stamp
    coeffs: torch.Tensor  # (5, T, M, M//2+1) complex Taylor coefficients per applied shear
    k2: torch.Tensor  # (5, 3, M, M//2+1): (Sk)_x^2, (Sk)_x (Sk)_y, (Sk)_y^2 in radians per pixel
    k_abs: torch.Tensor  # (M, M//2+1) |k|
    pixel: torch.Tensor  # (5, M, M//2+1): Pix(k) box(Sk) / Pix(Sk)


@lru_cache(maxsize=16)
def _grid(stamp: int, n_fft: int, delta: float, order: int, device: str) -> _Grid:
    m = n_fft
    coord = np.where(np.arange(m) < stamp, np.arange(m) - stamp // 2, 0).astype(np.float64)  # pixels from centre
    y, x = np.meshgrid(coord, coord, indexing="ij")
    inside = np.zeros((m, m))
    inside[:stamp, :stamp] = 1.0
    terms = _monomials(order)
    weights = np.stack([inside * x**a * y**b for a, b in terms])
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
        weights=as_t(weights),
        coeffs=as_t(np.stack(coeffs), torch.complex64),
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
    """``FT(x^a y^b F)`` of ``(..., S, S)`` fields: ``(T, ..., M, M//2+1)`` complex64."""
    s, m = fields.shape[-1], grid.n_fft
    padded = fields.new_zeros((*fields.shape[:-2], m, m))
    padded[..., :s, :s] = fields
    return torch.fft.rfft2(padded.unsqueeze(0) * grid.weights.view(-1, *([1] * (fields.ndim - 2)), m, m))


def _sheared(ft: torch.Tensor, grid: _Grid, s: int) -> torch.Tensor:
    """The transform at ``S_s k`` from the monomial transforms (Taylor expansion, module docstring)."""
    if s == 0:
        return ft[0]
    coeffs = grid.coeffs[s]
    out = ft[0] * coeffs[0]
    for t in range(1, len(coeffs)):
        out.addcmul_(ft[t], coeffs[t])  # in place: one pass per term, no temporaries
    return out


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
    chunk: int = 32,
    margin: int = 0,
) -> torch.Tensor:
    """The five metacalibration images of ``images`` ``(N, B, S, S)`` (S odd): ``(5, N, B, S, S)`` float32 on
    ``device`` (default: the input tensor's, else CPU), in the order of ``SHEAR_TYPES``.

    ``psf``: one model per stamp and band (``calibration.psf``), ``pixel_scale`` in arcsec. With ``fixnoise``,
    a noise field is added: ``noise`` (N, B, S, S) as given, else Gaussian of ``noise_sigma`` (N, B) drawn
    from ``seed``. ``order``: of the shear's Taylor expansion (1 makes the response exact and the sheared
    images agree with GalSim to ~1e-4 of the peak; 2 to ~5e-5). Stamps with an unusable PSF come out with a
    harmless round PSF's images (the caller marks them). A band that is all zero with zero noise stays zero.
    ``margin``: the stamps are cut that many pixels wider on every side than the model's stamp; the images are made
    from the whole cut and returned cropped to the model's stamp (as ``CutoutBatch.core``; calibration does not
    import the cutout stage): a stamp sheared on its own is wrong at its edges."""
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
    if not 0 <= 2 * margin < s:
        raise InputError(f"metacal: margin {margin} does not fit stamps of {s} pixels")
    core = s - 2 * margin
    out = torch.empty((len(SHEAR_TYPES), n, b, core, core), dtype=torch.float32, device=device)
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
            ft = _transforms(fields, grid)  # (T, [2,] n, B, M, M//2+1)
            spectra = []
            for k in range(len(SHEAR_TYPES)):
                if fixnoise:
                    spec = _sheared(ft[:, 0], grid, k) * kernels[k][idx]
                    spec += _sheared(ft[:, 1], grid, NEGATED[k]) * nkernels[k][idx]
                else:
                    spec = _sheared(ft, grid, k) * kernels[k][idx]
                spectra.append(spec)
            img = torch.fft.irfft2(torch.stack(spectra), s=(grid.n_fft, grid.n_fft))
            out[:, sl] = img[..., margin : s - margin, margin : s - margin]
    return out

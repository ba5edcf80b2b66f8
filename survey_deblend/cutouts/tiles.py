"""Stamps from a directory of coadd tiles: one FITS (or .fits.fz) per tile and band, SCI in HDU 1 (or by name).

A tile with a weight plane (``EXTNAME WGT``, inverse variance, as DES coadd files have) also gives each stamp's
noise level (``CutoutBatch.noise_sigma``, ``cutouts.weights``).

The directory is indexed once (headers only); the index is small and pickles with the source. The tile choice
(``plan``, shared with ``SIASource`` through ``cutouts.choice``) is made once; a fetch opens each tile-band
once (memory-mapped, or tile-wise decompression for .fz; ``open_science``, shared with the SIA source and the
local server) and cuts every stamp it serves.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from survey_deblend.cutouts import status as st
from survey_deblend.cutouts.base import CutoutBatch, CutoutSource
from survey_deblend.cutouts.choice import (
    NO_TILE,
    TileChoice,
    TileRef,
    best_tiles,
    reference_zeropoints,
    zeropoint_factor,
)
from survey_deblend.cutouts.geometry import cut_stamps, edge_distance_pix, pixel_scale_arcsec, tangent_offsets_deg
from survey_deblend.cutouts.weights import WEIGHT_EXTNAME, stamp_sigma
from survey_deblend.errors import InputError
from survey_deblend.surveys import DES_BANDS, PhotometricFrame

# DES0530-5000_r0001p01_g.fits(.fz): tile name, optional processing tag, band.
_TILE_FILE = re.compile(r"^(?P<tile>.+?)(?:_r\d+p\d+)?_(?P<band>[A-Za-z]+)\.fits(?:\.fz|\.gz)?$")
TILE_SUFFIXES = (".fits", ".fits.fz", ".fits.gz")
__all__ = ["NO_TILE", "TileInfo", "TileSource", "cut_from_file", "index_tiles", "open_science", "read_tile_info"]
_MAX_WCS_COPIES = 64  # per-thread WCS copies kept per tile before the cache starts over


@dataclass
class TileInfo:
    """One tile-band file: where it is, what it is, and its celestial WCS as a header string (only the WCS
    keywords, about 2 kB, so that an index of thousands of tiles pickles and scatters cheaply)."""

    path: Path
    tile: str
    band: str
    hdu: int
    shape: tuple[int, int]  # (ny, nx)
    header: str
    zeropoint: float | None = None  # MAGZERO of the image (or of the primary header); None when absent
    weight_hdu: int | None = None  # the inverse-variance weight plane (EXTNAME WGT) of the same file, if any
    _wcs: dict[int, WCS] = field(default_factory=dict, repr=False, compare=False)

    @property
    def wcs(self) -> WCS:
        """The celestial WCS, built on first use in each thread (astropy's WCS is not thread-safe; not pickled)."""
        thread = threading.get_ident()
        wcs = self._wcs.get(thread)
        if wcs is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs = WCS(fits.Header.fromstring(self.header)).celestial
            if len(self._wcs) >= _MAX_WCS_COPIES:
                self._wcs.clear()
            self._wcs[thread] = wcs
        return wcs

    @cached_property
    def centre(self) -> tuple[float, float]:
        """(ra, dec) in degrees of the image centre."""
        ra, dec = self.wcs.all_pix2world((self.shape[1] - 1) / 2, (self.shape[0] - 1) / 2, 0)
        return float(ra), float(dec)

    @cached_property
    def half_diagonal_deg(self) -> float:
        """Half the image diagonal in degrees: no covered position is farther than this from the centre."""
        return 0.5 * float(np.hypot(*self.shape)) * pixel_scale_arcsec(self.wcs) / 3600.0

    @cached_property
    def fov_deg(self) -> float:
        """The longer side of the image in degrees."""
        return max(self.shape) * pixel_scale_arcsec(self.wcs) / 3600.0

    @property
    def ref(self) -> TileRef:
        """The small record of this tile that travels in a ``TileChoice``."""
        return TileRef(self.path.name, self.tile, self.band, self.zeropoint, self.hdu)

    def depth(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Distance in pixels from each position to the nearest image edge; <= 0 outside (``choice.Footprint``)."""
        ra0, dec0 = self.centre
        xi, eta = tangent_offsets_deg(ra, dec, ra0, dec0)
        depth = np.full(len(ra), -np.inf)
        near = np.flatnonzero((np.hypot(xi, eta) < 1.05 * self.half_diagonal_deg) & np.isfinite(xi))
        if len(near):
            depth[near] = edge_distance_pix(self.wcs, self.shape, ra[near], dec[near])
        return depth

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_wcs"] = {}
        return state


def _science_hdu(hdul: fits.HDUList) -> int:
    """Index of the science image: EXTNAME SCI, else HDU 1, else the primary, whichever holds a 2-D image."""
    for i, hdu in enumerate(hdul):
        if hdu.header.get("EXTNAME", "").strip().upper() == "SCI" and hdu.header.get("NAXIS", 0) == 2:
            return i
    for i in (1, 0):
        if i < len(hdul) and isinstance(hdul[i], (fits.ImageHDU, fits.PrimaryHDU, fits.CompImageHDU)):
            if hdul[i].header.get("NAXIS", 0) == 2:
                return i
    raise InputError("no 2-D image in HDU 0 or 1")


def _weight_hdu(hdul: fits.HDUList) -> int | None:
    """Index of the weight plane (``EXTNAME WGT``, 2-D), or None."""
    for i, hdu in enumerate(hdul):
        if hdu.header.get("EXTNAME", "").strip().upper() == WEIGHT_EXTNAME and hdu.header.get("NAXIS", 0) == 2:
            return i
    return None


def read_tile_info(path: str | Path) -> TileInfo:
    """Index one tile file from its header; a file that is not FITS or lacks a celestial WCS raises InputError."""
    path = Path(path)
    try:
        with fits.open(path, memmap=True) as hdul:
            index = _science_hdu(hdul)
            weight_hdu = _weight_hdu(hdul)
            header = hdul[index].header.copy()
            zeropoint = header.get("MAGZERO", hdul[0].header.get("MAGZERO"))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a readable FITS file ({exc})") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header)
        except Exception as exc:  # astropy raises several types for broken WCS keywords
            reason = " ".join(str(exc).split())  # WCSLIB explains over several lines: one line for the user
            raise InputError(f"{path}: invalid WCS in HDU {index} ({reason})") from None
    if not wcs.has_celestial:
        raise InputError(f"{path}: no celestial WCS (CTYPE1/CTYPE2) in HDU {index}")
    match = _TILE_FILE.match(path.name)
    tile = str(header.get("TILENAME", "")).strip() or (match.group("tile") if match else "")
    band = str(header.get("BAND", "")).strip() or (match.group("band") if match else "")
    if match:  # the file name is the authority the DES release uses
        tile, band = match.group("tile"), match.group("band")
    if not tile or not band:
        raise InputError(f"{path}: cannot tell tile and band (name like TILE_rNNNNpNN_BAND.fits, or TILENAME/BAND)")
    shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    try:
        zeropoint = None if zeropoint is None else float(zeropoint)
    except (TypeError, ValueError):
        raise InputError(f"{path}: MAGZERO '{zeropoint}' is not a number") from None
    compact = wcs.celestial.to_header(relax=True).tostring()
    return TileInfo(path=path, tile=tile, band=band, hdu=index, shape=shape, header=compact, zeropoint=zeropoint,
                    weight_hdu=weight_hdu)


def index_tiles(tiles_dir: str | Path, bands: tuple[str, ...] | None = None) -> list[TileInfo]:
    """Every tile-band file under ``tiles_dir`` (sorted by name), optionally only the given bands."""
    tiles_dir = Path(tiles_dir)
    if not tiles_dir.is_dir():
        raise InputError(f"{tiles_dir}: tile directory not found")
    paths = sorted(p for p in tiles_dir.iterdir() if p.is_file() and p.name.endswith(TILE_SUFFIXES))
    infos = [read_tile_info(p) for p in paths]
    if bands is not None:
        infos = [t for t in infos if t.band in bands]
    return infos


def open_science(path: str | Path, hdu: int | None = None) -> tuple[fits.HDUList, object, WCS]:
    """Open a tile file: the HDU list (close it), a sliceable view of the science image and its celestial WCS.

    ``hdu`` None finds the image (``EXTNAME SCI``, else HDU 1, else the primary). Tile-compressed images are
    read through ``CompImageHDU.section`` (only the tiles a stamp touches are decompressed). Both sources and
    the local server open tiles here.
    """
    try:
        hdul = fits.open(path, memmap=True)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: cannot read the image ({exc})") from None
    try:
        index = _science_hdu(hdul) if hdu is None else hdu
        image = hdul[index]
        data = image.section if isinstance(image, fits.CompImageHDU) else image.data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(image.header).celestial
    except (OSError, ValueError, TypeError, IndexError, InputError) as exc:
        hdul.close()
        raise InputError(f"{path}: cannot read the image ({exc})") from None
    return hdul, data, wcs


def cut_from_file(
    path: str | Path, hdu: int | None, ra: np.ndarray, dec: np.ndarray, size_pix: int, scale_arcsec: float,
    wcs: WCS | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Open one tile image once and cut every stamp it serves (``geometry.cut_stamps``); InputError if unreadable.

    ``wcs`` (the indexed one) saves parsing the header again.
    """
    hdul, data, file_wcs = open_science(path, hdu)
    try:
        return cut_stamps(data, wcs or file_wcs, ra, dec, size_pix, scale_arcsec)
    except (OSError, ValueError, TypeError) as exc:  # pixels cut off or changed since indexing
        raise InputError(f"{path}: cannot read the image ({exc})") from None
    finally:
        hdul.close()


class TileSource(CutoutSource):
    """Stamps cut from local coadd tiles, rows grouped so that each tile-band is opened once per fetch.

    Zeropoints come from each tile's ``MAGZERO`` (a tile without one is an InputError at indexing). When the
    tiles of one band disagree, the frame takes the band's most common zeropoint and stamps of the other tiles
    are rescaled to it (``choice.reference_zeropoints``), so a batch holds one zeropoint per band.

    With ``fetch_weights`` and tiles that carry a weight plane, batches hold ``noise_sigma`` from it (NaN for a
    tile without one, or whose weights cannot be read); otherwise ``noise_sigma`` is None.
    """

    def __init__(
        self, tiles_dir: str | Path, bands: tuple[str, ...] = DES_BANDS, pixel_scale_arcsec: float | None = None,
        fetch_weights: bool = True,
    ) -> None:
        self.tiles_dir = Path(tiles_dir)
        self.bands = tuple(bands)
        self.tiles = index_tiles(self.tiles_dir, self.bands)
        if not self.tiles:
            raise InputError(f"{self.tiles_dir}: no tile files for bands {', '.join(self.bands)}")
        for tile in self.tiles:
            if tile.zeropoint is None:
                raise InputError(f"{tile.path}: no MAGZERO in its header (the zeropoint of its pixels)")
        if pixel_scale_arcsec is None:
            # rounded to a micro-arcsec so that float noise of the WCS does not leak into manifests
            pixel_scale_arcsec = round(float(np.median([pixel_scale_arcsec_of(t) for t in self.tiles])), 6)
        self.pixel_scale_arcsec = float(pixel_scale_arcsec)
        self.zeropoints = reference_zeropoints(self.bands, [t.ref for t in self.tiles])
        self.fetch_weights = bool(fetch_weights) and any(t.weight_hdu is not None for t in self.tiles)

    def __repr__(self) -> str:
        return f"TileSource({str(self.tiles_dir)!r}, bands={self.bands}, {len(self.tiles)} tile files)"

    @cached_property
    def _by_ref(self) -> dict[str, TileInfo]:
        return {t.path.name: t for t in self.tiles}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_by_ref", None)
        return state

    @property
    def tile_names(self) -> list[str]:
        """Distinct tile names, sorted."""
        return sorted({t.tile for t in self.tiles})

    @property
    def frame(self) -> PhotometricFrame:
        """The photometric frame of every batch of this source."""
        return PhotometricFrame("DES", self.bands, self.pixel_scale_arcsec, self.zeropoints)

    def plan(self, ra: np.ndarray, dec: np.ndarray, size_pix: int | None = None) -> TileChoice:
        """The tile of each band for every position (deepest inside), and each row's locality key."""
        ra = np.atleast_1d(np.asarray(ra, dtype=float))
        dec = np.atleast_1d(np.asarray(dec, dtype=float))
        index = np.full((len(ra), len(self.bands)), -1, dtype=np.int32)
        best, _ = best_tiles(self.tiles, ra, dec)
        keys = np.array([t.tile for t in self.tiles] + [NO_TILE], dtype=object)[best].astype(str)
        for b, band in enumerate(self.bands):
            members = [i for i, t in enumerate(self.tiles) if t.band == band]
            chosen, _ = best_tiles([self.tiles[i] for i in members], ra, dec)
            index[chosen >= 0, b] = np.asarray(members, dtype=np.int32)[chosen[chosen >= 0]]
        used = np.unique(index[index >= 0])
        remap = np.full(len(self.tiles) + 1, -1, dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        return TileChoice(self.bands, tuple(self.tiles[i].ref for i in used), remap[index], keys, self.zeropoints)

    def locality_keys(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Name of the tile where each position is farthest from the edge; ``no_coverage`` where none covers it."""
        best, _ = best_tiles(self.tiles, np.atleast_1d(ra), np.atleast_1d(dec))
        names = np.array([t.tile for t in self.tiles] + [NO_TILE], dtype=object)
        return names[best].astype(str)

    def fetch(
        self, ra: np.ndarray, dec: np.ndarray, size_pix: int, choice: TileChoice | None = None,
    ) -> CutoutBatch:
        """Stamps of every band from the tiles of ``choice`` (the planner's; None: chosen here), each opened once."""
        ra = np.atleast_1d(np.asarray(ra, dtype=float))
        dec = np.atleast_1d(np.asarray(dec, dtype=float))
        choice = choice if choice is not None else self.plan(ra, dec)
        if len(choice) != len(ra):
            raise ValueError(f"tile choice of {len(choice)} rows for {len(ra)} positions")
        frame = PhotometricFrame("DES", self.bands, self.pixel_scale_arcsec, choice.zeropoints)
        batch = CutoutBatch.empty(len(ra), frame, size_pix)
        if self.fetch_weights:
            batch.noise_sigma = np.full((len(ra), len(self.bands)), np.nan)
        band_status = np.full((len(ra), len(self.bands)), st.NO_COVERAGE, dtype=object)
        for b in range(len(self.bands)):
            for ref, rows in choice.groups(b):
                tile = self._by_ref[ref.ref]
                try:
                    stamps, status = cut_from_file(tile.path, tile.hdu, ra[rows], dec[rows], size_pix,
                                                   self.pixel_scale_arcsec, wcs=tile.wcs)
                except InputError as exc:
                    # the header was fine at indexing but the pixels are not (truncated, changed since)
                    warnings.warn(f"{exc}; rows marked {st.ERROR_BAD_FITS}", RuntimeWarning, stacklevel=2)
                    band_status[rows, b] = st.ERROR_BAD_FITS
                    continue
                factor = zeropoint_factor(tile.zeropoint, frame.zeropoints[b])
                batch.images[rows, b] = stamps * factor
                band_status[rows, b] = status
                if batch.noise_sigma is not None and tile.weight_hdu is not None:
                    batch.noise_sigma[rows, b] = self._noise_sigma(tile, ra[rows], dec[rows], size_pix, factor)
        batch.settle(band_status)
        return batch

    def _noise_sigma(self, tile: TileInfo, ra: np.ndarray, dec: np.ndarray, size_pix: int, factor: float) -> np.ndarray:
        """Noise per pixel of each stamp from the tile's weight plane, in the batch's units; NaN if unreadable
        (a bad weight plane is not a fault of the galaxy: its science pixels stand)."""
        try:
            weights, _ = cut_from_file(tile.path, tile.weight_hdu, ra, dec, size_pix, self.pixel_scale_arcsec,
                                       wcs=tile.wcs)
        except InputError as exc:
            warnings.warn(f"{exc} (weight plane); noise_sigma unknown there", RuntimeWarning, stacklevel=3)
            return np.full(len(ra), np.nan)
        return stamp_sigma(weights, factor)


def pixel_scale_arcsec_of(tile: TileInfo) -> float:
    """Pixel scale of one tile in arcsec."""
    return pixel_scale_arcsec(tile.wcs)

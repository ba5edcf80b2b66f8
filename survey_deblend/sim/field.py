"""A DES-like survey field: coadd tiles as FITS (grizY, TAN WCS, north up, west right, zeropoint 30) plus its
catalogs in the exact DES SVA1 schema and a separate truth table.

Tiles are stacked north-south with ``overlap_pix`` shared rows (default a tenth of a tile), like DES tiles
overlap; galaxies are drawn uniformly over the footprint at ``density_per_arcmin2`` (so blends occur) from
the population of ``sim.population`` (per-galaxy shear), rendered with the same Fourier renderer as the LSST
stamps at the DES pixel scale with DES PSFs, and the DES full-depth sky noise (Gaussian, sky only) is added
per tile and band; each tile file carries the matching inverse-variance weight plane (``WGT``, as DES coadd
files do). A galaxy in an overlap is drawn into both tiles. With ``shear = (g1, g2)`` one constant shear acts
on the whole field instead of a shear per galaxy: every galaxy's shape, and the positions about the field
centre (GalSim's shear matrix, +x West), so two fields made with the same seed and opposite shears differ
only in the sign of the shear (a paired shear test through the real ``run``). Tile names follow the DES pattern
from the tile centre (``DES0530-5000_r0001p01_g.fits``); when two small tiles would round to one name, the
later one's declination minutes are bumped so names stay unique.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from survey_deblend.config.sim import FieldSimConfig
from survey_deblend.sim.field_catalogs import catalog_objects, write_field_catalogs
from survey_deblend.sim.population import Population, draw_population
from survey_deblend.sim.render import GalaxyShapes, StampRenderer
from survey_deblend.sim.scenes import sample_rng
from survey_deblend.surveys import DES_BANDS, DES_COADD_ZEROPOINT, band_facts, pixel_scale

STAMP_SIZES = (21, 33, 49, 65, 97, 129, 161)
CHUNK_BYTES = 16_000_000  # Fourier arrays per rendering batch
TILE_SUFFIX = "r0001p01"


@dataclass(frozen=True)
class FieldPaths:
    """Where ``make_des_field`` wrote the field."""

    tiles_dir: Path
    im3shape: Path
    gold: Path
    wlinfo: Path
    truth: Path


@dataclass(frozen=True)
class Tile:
    """One coadd tile: a square TAN projection centred on (ra, dec), north up, west right."""

    name: str
    ra_deg: float
    dec_deg: float
    size_pix: int
    pixel_scale_arcsec: float

    def wcs(self) -> WCS:
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [self.ra_deg, self.dec_deg]
        w.wcs.crpix = [(self.size_pix + 1) / 2, (self.size_pix + 1) / 2]
        s = self.pixel_scale_arcsec / 3600.0
        w.wcs.cd = [[-s, 0.0], [0.0, s]]  # CD1_1 < 0: RA decreases with x, i.e. +x is west
        w.wcs.radesys, w.wcs.equinox = "ICRS", 2000.0
        return w

    def header(self) -> fits.Header:
        """The WCS as DES coadds write it: TAN with a CD matrix (CD1_1 < 0), RA/DEC in degrees."""
        s = self.pixel_scale_arcsec / 3600.0
        header = fits.Header()
        header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
        header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
        header["CRVAL1"], header["CRVAL2"] = self.ra_deg, self.dec_deg
        header["CRPIX1"] = header["CRPIX2"] = (self.size_pix + 1) / 2
        header["CD1_1"], header["CD1_2"], header["CD2_1"], header["CD2_2"] = -s, 0.0, 0.0, s
        header["RADESYS"], header["EQUINOX"] = "ICRS", 2000.0
        return header

    def path(self, tiles_dir: Path, band: str) -> Path:
        return tiles_dir / f"{self.name}_{TILE_SUFFIX}_{band}.fits"


def tile_name(ra_deg: float, dec_deg: float) -> str:
    """DES tile name ``DEShhmm+ddmm`` for a centre (RA in hours and minutes, Dec in degrees and arcminutes)."""
    minutes = int(round((ra_deg % 360.0) / 15.0 * 60.0)) % (24 * 60)
    dec_arcmin = int(round(abs(dec_deg) * 60.0))
    sign = "-" if dec_deg < 0 else "+"
    return f"DES{minutes // 60:02d}{minutes % 60:02d}{sign}{dec_arcmin // 60:02d}{dec_arcmin % 60:02d}"


def field_wcs(cfg: FieldSimConfig) -> WCS:
    """The tangent plane of the whole field (centre of the footprint), used to lay out tiles and galaxies."""
    return Tile("field", cfg.ra_center_deg, cfg.dec_center_deg, cfg.tile_size_pix, pixel_scale("DES")).wcs()


def footprint_pix(cfg: FieldSimConfig) -> tuple[float, float]:
    """Half width and half height of the footprint in field pixels (tiles stacked north-south)."""
    step = cfg.tile_size_pix - cfg.overlap
    height = cfg.tile_size_pix + (cfg.n_tiles - 1) * step
    return cfg.tile_size_pix / 2, height / 2


def tile_layout(cfg: FieldSimConfig) -> list[Tile]:
    """The tiles of the field, south to north, each sharing ``overlap_pix`` rows with the next."""
    scale, w = pixel_scale("DES"), field_wcs(cfg)
    centre = (cfg.tile_size_pix + 1) / 2 - 1  # 0-based pixel of the field centre
    step = cfg.tile_size_pix - cfg.overlap
    tiles, names = [], set()
    for i in range(cfg.n_tiles):
        ra, dec = w.all_pix2world([[centre, centre + (i - (cfg.n_tiles - 1) / 2) * step]], 0)[0]
        name = tile_name(ra, dec)
        bump = 0
        while name in names:
            bump += 1
            name = tile_name(ra, dec + np.sign(dec or 1.0) * bump / 60.0)
        names.add(name)
        tiles.append(Tile(name, float(ra), float(dec), cfg.tile_size_pix, scale))
    return tiles


def stamp_size_for(pop: Population, psf_fwhm_arcsec: float, scale: float) -> np.ndarray:
    """Stamp size per galaxy (a few half-light radii plus the PSF), rounded up to one of STAMP_SIZES."""
    extent = 2 * (5.0 * np.maximum(pop.disk_hlr, pop.bulge_hlr) + 2.0 * psf_fwhm_arcsec) / scale
    sizes = np.array(STAMP_SIZES)
    return sizes[np.minimum(np.searchsorted(sizes, extent), len(sizes) - 1)]


def draw_field_galaxies(cfg: FieldSimConfig) -> tuple[Population, np.ndarray, np.ndarray]:
    """Galaxies of the field: Poisson count from the density and footprint area, uniform positions (RA, Dec)."""
    rng = sample_rng(cfg.seed, 0)
    half_w, half_h = footprint_pix(cfg)
    area_arcmin2 = (2 * half_w) * (2 * half_h) * (pixel_scale("DES") / 60.0) ** 2
    n = int(rng.poisson(cfg.density_per_arcmin2 * area_arcmin2))
    pop = draw_population(rng, n, cfg.mag_min, cfg.mag_max)
    centre = (cfg.tile_size_pix + 1) / 2 - 1
    px = centre + rng.uniform(-half_w, half_w, n)
    py = centre + rng.uniform(-half_h, half_h, n)
    if cfg.shear is not None:
        g1, g2 = (float(g) for g in cfg.shear)
        norm = 1.0 / np.sqrt(1.0 - g1**2 - g2**2)
        dx, dy = px - centre, py - centre
        px, py = centre + norm * ((1 + g1) * dx + g2 * dy), centre + norm * (g2 * dx + (1 - g1) * dy)
        pop = pop.with_(g1_shear=np.full(n, g1), g2_shear=np.full(n, g2))
    ra, dec = field_wcs(cfg).all_pix2world(px, py, 0) if n else (np.empty(0), np.empty(0))
    return pop, np.asarray(ra), np.asarray(dec)


def render_tile(
    tile: Tile, pop: Population, ra: np.ndarray, dec: np.ndarray, cfg: FieldSimConfig, snr_out: np.ndarray
) -> np.ndarray:
    """Noiseless ``(5, size, size)`` image of the galaxies on ``tile``; fills ``snr_out`` (G, 5) where NaN
    with each galaxy's optimal SNR per band against the sky (from its own stamp, before blending)."""
    size, scale = tile.size_pix, tile.pixel_scale_arcsec
    image = np.zeros((len(DES_BANDS), size, size), dtype=np.float32)
    px, py = tile.wcs().all_world2pix(ra, dec, 0)
    ix, iy = np.round(px).astype(int), np.round(py).astype(int)
    stamp = stamp_size_for(pop, max(band_facts("DES", b).psf_fwhm_arcsec for b in DES_BANDS), scale)
    on_tile = (ix + stamp // 2 >= 0) & (ix - stamp // 2 < size) & (iy + stamp // 2 >= 0) & (iy - stamp // 2 < size)
    flux = pop.flux("DES", DES_BANDS)
    g1, g2 = pop.label
    for s in np.unique(stamp[on_tile]):
        renderer = StampRenderer("DES", DES_BANDS, int(s), cfg.psf_model)
        sigma = renderer.sky_sigma
        members = np.nonzero(on_tile & (stamp == s))[0]
        chunk = max(1, CHUNK_BYTES // (len(DES_BANDS) * renderer.transfer[0].size * 8))
        for start in range(0, len(members), chunk):
            sel = members[start : start + chunk]
            shapes = GalaxyShapes(
                pop.disk_hlr[sel], pop.bulge_hlr[sel], pop.bulge_frac[sel], g1[sel], g2[sel],
                (px[sel] - ix[sel]) * scale, (py[sel] - iy[sel]) * scale,
            )  # fmt: skip
            stamps = renderer.images_each(renderer.galaxy_transforms(shapes), flux[sel])
            for j, g in enumerate(sel):
                if np.isnan(snr_out[g, 0]):
                    snr_out[g] = np.sqrt(np.sum(stamps[j] ** 2, axis=(1, 2))) / sigma
                _paste(image, stamps[j], int(ix[g]), int(iy[g]))
    return image


def _paste(image: np.ndarray, stamp: np.ndarray, ix: int, iy: int) -> None:
    """Add ``stamp`` (B, S, S) centred on pixel (ix, iy) of ``image`` (B, H, W), clipped at the edges."""
    half, (_, h, w) = stamp.shape[-1] // 2, image.shape
    x0, y0 = ix - half, iy - half
    xs, ys = max(0, -x0), max(0, -y0)
    xe, ye = min(stamp.shape[-1], w - x0), min(stamp.shape[-2], h - y0)
    if xe > xs and ye > ys:
        image[:, y0 + ys : y0 + ye, x0 + xs : x0 + xe] += stamp[:, ys:ye, xs:xe]


def write_tile(tile: Tile, tiles_dir: Path, image: np.ndarray, sky_sigma: np.ndarray) -> list[Path]:
    """One FITS file per band as a DES coadd file: empty primary HDU, SCI in HDU 1 with the TAN WCS and
    MAGZERO = 30, WGT in HDU 2 with the inverse variance of the noise that was added (1 / ``sky_sigma``^2 of
    the band, every pixel: the simulated noise is the sky's, uniform over the tile)."""
    paths = []
    for b, band in enumerate(DES_BANDS):
        facts = band_facts("DES", band)
        header = tile.header()
        header["MAGZERO"] = (DES_COADD_ZEROPOINT, "coadd magnitude zeropoint")
        header["BAND"] = band
        header["FILTER"] = band
        header["TILENAME"] = tile.name
        header["SKYSIGMA"] = (facts.sky_sigma, "sky noise per pixel, coadd units (simulated)")
        header["PSF_FWHM"] = (facts.psf_fwhm_arcsec, "PSF FWHM used for the simulation, arcsec")
        header["ORIGIN"] = "survey-deblend simulated DES-like coadd"
        weight = np.full(image.shape[1:], 1.0 / float(sky_sigma[b]) ** 2, dtype=np.float32)
        hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data=image[b], header=header, name="SCI"),
                             fits.ImageHDU(data=weight, header=tile.header(), name="WGT")])
        path = tile.path(tiles_dir, band)
        hdus.writeto(path, overwrite=True)
        paths.append(path)
    return paths


def make_des_field(
    out_dir: str | Path,
    n_tiles: int | None = None,
    tile_size_pix: int | None = None,
    seed: int | None = None,
    config: FieldSimConfig | None = None,
) -> FieldPaths:
    """Simulate a DES-like field into ``out_dir``: ``tiles/``, ``im3shape.fits``, ``gold.fits``,
    ``wlinfo.fits`` (DES SVA1 schema) and ``truth.parquet``. Keyword arguments override ``config``."""
    cfg = config or FieldSimConfig()
    overrides = {"n_tiles": n_tiles, "tile_size_pix": tile_size_pix, "seed": seed}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    out = Path(out_dir)
    tiles_dir = out / "tiles"
    tiles_dir.mkdir(parents=True, exist_ok=True)
    for stale in tiles_dir.glob(f"DES*_{TILE_SUFFIX}_*.fits"):  # a previous field's tiles must not linger
        stale.unlink()
    tiles = tile_layout(cfg)
    pop, ra, dec = draw_field_galaxies(cfg)
    snr = np.full((len(pop), len(DES_BANDS)), np.nan)
    for t, tile in enumerate(tiles):
        image = render_tile(tile, pop, ra, dec, cfg, snr)
        rng = sample_rng(cfg.seed, 1, t)
        sigma = np.array([band_facts("DES", b).sky_sigma for b in DES_BANDS], dtype=np.float32)
        image += rng.standard_normal(image.shape, dtype=np.float32) * sigma[:, None, None]
        write_tile(tile, tiles_dir, image, sigma)
    truth = truth_table(pop, ra, dec, np.nan_to_num(snr), tiles)
    truth.to_parquet(out / "truth.parquet", index=False)
    objects = catalog_objects(truth, cfg)
    paths = write_field_catalogs(out, objects, cfg)
    return FieldPaths(tiles_dir=tiles_dir, truth=out / "truth.parquet", **paths)


# The truth table's columns that evaluation reads, by meaning: one spelling each (``truth_table`` writes them).
TRUTH_COLUMNS: dict[str, str] = {
    "e1_true": "e1",
    "e2_true": "e2",
    "z_true": "z",
    "mag_true": "mag_i",  # DES i
    "n_neighbours": "n_neighbours_3arcsec",
    "g1_true": "g1_shear",  # the shear that acted on the galaxy (m and c of the calibrated shear)
    "g2_true": "g2_shear",
}
TRUTH_ID = "coadd_objects_id"


def truth_table(pop: Population, ra: np.ndarray, dec: np.ndarray, snr: np.ndarray, tiles: list[Tile]) -> pd.DataFrame:
    """One row per simulated galaxy: identity, position, true shape and shear, redshift, photometry, SNR."""
    e1, e2 = pop.label
    n = len(pop)
    table = pd.DataFrame(
        {
            TRUTH_ID: 3_000_000_000 + np.arange(n, dtype=np.int64) * 7,
            "ra": ra,
            "dec": dec,
            "e1": e1,
            "e2": e2,
            "e1_intrinsic": pop.e1_intrinsic,
            "e2_intrinsic": pop.e2_intrinsic,
            "g1_shear": pop.g1_shear,
            "g2_shear": pop.g2_shear,
            "z": pop.z,
            "hlr_arcsec": pop.hlr,
            "bulge_frac": pop.bulge_frac,
            "mag_i_lsst": pop.mag_i,
            **{f"mag_{b}": pop.mag_des[:, k] for k, b in enumerate(DES_BANDS)},
            **{f"snr_{b}": snr[:, k] for k, b in enumerate(DES_BANDS)},
            "tile": _nearest_tile(ra, dec, tiles),
            "n_neighbours_3arcsec": _neighbour_counts(ra, dec, 3.0),
        }
    )
    return table


def _nearest_tile(ra: np.ndarray, dec: np.ndarray, tiles: list[Tile]) -> np.ndarray:
    """Name of the tile whose centre is nearest each galaxy (the tile a DES pipeline would assign)."""
    cos = np.cos(np.radians(np.mean(dec))) if len(dec) else 1.0
    d2 = np.stack([((ra - t.ra_deg) * cos) ** 2 + (dec - t.dec_deg) ** 2 for t in tiles])
    return np.array([t.name for t in tiles])[np.argmin(d2, axis=0)] if len(ra) else np.array([], dtype=str)


def _neighbour_counts(ra: np.ndarray, dec: np.ndarray, radius_arcsec: float) -> np.ndarray:
    """Number of other galaxies within ``radius_arcsec`` of each galaxy (flat-sky, chunked O(N^2))."""
    cos = np.cos(np.radians(np.mean(dec))) if len(dec) else 1.0
    x, y = ra * cos * 3600.0, dec * 3600.0
    counts = np.zeros(len(x), dtype=np.int32)
    for start in range(0, len(x), 512):
        d2 = (x[start : start + 512, None] - x[None]) ** 2 + (y[start : start + 512, None] - y[None]) ** 2
        counts[start : start + 512] = np.sum(d2 < radius_arcsec**2, axis=1) - 1
    return counts

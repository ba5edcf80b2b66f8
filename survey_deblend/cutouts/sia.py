"""Stamps from a Simple Image Access service (the NOIRLab Astro Data Lab, or the local server) through pyvo.

``plan`` runs one SIA query per sky cell (pyvo builds it and parses the VOTable, ``sia_answer`` reads the Data
Lab's schema) and chooses, per row and band, the Stack image where the row lies deepest (``choice.best_tiles``,
shared with ``TileSource``); the choice travels with the rows, so a worker never queries or chooses again.
``fetch`` then gets each stamp from the image's cutout URL (the ``access_url`` with this row's ``POS`` and
``SIZE``, keeping its ``col``, ``siaRef`` and ``extn``), or cuts it locally from the whole image (downloaded
once, cached) when the service has no cutout endpoint or ``use_cutout_service`` is off. Requests run on a small
thread pool, only to the configured host, with retries and an on-disk cache; every failure ends as a band
status (``cutouts.status``), never an exception. With ``fetch_weights`` the image's weight map (its ``wtmap``
row: same file, own ``extn``) is fetched the same way for every stamp whose pixels came (one more request per
stamp and band, or one more whole image) and gives ``CutoutBatch.noise_sigma``; a failed weight leaves NaN
there, never a lost band.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import numpy as np
import requests
from astropy.io import fits
from astropy.wcs import WCS

from survey_deblend.config.images import ImagesConfig
from survey_deblend.cutouts import status as st
from survey_deblend.cutouts.base import CutoutBatch, CutoutSource
from survey_deblend.cutouts.choice import NO_TILE, TileChoice, best_tiles, reference_zeropoints, zeropoint_factor
from survey_deblend.cutouts.geometry import cut_stamps, tangent_offsets_deg
from survey_deblend.cutouts.http import GuardedHTTP, write_atomic
from survey_deblend.cutouts.sia_answer import TileRecord, query_params, tile_records
from survey_deblend.cutouts.tiles import cut_from_file
from survey_deblend.cutouts.weights import stamp_sigma
from survey_deblend.errors import InputError
from survey_deblend.surveys import DES_BANDS, PhotometricFrame, pixel_scale

CELL_DEG = 0.5  # side of the sky cells of the SIA queries (one query per cell)
MARGIN_PIX = 3  # extra pixels around each cutout so that rounding and resampling never run short
SIZE_SLACK_PIX = 2  # a cutout may differ from the size asked by this much before it counts as the wrong size


def des_pixel_scale_arcsec() -> float:
    """The DES coadd pixel scale, from surveycodex (``surveys.pixel_scale``)."""
    return pixel_scale("DES")


@dataclass
class TileListing:
    """What one SIA query listed: the images, or the failure status (and detail) when it failed."""

    status: str = st.OK
    records: list[TileRecord] = field(default_factory=list)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == st.OK


def warn(message: str) -> None:
    """A RuntimeWarning about an answer no status foresaw (called from the fetch threads)."""
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def read_fits_image(body: bytes) -> tuple[np.ndarray, WCS]:
    """The first 2-D image of a FITS body and its celestial WCS; ValueError when it is not that."""
    if len(body) == 0 or len(body) % 2880 != 0:
        raise ValueError(f"not a whole FITS file ({len(body)} bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(io.BytesIO(body)) as hdul:
            for hdu in hdul:
                if hdu.header.get("NAXIS", 0) == 2 and hdu.data is not None:
                    wcs = WCS(hdu.header)
                    if not wcs.has_celestial:
                        raise ValueError("image has no celestial WCS")
                    return np.asarray(hdu.data, dtype=np.float32), wcs if wcs.naxis == 2 else wcs.celestial
    raise ValueError("no 2-D image")


class SIASource(CutoutSource):
    """Cutouts over SIA (pyvo) with bounded concurrency, retries, a cache, and one allowed host."""

    def __init__(
        self, base_url: str, bands: tuple[str, ...] = DES_BANDS, pixel_scale_arcsec: float | None = None,
        cutout_collection: str = "des_sva1", concurrency: int = 4, timeout_s: float = 30.0, retries: int = 4,
        backoff_s: float = 1.0, cache_dir: str | Path | None = None, use_cutout_service: bool = True,
        cell_deg: float = CELL_DEG, whole_image_threshold: int = ImagesConfig.whole_image_threshold,
        fetch_weights: bool = True,
    ) -> None:
        self.base_url = str(base_url)
        self.bands = tuple(bands)
        self.pixel_scale_arcsec = float(pixel_scale_arcsec or des_pixel_scale_arcsec())
        self.cutout_collection = cutout_collection
        self.concurrency = int(concurrency)
        self.use_cutout_service = use_cutout_service
        self.cell_deg = float(cell_deg)
        self.whole_image_threshold = int(whole_image_threshold)
        self.fetch_weights = bool(fetch_weights)
        self.http = GuardedHTTP(base_url, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                                cache_dir=cache_dir)
        parts = urlsplit(base_url)
        self.cutout_url = f"{parts.scheme}://{parts.netloc}/svc/cutout"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._scratch: str | None = None

    @classmethod
    def from_config(cls, url: str, cfg: ImagesConfig, cache_dir: str | Path | None = None) -> SIASource:
        """The source for ``url`` with the manners of ``cfg``."""
        return cls(
            url, bands=cfg.bands, pixel_scale_arcsec=cfg.pixel_scale_arcsec, cutout_collection=cfg.cutout_collection,
            concurrency=cfg.concurrency, timeout_s=cfg.timeout_s, retries=cfg.retries, backoff_s=cfg.backoff_s,
            cache_dir=cache_dir if cache_dir is not None else cfg.cache_dir,
            use_cutout_service=cfg.use_cutout_service, whole_image_threshold=cfg.whole_image_threshold,
            fetch_weights=cfg.fetch_weights,
        )

    def __repr__(self) -> str:
        return f"SIASource({self.base_url!r}, bands={self.bands})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_locks"], state["_locks_guard"], state["_scratch"] = {}, None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._locks_guard = threading.Lock()

    def locality_keys(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """A sky cell of ``cell_deg`` on a side: ``cell_<i>_<j>`` from floor(ra / cell), floor(dec / cell)."""
        i = np.floor(np.mod(np.asarray(ra, dtype=float), 360.0) / self.cell_deg).astype(int)
        j = np.floor(np.asarray(dec, dtype=float) / self.cell_deg).astype(int)
        return np.array([f"cell_{a}_{b}" for a, b in zip(i, j, strict=True)], dtype=str)

    # -- the SIA query and the tile choice -----------------------------------------------------------------
    def query_url(self, ra: float, dec: float, width_deg: float, height_deg: float) -> str:
        """The SIA query URL pyvo builds for a box around (ra, dec)."""
        from pyvo.dal.sia import SIAQuery

        query = SIAQuery(self.base_url, pos=(ra, dec), size=(width_deg, height_deg))
        return requests.Request("GET", query.queryurl, params=dict(query)).prepare().url

    def list_tiles(self, ra: np.ndarray, dec: np.ndarray, size_pix: int) -> TileListing:
        """Stack images around the positions (one query for their bounding box)."""
        ra = np.mod(np.asarray(ra, dtype=float), 360.0)
        dec = np.asarray(dec, dtype=float)
        ra_mid = float(np.degrees(np.arctan2(np.sin(np.radians(ra)).mean(), np.cos(np.radians(ra)).mean())) % 360)
        dec_mid = float((dec.min() + dec.max()) / 2)
        xi, eta = tangent_offsets_deg(ra, dec, ra_mid, dec_mid)
        pad = (size_pix + 2 * MARGIN_PIX) * self.pixel_scale_arcsec / 3600.0
        width, height = 2 * float(np.abs(xi).max()) + pad, 2 * float(np.abs(eta).max()) + pad
        url = self.query_url(round(ra_mid, 6), round(dec_mid, 6), round(width, 6), round(height, 6))
        fetched = self.http.get(url, validate=_votable_problem)
        if fetched.status != st.OK:
            return TileListing(fetched.status, detail=fetched.detail)
        return TileListing(st.OK, tile_records(fetched.body, url))

    def plan(self, ra: np.ndarray, dec: np.ndarray, size_pix: int) -> TileChoice:
        """Per row and band the image to cut from (one SIA query per sky cell, on the thread pool), and how.

        An image serving at least ``whole_image_threshold`` rows (every image, without the cutout service) is
        downloaded whole once and cut locally; the others are cut remotely, one request per stamp
        (``TileChoice.modes``). Raises InputError naming the image when a chosen image has no ``magzero``.
        """
        ra = np.atleast_1d(np.asarray(ra, dtype=float))
        dec = np.atleast_1d(np.asarray(dec, dtype=float))
        n = len(ra)
        cells = self.locality_keys(ra, dec)
        groups = [np.flatnonzero(cells == c) for c in np.unique(cells)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            listings = list(pool.map(lambda rows: self.list_tiles(ra[rows], dec[rows], size_pix), groups))
        tiles: dict[tuple[str, int, str], int] = {}
        records: list[TileRecord] = []
        index = np.full((n, len(self.bands)), -1, dtype=np.int32)
        keys = np.full(n, NO_TILE, dtype=object)
        failure = np.full(n, "", dtype=object)
        for rows, listing in zip(groups, listings, strict=True):
            if not listing.ok:
                failure[rows] = listing.status
                continue
            wanted = [r for r in listing.records if r.band in self.bands]
            home, _ = best_tiles(wanted, ra[rows], dec[rows])
            keys[rows[home >= 0]] = [wanted[i].tile for i in home[home >= 0]]
            for b, band in enumerate(self.bands):
                members = [r for r in wanted if r.band == band]
                chosen, _ = best_tiles(members, ra[rows], dec[rows])
                for i in np.unique(chosen[chosen >= 0]):
                    record = members[i]
                    if record.zeropoint is None:
                        raise InputError(f"{record.ref}: no magzero in the SIA answer of {self.base_url}")
                    key = (record.ref, record.extn, record.band)
                    if key not in tiles:
                        tiles[key] = len(records)
                        records.append(record)
                    index[rows[chosen == i], b] = tiles[key]
        served = np.bincount(index[index >= 0], minlength=len(records))
        dense = served >= self.whole_image_threshold if self.whole_image_threshold > 0 else served < 0
        whole = frozenset(r.ref for r, d in zip(records, dense, strict=True) if d or not self.use_cutout_service)
        return TileChoice(self.bands, tuple(records), index, keys, reference_zeropoints(self.bands, records),
                          failure, whole)

    # -- one cutout ----------------------------------------------------------------------------------------
    def cutout_request(self, tile: TileRecord, ra: float, dec: float, n_pix: int) -> str:
        """The cutout URL of ``n_pix`` pixels around (ra, dec): the access URL's endpoint, ``col``, ``siaRef``
        and ``extn`` (the configured endpoint and collection when the access URL is not a cutout URL)."""
        size = n_pix * self.pixel_scale_arcsec / 3600.0
        params = query_params(tile.url)
        if "SIAREF" in params:
            parts = urlsplit(tile.url)
            endpoint, col = f"{parts.scheme}://{parts.netloc}{parts.path}", params.get("COL", self.cutout_collection)
        else:
            endpoint, col = self.cutout_url, self.cutout_collection
        return (f"{endpoint}?col={quote(col)}&siaRef={quote(tile.ref, safe='+-_.')}&extn={tile.extn}"
                f"&POS={ra:.7f},{dec:.7f}&SIZE={size:.7f},{size:.7f}")

    def image_request(self, tile: TileRecord) -> str:
        """The URL of the whole image: the cutout URL without ``POS`` and ``SIZE``, or a plain access URL."""
        params = query_params(tile.url)
        if "SIAREF" not in params:
            return tile.url
        parts = urlsplit(tile.url)
        keep = {k: v for k, v in params.items() if k not in ("POS", "SIZE")}
        names = {"COL": "col", "SIAREF": "siaRef", "EXTN": "extn"}
        query = urlencode({names.get(k, k): v for k, v in keep.items()}, safe="+-_.,")
        return f"{parts.scheme}://{parts.netloc}{parts.path}?{query}"

    def cutout(self, tile: TileRecord, ra: float, dec: float, size_pix: int) -> tuple[np.ndarray, str]:
        """One band's stamp (S, S) and its status; never raises for network or content problems.

        A cutout with non-finite pixels counts as a bad answer and is asked again, like a truncated one.
        """
        empty = np.zeros((size_pix, size_pix), dtype=np.float32)
        if not self.use_cutout_service:
            return self.cut_from_image(tile, ra, dec, size_pix)
        n_req = size_pix + 2 * MARGIN_PIX
        half_deg = n_req * self.pixel_scale_arcsec / 3600.0 / 2
        near_edge = float(tile.depth(np.array([ra]), np.array([dec]))[0]) < half_deg * np.sqrt(2)
        parsed: dict[int, tuple[np.ndarray, WCS]] = {}  # the validated image, so that it is parsed only once

        def problem(body: bytes) -> str | None:
            try:
                data, wcs = read_fits_image(body)
            except Exception:  # astropy raises many types on garbage; all mean "not a usable FITS image"
                return st.ERROR_BAD_FITS
            if min(data.shape) < n_req - SIZE_SLACK_PIX and not near_edge:
                return st.ERROR_WRONG_SIZE
            if not np.isfinite(data).all():
                return st.ERROR_NAN
            parsed[id(body)] = (data, wcs)
            return None

        fetched = self.http.get(self.cutout_request(tile, ra, dec, n_req), validate=problem)
        if fetched.status == st.ERROR_HTTP and fetched.detail == "HTTP 404":
            return self.cut_from_image(tile, ra, dec, size_pix)  # no cutout endpoint: the whole image
        if fetched.status != st.OK:
            return empty, fetched.status
        data, wcs = parsed.get(id(fetched.body)) or read_fits_image(fetched.body)
        stamps, status = cut_stamps(data, wcs, [ra], [dec], size_pix, self.pixel_scale_arcsec)
        return stamps[0], str(status[0])

    def _safe(self, tile: TileRecord, ra: np.ndarray, dec: np.ndarray, size_pix: int) -> tuple[np.ndarray, list]:
        """Stamps and statuses of rows of one image (one cutout each), anything unforeseen made a status."""
        stamps = np.zeros((len(ra), size_pix, size_pix), dtype=np.float32)
        statuses = []
        for k, (r, d) in enumerate(zip(ra, dec, strict=True)):
            try:
                stamps[k], status = self.cutout(tile, float(r), float(d), size_pix)
            except Exception as exc:  # one odd answer must not crash a partition of thousands of rows
                warn(f"cutout of {tile.ref} at ({r:.6f}, {d:.6f}) failed: {exc!r}")
                status = st.ERROR_BAD_FITS
            statuses.append(status)
        return stamps, statuses

    def cut_from_image(self, tile: TileRecord, ra, dec, size_pix: int) -> tuple[np.ndarray, str | np.ndarray]:
        """Download the whole image once (cached; one download per URL at a time) and cut the stamps from it.

        Scalar ``ra``/``dec`` give one stamp (S, S) and its status; arrays give (n, S, S) and n statuses.
        """
        scalar = np.ndim(ra) == 0
        ra, dec = np.atleast_1d(ra), np.atleast_1d(dec)
        url = self.image_request(tile)
        with self._locks_guard:
            lock = self._locks.setdefault(url, threading.Lock())
        with lock:
            path = self._local_image_path(url)
            if not path.is_file():
                fetched = self.http.get(url, validate=_fits_problem, total_timeout_s=self.http.timeout_s * 20)
                if fetched.status != st.OK:
                    failed = np.full(len(ra), fetched.status, dtype=object)
                    empty = np.zeros((len(ra), size_pix, size_pix), dtype=np.float32)
                    return (empty[0], str(failed[0])) if scalar else (empty, failed)
                if not path.is_file():
                    write_atomic(path, fetched.body)
        try:
            stamps, status = cut_from_file(path, None, ra, dec, size_pix, self.pixel_scale_arcsec)
        except InputError:
            stamps = np.zeros((len(ra), size_pix, size_pix), dtype=np.float32)
            status = np.full(len(ra), st.ERROR_BAD_FITS, dtype=object)
        return (stamps[0], str(status[0])) if scalar else (stamps, status)

    def _local_image_path(self, url: str) -> Path:
        """Where a downloaded image lives: the cache, or without one a scratch folder of this process."""
        cached = self.http.cache_path(url)
        if cached is not None:
            return cached
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="survey-deblend-tiles-")
        return Path(self._scratch) / f"{hashlib.sha256(url.encode()).hexdigest()}.fits"

    # -- the batch -----------------------------------------------------------------------------------------
    def fetch(
        self, ra: np.ndarray, dec: np.ndarray, size_pix: int, choice: TileChoice | None = None,
    ) -> CutoutBatch:
        """Stamps of every band for every row, from the images of ``choice`` (the planner's; None: planned here).

        Failures become band statuses, never exceptions.
        """
        ra = np.atleast_1d(np.asarray(ra, dtype=float))
        dec = np.atleast_1d(np.asarray(dec, dtype=float))
        n = len(ra)
        choice = choice if choice is not None else self.plan(ra, dec, size_pix)
        if len(choice) != n:
            raise ValueError(f"tile choice of {len(choice)} rows for {n} positions")
        frame = PhotometricFrame("DES", self.bands, self.pixel_scale_arcsec, choice.zeropoints)
        batch = CutoutBatch.empty(n, frame, size_pix)
        weights = self.fetch_weights and any(t.weight() is not None for t in choice.tiles)
        if weights:
            batch.noise_sigma = np.full((n, len(self.bands)), np.nan)
        band_status = np.full((n, len(self.bands)), st.NO_COVERAGE, dtype=object)
        failed = choice.failure != ""
        band_status[failed, :] = choice.failure[failed, None]
        jobs = [(b, tile, rows) for b in range(len(self.bands)) for tile, rows in choice.groups(b)]
        # a whole image is one task for all its rows; a remote cutout is one task per row
        tasks = [(b, tile, rows[k : k + 1] if tile.ref not in choice.whole_image else rows)
                 for b, tile, rows in jobs for k in range(len(rows) if tile.ref not in choice.whole_image else 1)]

        def run(task: tuple) -> tuple[np.ndarray, list, np.ndarray | None]:
            _, tile, rows = task
            whole = tile.ref in choice.whole_image
            stamps, statuses = self._stamps(tile, ra[rows], dec[rows], size_pix, whole)
            sigma = self._weight_sigma(tile, ra[rows], dec[rows], size_pix, whole, statuses) if weights else None
            return stamps, statuses, sigma

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            results = list(pool.map(run, tasks))
        for (b, tile, rows), (stamps, statuses, sigma) in zip(tasks, results, strict=True):
            factor = zeropoint_factor(tile.zeropoint, frame.zeropoints[b])
            batch.images[rows, b] = stamps * factor
            band_status[rows, b] = statuses
            if sigma is not None:
                batch.noise_sigma[rows, b] = sigma * factor
        batch.settle(band_status)
        return batch

    def _stamps(self, tile: TileRecord, ra: np.ndarray, dec: np.ndarray, size_pix: int,
                whole: bool) -> tuple[np.ndarray, list]:
        """Stamps and statuses of rows of one image: one cutout each, or cut from the whole image (``whole``)."""
        if not whole:
            return self._safe(tile, ra, dec, size_pix)
        try:
            stamps, statuses = self.cut_from_image(tile, ra, dec, size_pix)
        except Exception as exc:  # as in _safe: an odd answer becomes a status, never a crash
            warn(f"whole image {tile.ref} failed: {exc!r}")
            stamps = np.zeros((len(ra), size_pix, size_pix), dtype=np.float32)
            statuses = [st.ERROR_BAD_FITS] * len(ra)
        return stamps, list(statuses)

    def _weight_sigma(self, tile: TileRecord, ra: np.ndarray, dec: np.ndarray, size_pix: int, whole: bool,
                      statuses: list) -> np.ndarray:
        """Noise per pixel (n,) from the image's weight map, in the image's units, for the rows whose science
        stamp came (the others need none); NaN where the weight could not be had (after its own retries)."""
        sigma = np.full(len(ra), np.nan)
        weight = tile.weight()
        wanted = np.flatnonzero(np.isin(np.asarray(statuses, dtype=object), list(st.USABLE)))
        if weight is None or not len(wanted):
            return sigma
        stamps, got = self._stamps(weight, ra[wanted], dec[wanted], size_pix, whole)
        good = np.isin(np.asarray(got, dtype=object), list(st.USABLE))
        if good.any():
            sigma[wanted[good]] = stamp_sigma(stamps[good], 1.0)
        return sigma


def _votable_problem(body: bytes) -> str | None:
    try:
        tile_records(body)
    except Exception:  # a garbled answer: retried, then reported as an HTTP-level failure
        return st.ERROR_HTTP
    return None


def _fits_problem(body: bytes) -> str | None:
    try:
        read_fits_image(body)
    except Exception:  # same as above, for a FITS body
        return st.ERROR_BAD_FITS
    return None

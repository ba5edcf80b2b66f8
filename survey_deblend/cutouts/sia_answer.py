"""Reading an SIA answer of the Astro Data Lab (DALServer, "SIAP Version 1.0 (generic)") into tile records.

The Data Lab answers three rows per image (``prodtype`` ``image``, ``dqmask``, ``wtmap``; only ``image`` holds
the science pixels), ``obs_bandpass`` bare (``i``) or long (``i DECam SDSS c0003 7835.0 1470.0``), an
``access_url`` that is already a cutout URL (``.../svc/cutout?col=..&siaRef=..&extn=N&POS=..&SIZE=..``),
``magzero``/``seeing``/``exptime``/``proctype`` as strings, ``s_fov`` empty (masked), and the footprint in
``s_region`` (a POLYGON) and ``spat_lolimit1/2``, ``spat_hilimit1/2``. Footprints come from ``s_region``, else
the spatial limits, else ``s_fov``, else the size of a DES coadd tile.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import warnings
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import numpy as np
from astropy.io.votable import parse as parse_votable

from survey_deblend.cutouts.choice import TileRef
from survey_deblend.cutouts.geometry import tangent_offsets_deg

DES_TILE_PIX = 10000  # side of a DES coadd tile in pixels (DES_SVA1.md), the footprint when nothing else says
_TILE_FILE = re.compile(r"^(?P<tile>.+?)(?:_r\d+p\d+)?_(?P<band>[A-Za-z]+)\.fits(?:\.fz|\.gz)?$")


def des_tile_fov_deg() -> float:
    """Side of a DES coadd tile in degrees (pixel scale from surveycodex)."""
    from survey_deblend.surveys import pixel_scale

    return DES_TILE_PIX * pixel_scale("DES") / 3600.0


@dataclass(frozen=True)
class TileRecord(TileRef):
    """One science image listed by the SIA service, with its footprint.

    ``vertices`` are the footprint corners as gnomonic offsets (xi east, eta north; degrees) about (``ra``,
    ``dec``), counter-clockwise; ``weight_url`` the access URL of the image's weight map (``wtmap``), if listed.
    """

    ra: float = 0.0
    dec: float = 0.0
    vertices: tuple[tuple[float, float], ...] = ()
    weight_url: str = ""

    def depth(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Distance in degrees from each position to the nearest footprint edge; <= 0 outside."""
        xi, eta = tangent_offsets_deg(np.asarray(ra, float), np.asarray(dec, float), self.ra, self.dec)
        poly = np.asarray(self.vertices, dtype=float)
        depth = np.full(len(xi), np.inf)
        for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0), strict=True):
            ex, ey = x1 - x0, y1 - y0
            depth = np.minimum(depth, (ex * (eta - y0) - ey * (xi - x0)) / math.hypot(ex, ey))
        return np.where(np.isfinite(depth), depth, -np.inf)

    def weight(self) -> TileRecord | None:
        """The image's weight map as a record of its own (same file and footprint, the ``wtmap`` row's access URL
        and extension), or None when the answer listed none or its URL names no extension."""
        extn = _number(query_params(self.weight_url).get("EXTN")) if self.weight_url else None
        if extn is None:
            return None
        return dataclasses.replace(self, extn=int(extn), url=self.weight_url, weight_url="")


def query_params(url: str) -> dict[str, str]:
    """Query parameters of a URL, keys upper-cased, keeping a literal '+' (DES tile names hold one)."""
    parsed = parse_qs(urlsplit(url).query.replace("+", "%2B"), keep_blank_values=True)
    return {k.upper(): v[0] for k, v in parsed.items()}


def sia_ref(access_url: str) -> str:
    """The file name the cutout service knows an image by: ``siaRef`` of the URL, else its last path part."""
    ref = query_params(access_url).get("SIAREF")
    return ref if ref else urlsplit(access_url).path.rstrip("/").rsplit("/", 1)[-1]


def band_of(obs_bandpass: str) -> str:
    """The band of a bare (``i``) or long (``i DECam SDSS c0003 7835.0 1470.0``) ``obs_bandpass``."""
    words = obs_bandpass.split()
    return words[0] if words else ""


def tile_of(ref: str) -> str:
    """The coadd tile name of a file name (``DES0530-5000_r0001p01_g.fits.fz`` -> ``DES0530-5000``)."""
    match = _TILE_FILE.match(ref)
    return match.group("tile") if match else ref.split(".fits")[0]


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def footprint(
    ra0: float, dec0: float, s_region: str | None, limits: tuple[float | None, ...], fov_deg: float | None,
) -> tuple[tuple[float, float], ...]:
    """Footprint corners about (ra0, dec0): from ``s_region``, else the spatial limits, else a square of fov."""
    numbers = [_number(w) for w in re.split(r"[\s,()]+", s_region or "")]
    coords = [v for v in numbers if v is not None]
    if len(coords) >= 6 and len(coords) % 2 == 0:
        ras, decs = np.array(coords[0::2]), np.array(coords[1::2])
    elif all(v is not None for v in limits):
        ra_lo, ra_hi, dec_lo, dec_hi = limits
        ra_hi = ra_hi + 360.0 if ra_hi < ra_lo else ra_hi
        ras, decs = np.array([ra_lo, ra_hi, ra_hi, ra_lo]), np.array([dec_lo, dec_lo, dec_hi, dec_hi])
    else:
        h = (fov_deg or des_tile_fov_deg()) / 2
        return ((-h, -h), (h, -h), (h, h), (-h, h))
    xi, eta = tangent_offsets_deg(ras, decs, ra0, dec0)
    area = float(np.sum(xi * np.roll(eta, -1) - np.roll(xi, -1) * eta))
    order = slice(None) if area > 0 else slice(None, None, -1)
    return tuple((float(x), float(y)) for x, y in zip(xi[order], eta[order], strict=True))


def tile_records(body: bytes, url: str = "") -> list[TileRecord]:
    """The coadd science images (``prodtype`` image, ``proctype`` Stack) of an SIA answer, parsed with pyvo.

    Raises on a body that is not a VOTable of an SIA answer (the caller turns that into a status).
    """
    from pyvo.dal.sia import SIAResults

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = SIAResults(parse_votable(io.BytesIO(body)), url=url).to_table()
    if "access_url" not in table.colnames:
        raise ValueError("SIA answer without access_url")

    def cell(name: str, i: int) -> str | None:
        if name not in table.colnames or np.ma.is_masked(table[name][i]):
            return None
        value = table[name][i]
        return value.decode() if isinstance(value, bytes) else str(value)

    weights = {}
    for i in range(len(table)):
        if (cell("prodtype", i) or "").lower() == "wtmap":
            access = cell("access_url", i) or ""
            weights[sia_ref(access)] = access
    records = []
    for i in range(len(table)):
        if (cell("prodtype", i) or "image").lower() != "image" or (cell("proctype", i) or "Stack").lower() != "stack":
            continue
        access = cell("access_url", i) or ""
        ref = sia_ref(access)
        ra, dec = _number(cell("s_ra", i)), _number(cell("s_dec", i))
        if ra is None or dec is None:
            continue  # an image without a position cannot serve a position
        limits = tuple(_number(cell(n, i)) for n in ("spat_lolimit1", "spat_hilimit1", "spat_lolimit2",
                                                     "spat_hilimit2"))
        extn = _number(query_params(access).get("EXTN"))
        records.append(TileRecord(
            ref=ref, tile=tile_of(ref), band=band_of(cell("obs_bandpass", i) or ""),
            zeropoint=_number(cell("magzero", i)), extn=int(extn) if extn is not None else 1, url=access,
            ra=ra, dec=dec, vertices=footprint(ra, dec, cell("s_region", i), limits, _number(cell("s_fov", i))),
            weight_url=weights.get(ref, ""),
        ))
    return records

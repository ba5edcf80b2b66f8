"""The SIA answer of the Astro Data Lab (DALServer, "SIAP Version 1.0 (generic)"), as the local server writes it.

Faithful to a real answer: three rows per image (``prodtype`` ``image``, ``dqmask``, ``wtmap``, each pointing at
its extension of the same file), ``obs_bandpass`` long (``i DECam SDSS c0003 7835.0 1470.0``) or bare,
``access_url`` already a cutout URL with the query's ``POS`` and ``SIZE`` and the file's extension number,
``magzero``/``seeing``/``exptime``/``proctype`` as strings, ``im_scale`` an array, ``s_fov`` empty (masked), and
the footprint in ``s_region`` (a POLYGON) and ``spat_lolimit1/2``, ``spat_hilimit1/2``. Written with astropy's
VOTable writer.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
from astropy.io import fits
from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile

from survey_deblend.cutouts.geometry import pixel_scale_arcsec
from survey_deblend.cutouts.tiles import TileInfo

# NOIRLab archive names of the DECam filters (name, instrument, filter-wheel id, centre and width in Angstrom).
DECAM_BANDPASS = {
    "u": "u DECam c0006 3500.0 1000.0",
    "g": "g DECam SDSS c0001 4720.0 1520.0",
    "r": "r DECam SDSS c0002 6415.0 1480.0",
    "i": "i DECam SDSS c0003 7835.0 1470.0",
    "z": "z DECam SDSS c0004 9260.0 1520.0",
    "Y": "Y DECam c0005 10095.0 1130.0",
    "VR": "VR DECam c0007 6300.0 2600.0",
}
PRODTYPE_OF_PLANE = {"SCI": "image", "MSK": "dqmask", "WGT": "wtmap"}

# (name, datatype, arraysize): the columns of a Data Lab answer that clients read, in its order and types.
COLUMNS = (
    ("obs_bandpass", "char", "*"), ("proctype", "char", "*"), ("prodtype", "char", "*"),
    ("access_url", "char", "*"), ("access_format", "char", "*"), ("s_ra", "double", None),
    ("s_dec", "double", None), ("s_fov", "double", None), ("s_region", "char", "*"),
    ("spat_lolimit1", "double", None), ("spat_hilimit1", "double", None), ("spat_lolimit2", "double", None),
    ("spat_hilimit2", "double", None), ("im_scale", "double", "*"), ("magzero", "char", "*"),
    ("seeing", "char", "*"), ("exptime", "char", "*"), ("obs_title", "char", "*"),
)


@dataclass(frozen=True)
class ServedImage:
    """One tile file as served: its index entry, extension number per product, and its footprint."""

    tile: TileInfo
    extensions: dict[str, int]  # prodtype -> extension number
    corners: tuple[tuple[float, float], ...]  # (ra, dec) of the image corners
    keywords: dict[str, str]  # MAGZERO, seeing (FWHM), EXPTIME of the science header, as the strings served

    @classmethod
    def of(cls, tile: TileInfo) -> ServedImage:
        """Find the products of the file (by EXTNAME; the science image is the indexed one) and its corners."""
        extensions = {"image": tile.hdu}
        with fits.open(tile.path, memmap=True) as hdul:
            sci = hdul[tile.hdu].header
            keywords = {"magzero": _text(sci.get("MAGZERO", hdul[0].header.get("MAGZERO"))),
                        "seeing": _text(sci.get("FWHM", sci.get("SEEING"))), "exptime": _text(sci.get("EXPTIME"))}
            for i, hdu in enumerate(hdul):
                name = str(hdu.header.get("EXTNAME", "")).strip().upper()
                if name in PRODTYPE_OF_PLANE and name != "SCI":
                    extensions[PRODTYPE_OF_PLANE[name]] = i
        ny, nx = tile.shape
        ra, dec = tile.wcs.all_pix2world([-0.5, nx - 0.5, nx - 0.5, -0.5], [-0.5, -0.5, ny - 0.5, ny - 0.5], 0)
        return cls(tile, extensions, tuple((float(r), float(d)) for r, d in zip(ra, dec, strict=True)), keywords)


def answer(
    images: list[ServedImage], root_url: str, collection: str, pos: tuple[float, float],
    size: tuple[float, float], long_bandpass: bool = True,
) -> bytes:
    """The VOTable answering an SIA query at ``pos`` of ``size`` (degrees) with the given images."""
    votable = VOTableFile()
    resource = Resource()
    resource.type = "results"
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    votable.resources.append(resource)
    table = TableElement(votable)
    resource.tables.append(table)
    table.fields.extend(Field(votable, name=n, datatype=t, arraysize=a) for n, t, a in COLUMNS)
    rows = [(image, prodtype, extn) for image in images for prodtype, extn in image.extensions.items()]
    table.create_arrays(len(rows))
    where = f"POS={pos[0]:.7f},{pos[1]:.7f}&SIZE={size[0]:.7f},{size[1]:.7f}"
    for k, (image, prodtype, extn) in enumerate(rows):
        tile = image.tile
        ras, decs = np.array([c[0] for c in image.corners]), np.array([c[1] for c in image.corners])
        ra0, dec0 = tile.centre
        ras_unwrapped = ra0 + (ras - ra0 + 180.0) % 360.0 - 180.0
        scale = pixel_scale_arcsec(tile.wcs)
        band = DECAM_BANDPASS.get(tile.band, tile.band) if long_bandpass else tile.band
        url = f"{root_url}/svc/cutout?col={quote(collection)}&siaRef={quote(tile.path.name, safe='+-_.')}" \
              f"&extn={extn}&{where}"
        table.array[k] = (
            band, "Stack", prodtype, url, "image/fits", ra0, dec0, 0.0,
            "POLYGON ICRS " + " ".join(f"{r % 360.0:.6f} {d:.6f}" for r, d in image.corners),
            float(ras_unwrapped.min()) % 360.0, float(ras_unwrapped.max()) % 360.0, float(decs.min()),
            float(decs.max()), np.array([scale / 3600.0, scale / 3600.0]), image.keywords["magzero"],
            image.keywords["seeing"], image.keywords["exptime"],
            f"{tile.tile} {tile.band} {prodtype}",
        )
        table.array.mask[k] = tuple(n == "s_fov" for n, _, _ in COLUMNS)  # empty in every Data Lab row
    out = io.BytesIO()
    votable.to_xml(out)
    return out.getvalue()


def _text(value: object) -> str:
    return "" if value is None else str(value)

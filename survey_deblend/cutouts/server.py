"""A local SIA service over a tile directory, shaped like the Astro Data Lab, with optional fault injection.

Endpoints: ``/sia/<collection>?POS=ra,dec&SIZE=w[,h]`` answers a VOTable with the Data Lab's columns for every
tile-band overlapping the box; ``/svc/cutout?col=...&siaRef=<file>&extn=1&POS=ra,dec&SIZE=w,h`` (degrees)
returns a FITS cutout with its WCS, trimmed at the tile edge; ``/files/<file>`` returns a whole tile (the
``access_url``); ``/admin/faults?error_rate=...`` changes the injected faults. It serves air-gapped sites,
the demo and the tests, which talk to it through a real socket.
"""

from __future__ import annotations

import io
import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from astropy.io import fits
from astropy.io.votable.tree import Info
from astropy.io.votable.tree import VOTableFile as _VOTableFile
from astropy.table import Table

from survey_deblend.cutouts.geometry import tangent_offsets_deg
from survey_deblend.cutouts.tiles import TileInfo, index_tiles, open_science


@dataclass
class Faults:
    """What goes wrong on purpose, per cutout request, drawn from a seeded RNG (rates are probabilities).

    ``max_faults`` caps how many faults are injected in all (then the server behaves), so tests of recovery by
    retry are deterministic. ``delay_s`` slows every affected response (``delay_rate`` of them).
    """

    error_rate: float = 0.0  # HTTP 503
    html_error_rate: float = 0.0  # 200 OK with an HTML error page
    truncate_rate: float = 0.0  # FITS body cut in half, connection closed
    wrong_size_rate: float = 0.0  # a cutout half the size asked for
    nan_rate: float = 0.0  # NaN pixels in the cutout
    delay_s: float = 0.0
    delay_rate: float = 1.0
    on_query: bool = False  # also inject into SIA queries (503 / HTML / delay only)
    max_faults: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.html_error_rate, self.truncate_rate, self.wrong_size_rate, self.nan_rate)
        if any(r < 0 for r in rates) or sum(rates) > 1 or not 0 <= self.delay_rate <= 1 or self.delay_s < 0:
            raise ValueError(f"fault rates must be probabilities summing to at most 1: {self}")


class FaultDraw:
    """Thread-safe draws of which fault (if any) a request gets."""

    KINDS = ("error", "html", "truncate", "wrong_size", "nan")

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()
        self.injected = 0

    def draw(self, is_query: bool) -> tuple[str | None, float]:
        """(fault kind or None, delay in seconds) for one request."""
        f = self.faults
        if is_query and not f.on_query:
            return None, 0.0
        with self._lock:
            u, v = self._rng.random(), self._rng.random()
            if f.max_faults is not None and self.injected >= f.max_faults:
                return None, 0.0
            delay = f.delay_s if (f.delay_s > 0 and v < f.delay_rate) else 0.0
            edges = np.cumsum([f.error_rate, f.html_error_rate, f.truncate_rate, f.wrong_size_rate, f.nan_rate])
            kind = next((k for k, e in zip(self.KINDS, edges, strict=True) if u < e), None)
            if is_query and kind not in (None, "error", "html"):
                kind = None
            if kind is not None or delay:
                self.injected += 1
        return kind, delay


def parse_query(query: str) -> dict[str, str]:
    """Query parameters, upper-cased keys, keeping a literal '+' (DES tile names hold one)."""
    params = {}
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key:
            params[unquote(key).upper()] = unquote(value)
    return params


def _floats(text: str, n_min: int, name: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if len(values) < n_min:
        raise ValueError(f"{name} needs {n_min} numbers")
    return values


class SIAServer(ThreadingHTTPServer):
    """The HTTP server: holds the tile index, the faults and a count of requests per endpoint."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, tiles_dir: str | Path, host: str = "127.0.0.1", port: int = 0,
                 faults: Faults | None = None, collection: str = "des_sva1") -> None:
        self.tiles = index_tiles(tiles_dir)
        self.by_name = {t.path.name: t for t in self.tiles}
        self.collection = collection
        self.faults = FaultDraw(faults or Faults())
        self.request_counts: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def root_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def sia_url(self) -> str:
        """The SIA base URL to give ``SIASource`` / pyvo."""
        return f"{self.root_url}/sia/{self.collection}"

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings (and restart their RNG)."""
        self.faults = FaultDraw(faults)

    def count(self, endpoint: str) -> None:
        with self._count_lock:
            self.request_counts[endpoint] += 1

    def votable(self, ra: float, dec: float, width: float, height: float) -> bytes:
        """The SIA answer for a box: one image row (and one weight-map row) per overlapping tile-band."""
        rows = []
        for tile in self.tiles:
            tra, tdec = tile.centre
            xi, eta = tangent_offsets_deg(np.array([tra]), np.array([tdec]), ra, dec)
            fov = tile.fov_deg
            if abs(xi[0]) < (fov + width) / 2 and abs(eta[0]) < (fov + height) / 2:
                header = fits.Header.fromstring(tile.header)
                for prodtype in ("image", "wtmap"):
                    rows.append({
                        "access_url": f"{self.root_url}/files/{tile.path.name}", "access_format": "image/fits",
                        "obs_bandpass": tile.band, "prodtype": prodtype, "proctype": "Stack",
                        "exptime": float(header.get("EXPTIME", 0.0)), "magzero": float(header.get("MAGZERO", 30.0)),
                        "s_ra": tra, "s_dec": tdec, "s_fov": fov,
                    })
        names = ["access_url", "access_format", "obs_bandpass", "prodtype", "proctype", "exptime", "magzero",
                 "s_ra", "s_dec", "s_fov"]
        dtypes = [str] * 5 + [float] * 5
        table = Table(rows=[[r[n] for n in names] for r in rows] or None, names=names, dtype=dtypes)
        votable = _VOTableFile.from_table(table)
        resource = votable.resources[0]
        resource.type = "results"
        resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
        out = io.BytesIO()
        votable.to_xml(out)
        return out.getvalue()

    def cutout(self, tile: TileInfo, ra: float, dec: float, width: float, height: float, shrink: bool) -> bytes:
        """A FITS cutout (primary HDU) around (ra, dec), trimmed to the tile, with the matching WCS."""
        scale = float(np.sqrt(abs(np.linalg.det(tile.wcs.pixel_scale_matrix))))
        nx, ny = max(int(round(width / scale)), 1), max(int(round(height / scale)), 1)
        if shrink:
            nx, ny = max(nx // 2, 1), max(ny // 2, 1)
        x, y = tile.wcs.all_world2pix(ra, dec, 0)
        x_lo, y_lo = int(np.floor(x + 0.5)) - nx // 2, int(np.floor(y + 0.5)) - ny // 2
        x0, x1 = max(x_lo, 0), min(x_lo + nx, tile.shape[1])
        y0, y1 = max(y_lo, 0), min(y_lo + ny, tile.shape[0])
        if x1 <= x0 or y1 <= y0:
            raise LookupError("position outside the image")
        hdul, data = open_science(tile)
        try:
            pixels = np.array(data[y0:y1, x0:x1], dtype=np.float32)
        finally:
            hdul.close()
        header = tile.wcs[y0:y1, x0:x1].to_header()
        original = fits.Header.fromstring(tile.header)
        for key in ("MAGZERO", "EXPTIME", "BAND", "TILENAME"):
            if key in original:
                header[key] = original[key]
        out = io.BytesIO()
        fits.PrimaryHDU(pixels, header=header).writeto(out)
        return out.getvalue()


class _Handler(BaseHTTPRequestHandler):
    server: SIAServer

    def __reduce__(self) -> tuple:
        return (str, (str(self),))  # the server stays behind
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: tests and the demo share a terminal
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        parts = urlsplit(self.path)
        params = parse_query(parts.query)
        try:
            if parts.path.rstrip("/") == f"/sia/{self.server.collection}":
                self._sia(params)
            elif parts.path == "/svc/cutout":
                self._cutout(params)
            elif parts.path == "/admin/faults":
                self._set_faults(params)
            elif parts.path.startswith("/files/"):
                self._file(unquote(parts.path[len("/files/"):]))
            else:
                self._send(404, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing to answer

    def _send(self, code: int, body: bytes, content_type: str, truncate: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if truncate:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)

    def _fault(self, is_query: bool) -> str | None:
        """Apply the delay and the error faults; returns the content fault left for the caller, if any."""
        kind, delay = self.server.faults.draw(is_query)
        if delay:
            threading.Event().wait(delay)
        if kind == "error":
            self._send(503, b"service temporarily unavailable", "text/plain")
            return "sent"
        if kind == "html":
            self._send(200, b"<html><body><h1>Service busy</h1></body></html>", "text/html")
            return "sent"
        return kind

    def _sia(self, params: dict[str, str]) -> None:
        self.server.count("sia")
        if self._fault(is_query=True) == "sent":
            return
        try:
            ra, dec = _floats(params.get("POS", ""), 2, "POS")[:2]
            size = _floats(params.get("SIZE", ""), 1, "SIZE")
        except ValueError as exc:
            self._send(400, f"bad query: {exc}".encode(), "text/plain")
            return
        width, height = size[0], size[1] if len(size) > 1 else size[0]
        self._send(200, self.server.votable(ra, dec, width, height), "application/x-votable+xml")

    def _cutout(self, params: dict[str, str]) -> None:
        self.server.count("cutout")
        kind = self._fault(is_query=False)
        if kind == "sent":
            return
        tile = self.server.by_name.get(params.get("SIAREF", ""))
        if tile is None:
            self._send(404, f"no such image: {params.get('SIAREF', '')}".encode(), "text/plain")
            return
        try:
            ra, dec = _floats(params.get("POS", ""), 2, "POS")[:2]
            size = _floats(params.get("SIZE", ""), 1, "SIZE")
            body = self.server.cutout(tile, ra, dec, size[0], size[1] if len(size) > 1 else size[0],
                                      shrink=kind == "wrong_size")
        except (ValueError, LookupError) as exc:
            self._send(400, f"bad cutout request: {exc}".encode(), "text/plain")
            return
        if kind == "nan":
            with fits.open(io.BytesIO(body)) as hdul:
                hdul[0].data[hdul[0].data.shape[0] // 2, :] = np.nan
                out = io.BytesIO()
                hdul.writeto(out)
                body = out.getvalue()
        self._send(200, body, "application/fits", truncate=kind == "truncate")

    def _set_faults(self, params: dict[str, str]) -> None:
        """``/admin/faults?error_rate=0.2&delay_s=1`` replaces the faults (keys as in ``Faults``)."""
        names = {f.lower(): f for f in Faults.__dataclass_fields__}
        try:
            values = {}
            for key, raw in params.items():
                name = names.get(key.lower())
                if name is None:
                    raise ValueError(f"unknown fault '{key.lower()}'")
                kind = Faults.__dataclass_fields__[name].type
                values[name] = (raw.lower() in ("1", "true")) if kind == "bool" else (
                    None if raw == "" else int(raw) if kind in ("int", "int | None") else float(raw))
            faults = Faults(**values)
        except (TypeError, ValueError) as exc:
            self._send(400, f"bad faults: {exc}".encode(), "text/plain")
            return
        self.server.set_faults(faults)
        self._send(200, repr(faults).encode(), "text/plain")

    def _file(self, name: str) -> None:
        self.server.count("file")
        tile = self.server.by_name.get(name)
        if tile is None:
            self._send(404, b"not found", "text/plain")
            return
        self._send(200, tile.path.read_bytes(), "application/fits")


class ServerURL(str):
    """The SIA base URL (a plain string), with ``.server`` for tests that count requests or change faults."""

    server: SIAServer

    def __reduce__(self) -> tuple:
        return (str, (str(self),))  # the server stays behind


@contextmanager
def running_server(
    tiles_dir: str | Path, host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None,
    collection: str = "des_sva1",
) -> Iterator[ServerURL]:
    """Serve ``tiles_dir`` on a background thread; yields the SIA base URL; shuts down on exit."""
    server = SIAServer(tiles_dir, host=host, port=port, faults=faults, collection=collection)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = ServerURL(server.sia_url)
        url.server = server
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

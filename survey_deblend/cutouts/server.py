"""A local SIA service over a tile directory, shaped like the Astro Data Lab, with fault injection for tests.

Endpoints: ``/sia/<collection>?POS=ra,dec&SIZE=w[,h]`` answers a VOTable in the Data Lab's schema
(``datalab_schema``: three rows per image, cutout ``access_url`` with ``extn``, string columns, masked
``s_fov``); ``/svc/cutout?col=...&siaRef=<file>&extn=N&POS=ra,dec&SIZE=w,h`` (degrees) returns a FITS cutout of
extension N with its WCS, trimmed at the image edge, and without ``POS``/``SIZE`` the whole image of extension
N; ``/files/<file>`` returns a whole file. Fault injection and ``/admin/faults`` exist only on a server started
for testing (``fault_injection=True``), and on an address other than loopback only with
``allow_remote_faults=True`` as well. It serves air-gapped sites, the demo and the tests, which talk to it
through a real socket.
"""

from __future__ import annotations

import io
import random
import sys
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

from survey_deblend.cutouts.datalab_schema import PRODTYPE_OF_PLANE, ServedImage, answer
from survey_deblend.cutouts.geometry import tangent_offsets_deg
from survey_deblend.cutouts.tiles import TileInfo, index_tiles, open_science
from survey_deblend.errors import ConfigError, InputError


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
    product: str | None = None  # only into requests for this product of an image (``image``, ``wtmap``); None: all
    max_faults: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.html_error_rate, self.truncate_rate, self.wrong_size_rate, self.nan_rate)
        if any(r < 0 for r in rates) or sum(rates) > 1 or not 0 <= self.delay_rate <= 1 or self.delay_s < 0:
            raise ValueError(f"fault rates must be probabilities summing to at most 1: {self}")
        if self.product not in (None, *PRODTYPE_OF_PLANE.values()):
            raise ValueError(f"fault product '{self.product}': expected one of {sorted(PRODTYPE_OF_PLANE.values())}")


class FaultDraw:
    """Thread-safe draws of which fault (if any) a request gets."""

    KINDS = ("error", "html", "truncate", "wrong_size", "nan")

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()
        self.injected = 0

    def draw(self, is_query: bool, product: str | None = None) -> tuple[str | None, float]:
        """(fault kind or None, delay in seconds) for one request (of ``product`` for a cutout or image)."""
        f = self.faults
        if (is_query and not f.on_query) or (not is_query and f.product is not None and product != f.product):
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


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or name (only this machine can reach it)."""
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


class SIAServer(ThreadingHTTPServer):
    """The HTTP server: holds the tile index, the faults (when enabled) and a count of requests per endpoint."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, tiles_dir: str | Path, host: str = "127.0.0.1", port: int = 0,
                 faults: Faults | None = None, collection: str = "des_sva1", fault_injection: bool = False,
                 allow_remote_faults: bool = False, long_bandpass: bool = True) -> None:
        if faults is not None and not fault_injection:
            raise ConfigError("fault settings need a server started for testing (fault injection enabled)")
        if fault_injection and not allow_remote_faults and not is_loopback(host):
            raise ConfigError(f"fault injection on {host}, which is not a loopback address, needs a second "
                              "explicit option (allow remote fault injection)")
        self.tiles = index_tiles(tiles_dir)
        self.images = [ServedImage.of(t) for t in self.tiles]
        self.by_name = {t.path.name: t for t in self.tiles}
        self.products = {i.tile.path.name: {e: p for p, e in i.extensions.items()} for i in self.images}
        self.collection = collection
        self.fault_injection = fault_injection
        self.long_bandpass = long_bandpass
        self.faults = FaultDraw(faults or Faults())
        self.request_counts: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()  # body bytes per endpoint, for the benchmarks
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
        """Replace the fault settings (and restart their RNG); only on a server started for testing."""
        if not self.fault_injection:
            raise ConfigError("fault injection is not enabled on this server")
        self.faults = FaultDraw(faults)

    def handle_error(self, request: object, client_address: tuple) -> None:
        """Stay quiet when a client hangs up (a timeout or a finished benchmark); report anything else."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def count(self, endpoint: str, n_bytes: int | None = None) -> None:
        """Count a request to ``endpoint`` (or, with ``n_bytes``, the body bytes sent for it)."""
        with self._count_lock:
            if n_bytes is None:
                self.request_counts[endpoint] += 1
            else:
                self.bytes_sent[endpoint] += n_bytes

    def votable(self, ra: float, dec: float, width: float, height: float) -> bytes:
        """The SIA answer for a box: three rows (image, dqmask, wtmap) per overlapping tile-band file."""
        hits = []
        for image in self.images:
            tra, tdec = image.tile.centre
            xi, eta = tangent_offsets_deg(np.array([tra]), np.array([tdec]), ra, dec)
            fov = image.tile.fov_deg
            if abs(xi[0]) < (fov + width) / 2 and abs(eta[0]) < (fov + height) / 2:
                hits.append(image)
        return answer(hits, self.root_url, self.collection, (ra, dec), (width, height), self.long_bandpass)

    def cutout(self, tile: TileInfo, extn: int, ra: float | None, dec: float | None, width: float,
               height: float, shrink: bool) -> bytes:
        """A FITS cutout (primary HDU) of extension ``extn`` around (ra, dec), trimmed to the image, with the
        matching WCS; the whole image of that extension when ``ra`` is None."""
        if ra is None:
            x0, x1, y0, y1 = 0, tile.shape[1], 0, tile.shape[0]
        else:
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
        hdul, data, _ = open_science(tile.path, extn)
        try:
            pixels = np.array(data[y0:y1, x0:x1])
            original = hdul[extn].header
        finally:
            hdul.close()
        header = tile.wcs[y0:y1, x0:x1].to_header()
        for key in ("MAGZERO", "EXPTIME", "BAND", "TILENAME", "EXTNAME"):
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
        self.endpoint = "other"
        parts = urlsplit(self.path)
        params = parse_query(parts.query)
        try:
            if parts.path.rstrip("/") == f"/sia/{self.server.collection}":
                self._sia(params)
            elif parts.path == "/svc/cutout":
                self._cutout(params)
            elif parts.path == "/admin/faults" and self.server.fault_injection:
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
        sent = body[: len(body) // 2] if truncate else body
        self.wfile.write(sent)
        self.server.count(getattr(self, "endpoint", "other"), len(sent))

    def _fault(self, is_query: bool, product: str | None = None) -> str | None:
        """Apply the delay and the error faults; returns the content fault left for the caller, if any."""
        if not self.server.fault_injection:
            return None
        kind, delay = self.server.faults.draw(is_query, product)
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
        self.endpoint = "sia"
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
        whole = "POS" not in params and "SIZE" not in params
        self.endpoint = "image" if whole else "cutout"
        self.server.count(self.endpoint)
        name, extn_text = params.get("SIAREF", ""), params.get("EXTN", "1")
        product = self.server.products.get(name, {}).get(int(extn_text) if extn_text.isdigit() else -1)
        kind = self._fault(is_query=False, product=product)
        if kind == "sent":
            return
        tile = self.server.by_name.get(name)
        if tile is None:
            self._send(404, f"no such image: {params.get('SIAREF', '')}".encode(), "text/plain")
            return
        try:
            extn = int(params.get("EXTN", "1"))
            if whole:
                body = self.server.cutout(tile, extn, None, None, 0.0, 0.0, shrink=False)
            else:
                ra, dec = _floats(params.get("POS", ""), 2, "POS")[:2]
                size = _floats(params.get("SIZE", ""), 1, "SIZE")
                body = self.server.cutout(tile, extn, ra, dec, size[0], size[1] if len(size) > 1 else size[0],
                                          shrink=kind == "wrong_size")
        except (ValueError, LookupError, IndexError, InputError) as exc:
            self._send(400, f"bad cutout request: {exc}".encode(), "text/plain")
            return
        if kind == "nan":
            with fits.open(io.BytesIO(body)) as hdul:
                image = next(h for h in hdul if h.data is not None)
                data = image.data.astype(np.float32)
                data[data.shape[0] // 2, :] = np.nan
                image.data = data
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
                    None if raw == "" else raw if kind == "str | None" else
                    int(raw) if kind in ("int", "int | None") else float(raw))
            faults = Faults(**values)
        except (TypeError, ValueError) as exc:
            self._send(400, f"bad faults: {exc}".encode(), "text/plain")
            return
        self.server.set_faults(faults)
        self._send(200, repr(faults).encode(), "text/plain")

    def _file(self, name: str) -> None:
        self.endpoint = "file"
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
    collection: str = "des_sva1", fault_injection: bool | None = None, allow_remote_faults: bool = False,
    long_bandpass: bool = True,
) -> Iterator[ServerURL]:
    """Serve ``tiles_dir`` on a background thread; yields the SIA base URL; shuts down on exit.

    ``fault_injection`` None enables it exactly when ``faults`` are given (a test asking for faults).
    """
    enabled = faults is not None if fault_injection is None else fault_injection
    server = SIAServer(tiles_dir, host=host, port=port, faults=faults, collection=collection,
                       fault_injection=enabled, allow_remote_faults=allow_remote_faults,
                       long_bandpass=long_bandpass)
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

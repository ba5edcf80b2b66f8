"""A polite HTTP client for cutout services: one allowed host, timeouts, retries with back-off, an on-disk cache.

Every outcome is a ``Fetched`` with a status from ``survey_deblend.cutouts.status``; nothing raises out of
``get`` for a network or content problem, so one bad cutout never crashes a partition.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from survey_deblend.cutouts import status as st
from survey_deblend.errors import ConfigError

MAX_BACKOFF_S = 30.0
MAX_REDIRECTS = 3
_CHUNK = 1 << 16

# validate(body) -> None when the body is good, else the failure status (the request is then retried).
Validator = Callable[[bytes], "str | None"]


@dataclass
class Fetched:
    """The body of a successful request (``status == ok``), or the reason it failed after the retries."""

    status: str
    body: bytes | None = None
    detail: str = ""
    attempts: int = 0
    from_cache: bool = False


def netloc_of(url: str) -> str:
    """``host:port`` of an http(s) URL, lower-cased; ConfigError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"'{url}': expected an http:// or https:// URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname.lower()}:{port}"


class GuardedHTTP:
    """GET with retries, back-off with jitter, timeouts and a cache, to one host only.

    Retried: connection errors, timeouts, HTTP 5xx/408/429, bodies the validator rejects. Not retried: other
    4xx, and URLs on another host (refused without a connection, ``error_off_host``).
    """

    def __init__(
        self, allowed_url: str, timeout_s: float = 30.0, retries: int = 4, backoff_s: float = 1.0,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.allowed_netloc = netloc_of(allowed_url)
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._local = threading.local()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_local"]  # sessions do not travel
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        """One requests session per thread (sessions are not thread-safe)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = "survey-deblend cutouts"
            self._local.session = session
        return session

    def is_allowed(self, url: str) -> bool:
        """Whether ``url`` is on the configured host and port."""
        try:
            return netloc_of(url) == self.allowed_netloc
        except ConfigError:
            return False

    def cache_path(self, url: str) -> Path | None:
        """Where the body of ``url`` is cached (None without a cache)."""
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.bin"

    def get(self, url: str, validate: Validator | None = None, total_timeout_s: float | None = None) -> Fetched:
        """The body of ``url`` (from the cache when there), or the failure status after the retries."""
        if not self.is_allowed(url):
            return Fetched(st.ERROR_OFF_HOST, detail=f"refused: {url} is not on {self.allowed_netloc}")
        cached = self.cache_path(url)
        if cached is not None and cached.is_file():
            body = cached.read_bytes()
            if validate is None or validate(body) is None:
                return Fetched(st.OK, body=body, from_cache=True)
        result = Fetched(st.ERROR_CONNECTION)
        for attempt in range(self.retries + 1):
            if attempt:
                delay = min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S) * random.uniform(0.5, 1.5)
                time.sleep(delay)
            result = self._attempt(url, total_timeout_s or self.timeout_s)
            result.attempts = attempt + 1
            if result.status == st.OK and validate is not None:
                problem = validate(result.body)
                if problem is not None:
                    result = Fetched(problem, detail="body rejected", attempts=attempt + 1)
            if result.status == st.OK:
                if cached is not None:
                    write_atomic(cached, result.body)
                return result
            if not _retryable(result):
                return result
        return result

    def _attempt(self, url: str, total_timeout_s: float) -> Fetched:
        """One request, following same-host redirects; maps every failure to a status."""
        deadline = time.monotonic() + total_timeout_s
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = self.session.get(url, timeout=self.timeout_s, stream=True, allow_redirects=False)
            except requests.exceptions.Timeout as exc:
                return Fetched(st.ERROR_TIMEOUT, detail=str(exc))
            except requests.exceptions.ConnectionError as exc:
                return Fetched(st.ERROR_CONNECTION, detail=str(exc))
            except requests.exceptions.RequestException as exc:
                return Fetched(st.ERROR_HTTP, detail=str(exc))
            with response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("Location", ""))
                    if not self.is_allowed(url):
                        return Fetched(st.ERROR_OFF_HOST, detail=f"refused redirect to {url}")
                    continue
                if response.status_code >= 400:
                    return Fetched(st.ERROR_HTTP, detail=f"HTTP {response.status_code}")
                return _read_body(response, deadline)
        return Fetched(st.ERROR_HTTP, detail="too many redirects")


def _read_body(response: requests.Response, deadline: float) -> Fetched:
    """The whole body before the deadline; a short body (fewer bytes than Content-Length) is bad FITS."""
    chunks = []
    try:
        for chunk in response.iter_content(_CHUNK):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                return Fetched(st.ERROR_TIMEOUT, detail="body too slow")
    except requests.exceptions.Timeout as exc:
        return Fetched(st.ERROR_TIMEOUT, detail=str(exc))
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
        return Fetched(st.ERROR_BAD_FITS, detail=f"truncated body ({exc})")
    except requests.exceptions.ConnectionError as exc:
        return Fetched(st.ERROR_CONNECTION, detail=str(exc))
    body = b"".join(chunks)
    expected = response.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and int(expected) != len(body):
        return Fetched(st.ERROR_BAD_FITS, detail=f"truncated body ({len(body)} of {expected} bytes)")
    return Fetched(st.OK, body=body)


def _retryable(result: Fetched) -> bool:
    if result.status == st.ERROR_OFF_HOST:
        return False
    if result.status == st.ERROR_HTTP and result.detail.startswith("HTTP "):
        code = int(result.detail.split()[1])
        return code >= 500 or code in (408, 429)
    return True


def write_atomic(path: Path, body: bytes) -> None:
    """Write to a temporary name in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Per-row status of a cutout: why a stamp is usable or what went wrong fetching it.

Every row a source is asked for gets exactly one of these; nothing is dropped and no fetch failure escapes as
an exception. ``USABLE`` rows go on to inference; the others keep their row with the reason.
"""

from __future__ import annotations

OK = "ok"
PADDED = "padded"  # partly off the survey, padded with zeros; still usable
NO_COVERAGE = "no_coverage"  # no tile of any band covers the position
ERROR_HTTP = "error_http"  # HTTP error status (5xx after retries, or a 4xx)
ERROR_TIMEOUT = "error_timeout"  # no (complete) answer within the timeout, after retries
ERROR_BAD_FITS = "error_bad_fits"  # truncated, HTML or otherwise unreadable body
ERROR_WRONG_SIZE = "error_wrong_size"  # the cutout does not hold the stamp asked for
ERROR_NAN = "error_nan"  # non-finite pixels in the stamp
ERROR_CONNECTION = "error_connection"  # connection refused or reset
ERROR_OFF_HOST = "error_off_host"  # the service pointed at a host other than the configured one; not followed

USABLE = frozenset({OK, PADDED})
FAILURES = frozenset(
    {ERROR_HTTP, ERROR_TIMEOUT, ERROR_BAD_FITS, ERROR_WRONG_SIZE, ERROR_NAN, ERROR_CONNECTION, ERROR_OFF_HOST}
)
ALL = USABLE | {NO_COVERAGE} | FAILURES


# Worst first: a row with no usable band names the worst failure among its bands (the most systematic one).
SEVERITY = (ERROR_OFF_HOST, ERROR_CONNECTION, ERROR_HTTP, ERROR_TIMEOUT, ERROR_BAD_FITS, ERROR_WRONG_SIZE, ERROR_NAN)
# Bands whose failure the model does not survive. Measured on a DES-like field (191 galaxies, i SNR > 15, the
# shipped checkpoint): masking i moves the shapes by 0.16 rms and raises their error against the truth from
# 0.139 to 0.205 while the predicted sigma *shrinks* (0.037 -> 0.031); masking g, r, z or Y moves them by
# 0.05 and costs at most 0.013, the sigma staying 0.036-0.043 (benchmarks/band_dropout.py; docs/performance.md).
REQUIRED_BANDS = ("i",)


def combine_band_statuses(statuses: list[str], bands: tuple[str, ...] | None = None) -> str:
    """One row status from the statuses of its bands (in the order of ``bands``).

    A row with at least one usable band is usable (``padded`` if any usable band is padded, else ``ok``): the
    model was trained with band dropout and takes a band mask, so a band that failed is masked like a band
    that is absent. A failed ``REQUIRED_BANDS`` band (when ``bands`` says which is which) makes the row name
    that failure. When no band is usable the row names the worst failure among its bands (``SEVERITY``), or
    ``no_coverage`` when none failed.
    """
    for band, status in zip(bands or (), statuses, strict=False):
        if band in REQUIRED_BANDS and status in FAILURES:
            return status
    usable = [s for s in statuses if s in USABLE]
    if usable:
        return PADDED if PADDED in usable else OK
    failures = [s for s in statuses if s in FAILURES]
    if failures:
        return min(failures, key=SEVERITY.index)
    return NO_COVERAGE


def failed_bands(bands: tuple[str, ...], statuses: list[str]) -> str:
    """The bands of a row that failed and why, e.g. ``"r:error_http Y:error_nan"``; empty when none failed."""
    return " ".join(f"{band}:{s}" for band, s in zip(bands, statuses, strict=True) if s in FAILURES)

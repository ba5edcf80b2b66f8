"""Per-row status of a cutout: why a stamp is usable or what went wrong fetching it.

Every row a source is asked for gets exactly one of these; nothing is dropped and no fetch failure escapes as
an exception. ``USABLE`` rows go on to inference; the others keep their row with the reason. The names are owned
by ``survey_deblend.schema``; this module combines the statuses of a row's bands.
"""

from __future__ import annotations

from survey_deblend.schema import (  # noqa: F401  (the names are re-exported: ``cutouts.status.OK`` etc.)
    ERROR_BAD_FITS,
    ERROR_CONNECTION,
    ERROR_HTTP,
    ERROR_NAN,
    ERROR_OFF_HOST,
    ERROR_TIMEOUT,
    ERROR_WRONG_SIZE,
    FAILURES,
    NO_COVERAGE,
    OK,
    PADDED,
    USABLE,
)

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

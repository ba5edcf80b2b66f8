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


def combine_band_statuses(statuses: list[str]) -> str:
    """One row status from the statuses of its bands.

    A failure in any band wins (the stamp is incomplete for a reason worth reporting); otherwise a row with no
    band covered is ``no_coverage``, a row with any padded band is ``padded``, else ``ok``. A band that is
    simply absent (``no_coverage`` in that band) only clears its mask bit.
    """
    for status in statuses:
        if status in FAILURES:
            return status
    covered = [s for s in statuses if s != NO_COVERAGE]
    if not covered:
        return NO_COVERAGE
    return PADDED if PADDED in covered else OK

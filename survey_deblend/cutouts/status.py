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

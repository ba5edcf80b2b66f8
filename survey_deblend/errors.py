"""Errors the CLI turns into one clear line and an exit code, instead of a traceback."""

from __future__ import annotations


class SurveyDeblendError(Exception):
    """A problem the user can fix; its message is one line naming the file, column or key."""

    exit_code = 1


class ConfigError(SurveyDeblendError, ValueError):
    """A configuration problem: unknown key, wrong type, missing file (exit code 2)."""

    exit_code = 2


class InputError(SurveyDeblendError, ValueError):
    """An input file that cannot be used: missing, not FITS, missing column, wrong dtype (exit code 2)."""

    exit_code = 2

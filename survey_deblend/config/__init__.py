"""Typed configuration objects, one per command, loaded from ``pipelines/*.yaml`` with CLI overrides.

The generic machinery is in ``loader``; each stage's section lives in its own module here.
"""

from survey_deblend.config.loader import ConfigError, apply_overrides, from_mapping, load, read_yaml

__all__ = ["ConfigError", "apply_overrides", "from_mapping", "load", "read_yaml"]

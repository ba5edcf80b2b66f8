"""Typed configuration objects, one per command, loaded from ``pipelines/*.yaml`` with CLI overrides.

The generic machinery is in ``loader`` (YAML, ``--set`` strings, typed CLI values) and ``hashing`` (which fields
change a result); each stage's section lives in its own module here.
"""

from survey_deblend.config.loader import ConfigError, apply_overrides, apply_values, from_mapping, load, read_yaml

__all__ = ["ConfigError", "apply_overrides", "apply_values", "from_mapping", "load", "read_yaml"]

"""Which configuration keys change a result: marked on the dataclass fields, read by every hash of a config.

A field declared with ``field(..., metadata=NOT_HASHED)`` only changes how a result is computed (where, how
fast, how loud), not the result; the run manifest's configuration hash and the training's resume fingerprint
both leave such fields out, so there is no list of names to keep in step with the dataclasses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

NOT_HASHED = {"hashed": False}


def is_hashed(f: dataclasses.Field) -> bool:
    """False for a field marked ``NOT_HASHED``."""
    return bool(f.metadata.get("hashed", True))


def hashed_values(config: Any) -> Any:
    """``config`` as nested dicts of the fields that change a result; leaves keep their Python values."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: hashed_values(getattr(config, f.name)) for f in dataclasses.fields(config) if is_hashed(f)}
    return config

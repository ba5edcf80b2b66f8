"""Configuration of the cutout stage: where stamps come from and how politely they are fetched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImagesConfig:
    """The cutout source: ``datalab``, ``sia:URL`` or ``tiles:DIR``, and the client's manners."""

    source: str = "datalab"
    datalab_url: str = "https://datalab.noirlab.edu/sia/des_sva1"
    cutout_collection: str = "des_sva1"
    bands: tuple[str, ...] = ("g", "r", "i", "z", "Y")
    concurrency: int = 4
    timeout_s: float = 30.0
    retries: int = 4
    backoff_s: float = 1.0
    cache_dir: Path | None = None  # on-disk cache of fetched cutouts; default under the output folder

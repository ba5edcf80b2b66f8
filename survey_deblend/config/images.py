"""Configuration of the cutout stage: where stamps come from and how politely they are fetched."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from survey_deblend.config.hashing import NOT_HASHED
from survey_deblend.surveys import DES_BANDS


@dataclass(frozen=True)
class ImagesConfig:
    """The cutout source: ``datalab``, ``sia:URL`` or ``tiles:DIR``, and the client's manners (not hashed)."""

    source: str = "datalab"
    datalab_url: str = "https://datalab.noirlab.edu/sia/des_sva1"
    cutout_collection: str = "des_sva1"
    bands: tuple[str, ...] = DES_BANDS
    concurrency: int = field(default=4, metadata=NOT_HASHED)
    timeout_s: float = field(default=30.0, metadata=NOT_HASHED)
    retries: int = field(default=4, metadata=NOT_HASHED)
    backoff_s: float = field(default=1.0, metadata=NOT_HASHED)
    # on-disk cache of fetched cutouts; default under the output folder
    cache_dir: Path | None = field(default=None, metadata=NOT_HASHED)
    # Pixel scale of the stamps; None: the tiles' own (tiles) or DES's from surveycodex (SIA).
    pixel_scale_arcsec: float | None = None
    # SIA: cut through the service's /svc/cutout endpoint; False downloads whole tiles via access_url (cached).
    use_cutout_service: bool = True
    # SIA: an image serving at least this many galaxies of the run is downloaded whole once (cached) and cut
    # locally instead of one cutout request per galaxy; 0: never (always cutouts).
    whole_image_threshold: int = 500
    # Fetch each image's weight map (SIA ``wtmap`` rows: one more request per band, or one more whole image; a
    # tile's WGT plane) for the stamps' noise level (``CutoutBatch.noise_sigma``); false: none (border estimate).
    fetch_weights: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("images.concurrency must be at least 1")
        if self.timeout_s <= 0:
            raise ValueError("images.timeout_s must be positive")
        if self.retries < 0:
            raise ValueError("images.retries must be 0 or more")
        if self.backoff_s < 0:
            raise ValueError("images.backoff_s must be 0 or more")
        if not self.bands:
            raise ValueError("images.bands must name at least one band")
        if self.whole_image_threshold < 0:
            raise ValueError("images.whole_image_threshold must be 0 (never) or more")
        if self.pixel_scale_arcsec is not None and self.pixel_scale_arcsec <= 0:
            raise ValueError("images.pixel_scale_arcsec must be positive")

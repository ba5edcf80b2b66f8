"""Cutout retrieval: turn positions into multi-band stamps from local coadd tiles or an SIA service.

``open_source(spec, cfg)`` picks the implementation: ``tiles:DIR`` (``TileSource``), ``sia:URL`` or ``datalab``
(``SIASource``). Every source returns a ``CutoutBatch`` with a status per row (``survey_deblend.cutouts.status``).

The tile choice is made once, by the planner: ``choice = source.plan(ra, dec, size_pix)`` gives per row and
band the image to read (``TileChoice``: ``keys`` to partition by, ``take(rows)`` for one partition, ``modes()``
for how each image is read); ``source.fetch(ra, dec, size_pix, choice=choice.take(rows))`` only reads.
"""

from __future__ import annotations

from pathlib import Path

from survey_deblend.config.images import ImagesConfig
from survey_deblend.cutouts import status
from survey_deblend.cutouts.base import CutoutBatch, CutoutSource
from survey_deblend.cutouts.choice import TileChoice
from survey_deblend.errors import ConfigError

__all__ = ["CutoutBatch", "CutoutSource", "TileChoice", "open_source", "status"]


def open_source(spec: str | None, cfg: ImagesConfig | None = None, cache_dir: str | Path | None = None) -> CutoutSource:
    """The cutout source named by ``spec`` (``tiles:DIR``, ``sia:URL``, ``datalab``; None: ``cfg.source``).

    ``cache_dir`` (or ``cfg.cache_dir``) holds the SIA client's on-disk cache.
    """
    cfg = cfg or ImagesConfig()
    spec = spec or cfg.source
    kind, _, rest = spec.partition(":")
    cache = Path(cache_dir) if cache_dir is not None else cfg.cache_dir
    if kind == "tiles" and rest:
        from survey_deblend.cutouts.tiles import TileSource

        return TileSource(rest, bands=cfg.bands, pixel_scale_arcsec=cfg.pixel_scale_arcsec,
                          fetch_weights=cfg.fetch_weights)
    if kind in ("sia", "datalab"):
        from survey_deblend.cutouts.sia import SIASource

        url = rest if kind == "sia" else (rest or cfg.datalab_url)
        if not url:
            raise ConfigError(f"images.source '{spec}': expected sia:URL")
        return SIASource.from_config(url, cfg, cache_dir=cache)
    raise ConfigError(f"images.source '{spec}': expected tiles:DIR, sia:URL or datalab")

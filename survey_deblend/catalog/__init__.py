"""The catalog stage: read DES SVA1 shear and gold catalogs, select, match, count the cuts.

``select_galaxies(cfg) -> Selection`` is the entry point; ``synthetic.write_catalogs`` writes test and demo
catalogs in the real schema. Names are imported lazily so that ``synthetic`` and ``schema`` stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from survey_deblend.catalog.cutflow import CutFlow, EmptySelectionError
    from survey_deblend.catalog.readers import CatalogReader, open_catalog
    from survey_deblend.catalog.select import Selection, select_galaxies

__all__ = ["CatalogReader", "CutFlow", "EmptySelectionError", "Selection", "open_catalog", "select_galaxies"]

_HOME = {
    "CutFlow": "cutflow",
    "EmptySelectionError": "cutflow",
    "CatalogReader": "readers",
    "open_catalog": "readers",
    "Selection": "select",
    "select_galaxies": "select",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"survey_deblend.catalog.{_HOME[name]}"), name)
    raise AttributeError(f"module 'survey_deblend.catalog' has no attribute {name!r}")

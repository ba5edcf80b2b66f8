"""Finding the position catalogs of a DES release beside its shear catalog, by the release's own naming.

The SVA1 files share one prefix (``../shared/DES_SVA1.md``): ``sva1_gold_r1.0_im3shape.fits.gz`` (shears),
``sva1_gold_r1.0_wlinfo.fits.gz`` (row-matched positions) and ``sva1_gold_r1.0_catalog.fits`` (the gold
catalog). So ``--catalog sva1_gold_r1.0_im3shape.fits.gz`` alone is enough: the gold catalog (else wlinfo)
beside it is used, and the choice is said on stderr and recorded in the cut flow's notes. Only a release-named
shear file (a prefix ending in ``_``) triggers the search, so the project's synthetic ``im3shape.fits`` beside
``gold.fits`` still needs ``--gold``; an explicit ``--gold``/``--wlinfo`` always wins.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TextIO

from survey_deblend.config.catalog import CatalogConfig
from survey_deblend.errors import ConfigError

SHEAR_KINDS = ("im3shape", "ngmix")  # the release's shear files: <prefix><kind><suffix>
GOLD_NAMES = ("catalog",)  # the release's gold catalog
WLINFO_NAMES = ("wlinfo",)
SUFFIXES = (".fits", ".fits.gz", ".parquet")  # uncompressed first: it reads fastest


def release_prefix(shear: Path) -> str | None:
    """``sva1_gold_r1.0_`` for ``sva1_gold_r1.0_im3shape.fits.gz``; None when the name is not a release shear file."""
    name = shear.name
    for suffix in (".fits.gz", ".fit.gz", ".fits", ".fit", ".parquet", ".gz"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    for kind in SHEAR_KINDS:
        if name.endswith("_" + kind) and len(name) > len(kind) + 1:
            return name[: -len(kind)]
    return None


def candidates(shear: Path, names: tuple[str, ...]) -> list[Path]:
    """The files beside ``shear`` that would be the release's ``names`` (in order of preference)."""
    prefix = release_prefix(shear)
    if prefix is None:
        return []
    return [shear.with_name(prefix + name + suffix) for name in names for suffix in SUFFIXES]


def find_beside(shear: Path, names: tuple[str, ...]) -> Path | None:
    """The first existing release file of ``names`` beside ``shear``, or None."""
    return next((path for path in candidates(shear, names) if path.is_file()), None)


def _looked_for(shear: Path, names: tuple[str, ...]) -> str:
    prefix = release_prefix(shear)
    return f"{prefix}{{{','.join(names)}}}{{{','.join(SUFFIXES)}}} in {shear.parent}"


def resolve_release_files(cfg: CatalogConfig, stream: TextIO | None = None) -> CatalogConfig:
    """``cfg`` with the position catalogs it needs but does not name filled in from beside the shear catalog.

    ID match: the gold catalog, else wlinfo (the gold quality cuts need gold). Sky match: the gold catalog, and
    wlinfo when the shear file has no RA/DEC. Each file found is said on ``stream`` (stderr). A release-named
    shear file with nothing usable beside it is a ConfigError listing the names looked for; other names are
    left to the usual "needs --gold" error.
    """
    if cfg.shear is None or release_prefix(Path(cfg.shear)) is None:
        return cfg
    shear = Path(cfg.shear)
    found: dict[str, Path] = {}
    if cfg.match == "id" and cfg.gold is None and cfg.wlinfo is None:
        names = GOLD_NAMES if cfg.cuts.gold_quality else GOLD_NAMES + WLINFO_NAMES
        path = find_beside(shear, GOLD_NAMES) or (None if cfg.cuts.gold_quality else find_beside(shear, WLINFO_NAMES))
        if path is None:
            what = "the gold catalog (--gold)" + ("" if cfg.cuts.gold_quality else " or wlinfo (--wlinfo)")
            looked = _looked_for(shear, names)
            raise ConfigError(f"catalog.gold: an ID match needs {what}; none found (looked for {looked})")
        found["wlinfo" if path in candidates(shear, WLINFO_NAMES) else "gold"] = path
    elif cfg.match == "sky":
        if cfg.gold is None:
            path = find_beside(shear, GOLD_NAMES)
            if path is None:
                raise ConfigError(
                    f"catalog.gold: a sky match needs the gold catalog (--gold); none found "
                    f"(looked for {_looked_for(shear, GOLD_NAMES)})"
                )
            found["gold"] = path
        if cfg.wlinfo is None and not _has_positions(shear):
            path = find_beside(shear, WLINFO_NAMES)
            if path is not None:
                found["wlinfo"] = path
    if not found:
        return cfg
    for role, path in found.items():
        print(
            f"survey-deblend: catalog.{role} not given; using {path} "
            f"(found beside {shear.name} by the release's naming)",
            file=stream or sys.stderr,
        )
    return dataclasses.replace(cfg, **found)


def _has_positions(shear: Path) -> bool:
    from survey_deblend.catalog.readers import open_catalog

    return open_catalog(shear, "im3shape catalog").has_columns(["RA", "DEC"])

"""``--catalog sva1_gold_r1.0_im3shape.fits.gz`` alone: the gold (or wlinfo) file beside it, by the release's naming."""

from __future__ import annotations

import gzip
import shutil

import pandas as pd
import pytest

from survey_deblend.catalog import select_galaxies
from survey_deblend.catalog.release import release_prefix, resolve_release_files
from survey_deblend.cli import main
from survey_deblend.config.catalog import CatalogConfig, CutsConfig
from survey_deblend.errors import ConfigError

PREFIX = "sva1_gold_r1.0_"


def _release(random_catalogs, folder, gold: bool = True, wlinfo: bool = True):
    """The synthetic catalogs under the release's names and formats (shears and wlinfo gzipped, gold plain)."""
    folder.mkdir(parents=True, exist_ok=True)
    shear = folder / f"{PREFIX}im3shape.fits.gz"
    shear.write_bytes(gzip.compress(random_catalogs.im3shape.read_bytes(), 1))
    if gold:
        shutil.copy(random_catalogs.gold, folder / f"{PREFIX}catalog.fits")
    if wlinfo:
        (folder / f"{PREFIX}wlinfo.fits.gz").write_bytes(gzip.compress(random_catalogs.wlinfo.read_bytes(), 1))
    return shear


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("sva1_gold_r1.0_im3shape.fits.gz", PREFIX),
        ("sva1_gold_r1.0_ngmix.fits.gz", PREFIX),
        ("y1_im3shape.parquet", "y1_"),
        ("im3shape.fits", None),
        ("shear.fits", None),
        ("sva1_gold_r1.0_wlinfo.fits.gz", None),
    ],
)
def test_release_prefix(tmp_path, name, prefix):
    assert release_prefix(tmp_path / name) == prefix


def test_cli_select_with_the_catalog_alone_finds_gold_and_says_so(random_catalogs, tmp_path, capsys):
    shear = _release(random_catalogs, tmp_path / "sva1")
    out = tmp_path / "sel.parquet"
    assert main(["select", "--catalog", str(shear), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"using {tmp_path / 'sva1' / (PREFIX + 'catalog.fits')}" in err
    explicit = select_galaxies(CatalogConfig(shear=random_catalogs.im3shape, gold=random_catalogs.gold))
    pd.testing.assert_frame_equal(pd.read_parquet(out), explicit.table)
    flow = pd.read_json(tmp_path / "sel.cutflow.json", typ="series")
    assert flow["notes"]["positions"].endswith(PREFIX + "catalog.fits")


def test_wlinfo_when_no_gold_and_gold_when_the_cuts_need_it(random_catalogs, tmp_path):
    shear = _release(random_catalogs, tmp_path / "r", gold=False)
    said = []
    cfg = resolve_release_files(CatalogConfig(shear=shear), stream=_Lines(said))
    assert cfg.wlinfo == tmp_path / "r" / f"{PREFIX}wlinfo.fits.gz" and cfg.gold is None
    assert len(said) == 1 and "catalog.wlinfo not given" in said[0]
    by_wlinfo = select_galaxies(cfg).table
    by_gold = select_galaxies(CatalogConfig(shear=random_catalogs.im3shape, wlinfo=random_catalogs.wlinfo)).table
    pd.testing.assert_frame_equal(by_wlinfo, by_gold)
    with pytest.raises(ConfigError, match=r"catalog\.gold: an ID match needs the gold catalog \(--gold\); none found "
                       r"\(looked for sva1_gold_r1\.0_\{catalog\}"):
        select_galaxies(CatalogConfig(shear=shear, cuts=CutsConfig(gold_quality=True)))


def test_explicit_files_win_and_other_names_are_left_alone(random_catalogs, tmp_path):
    shear = _release(random_catalogs, tmp_path / "r")
    cfg = CatalogConfig(shear=shear, wlinfo=random_catalogs.wlinfo)
    assert resolve_release_files(cfg, stream=_Lines([])) == cfg
    other = tmp_path / "r" / "my_shears.fits.gz"
    shutil.copy(shear, other)
    with pytest.raises(ConfigError, match=r"catalog\.gold: an ID match needs the gold catalog \(--gold\) or wlinfo"):
        select_galaxies(CatalogConfig(shear=other))


def test_nothing_beside_is_one_line_naming_what_was_looked_for(random_catalogs, tmp_path, capsys):
    shear = _release(random_catalogs, tmp_path / "alone", gold=False, wlinfo=False)
    code = main(["select", "--catalog", str(shear), "--out", str(tmp_path / "x.parquet")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "sva1_gold_r1.0_{catalog,wlinfo}{.fits,.fits.gz,.parquet}" in err and str(tmp_path / "alone") in err


def test_sky_match_finds_gold_and_wlinfo(random_catalogs, tmp_path):
    shear = _release(random_catalogs, tmp_path / "r")
    said = []
    cfg = resolve_release_files(CatalogConfig(shear=shear, match="sky"), stream=_Lines(said))
    assert cfg.gold.name == PREFIX + "catalog.fits" and cfg.wlinfo.name == PREFIX + "wlinfo.fits.gz"
    assert len(said) == 2
    by_sky = select_galaxies(cfg).table
    by_id = select_galaxies(CatalogConfig(shear=random_catalogs.im3shape, gold=random_catalogs.gold)).table
    assert set(by_sky["coadd_objects_id"]) == set(by_id["coadd_objects_id"])


class _Lines:
    """A text stream that keeps each printed line."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> None:
        if text.strip():
            self.lines.append(text.strip())

    def flush(self) -> None:
        pass

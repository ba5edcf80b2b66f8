"""Small real simulated data sets, made once per test session (GalSim PSFs, surveycodex facts, real files)."""

from __future__ import annotations

import pytest

from survey_deblend.config.sim import FieldSimConfig
from survey_deblend.sim.dataset import open_dataset
from survey_deblend.sim.field import make_des_field
from survey_deblend.sim.lsst import make_lsst_dataset


@pytest.fixture(scope="session")
def blends(tmp_path_factory):
    """40 LSST blends with DES pairs, in shards of 16 (the last one partial)."""
    out = make_lsst_dataset(tmp_path_factory.mktemp("blends"), n=40, seed=11, shard_size=16, des_pairs=True)
    return open_dataset(out)


@pytest.fixture(scope="session")
def ring(tmp_path_factory):
    out = make_lsst_dataset(tmp_path_factory.mktemp("ring"), n=32, seed=5, kind="ring", shard_size=12)
    return open_dataset(out)


@pytest.fixture(scope="session")
def field(tmp_path_factory):
    """Two 320 px tiles with a 40 px overlap, dense enough to hold blends."""
    cfg = FieldSimConfig(n_tiles=2, tile_size_pix=320, overlap_pix=40, seed=4, density_per_arcmin2=80.0)
    return make_des_field(tmp_path_factory.mktemp("field"), config=cfg)

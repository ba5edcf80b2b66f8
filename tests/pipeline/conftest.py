"""Session fixtures: one tiny real field, one untrained checkpoint, one LocalCluster of two 1-thread workers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from field import SmallField, make_small_field  # noqa: E402


@pytest.fixture(scope="session")
def small_field(tmp_path_factory) -> SmallField:
    return make_small_field(tmp_path_factory.mktemp("field"))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    from survey_deblend.models.checkpoint import write_untrained_checkpoint

    return write_untrained_checkpoint(tmp_path_factory.mktemp("model") / "untrained.pt", seed=0)


@pytest.fixture(scope="session")
def client():
    from survey_deblend.cluster import open_client
    from survey_deblend.config.run import ClusterConfig

    with open_client(ClusterConfig(kind="local", n_workers=2, threads_per_worker=1, dashboard_address=":0")) as client:
        yield client


def run_config(field: SmallField, checkpoint: Path, out: Path, *extra: str, images: str | None = None):
    """The RunConfig a user would write for this field (through the same loader and overrides as the CLI)."""
    from survey_deblend.config import load
    from survey_deblend.config.run import RunConfig

    overrides = [
        f"catalog.shear={field.im3shape}",
        f"catalog.gold={field.gold}",
        f"images.source={images or f'tiles:{field.tiles_dir}'}",
        f"model.checkpoint={checkpoint}",
        f"output.out={out}",
        "output.partition_rows=25",
        "output.progress=false",
        *extra,
    ]
    return load(RunConfig, None, overrides)

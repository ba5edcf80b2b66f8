"""Small real catalogs in the SVA1 schema, written once per session."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_deblend.catalog.synthetic import catalog_frames, write_catalogs


def clean_objects(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` galaxies that pass every default cut, spread over a few square degrees of SPT-E."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "coadd_objects_id": 3_000_000_000 + 7 * np.arange(n, dtype=np.int64),
            "ra": rng.uniform(70.0, 72.0, n),
            "dec": rng.uniform(-51.0, -49.0, n),
            "e1": rng.uniform(-0.4, 0.4, n),
            "e2": rng.uniform(-0.4, 0.4, n),
            "snr_w": rng.uniform(25.0, 80.0, n),
            "mag_i": rng.uniform(20.0, 23.0, n),
        }
    )


@pytest.fixture
def clean_frames():
    """Catalog frames of 12 passing galaxies, to be edited by a test and written with ``write_frames``."""
    return catalog_frames(clean_objects(12))


@pytest.fixture(scope="session")
def random_catalogs(tmp_path_factory):
    """A random 3000-row catalog set (FITS) with every kind of problem row."""
    return write_catalogs(tmp_path_factory.mktemp("random"), n=3000, seed=5)


@pytest.fixture(scope="session")
def random_catalogs_parquet(tmp_path_factory):
    """The same catalogs as ``random_catalogs``, written as Parquet."""
    return write_catalogs(tmp_path_factory.mktemp("random_pq"), n=3000, seed=5, fmt="parquet")


@pytest.fixture
def make_objects():
    """``clean_objects`` as a fixture, for tests that need their own population."""
    return clean_objects

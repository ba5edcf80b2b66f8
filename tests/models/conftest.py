"""Fixtures of the model tests: a tiny GalSim data set in the contract format and an untrained checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from survey_deblend.models.checkpoint import write_untrained_checkpoint

from .simdata import write_tiny_dataset


@pytest.fixture(scope="session", autouse=True)
def _two_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory) -> Path:
    return write_untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "untrained.pt", seed=0)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """1000 blended scenes (800 with a neighbour) with truth, in shards of 300."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "lsst", n=1000, seed=0)

"""The like-for-like band-fault comparison of the fault matrix (``benchmarks/faults_band.py``) on the tiny field:
a faulty run that lost bands and read the others identically scores 0 against the masked fault-free replay, and
one whose surviving bands were read wrong does not."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
fm = importlib.import_module("faults_matrix")
fb = importlib.import_module("faults_band")


@pytest.fixture(scope="module")
def replayed(small_field, checkpoint, tmp_path_factory):
    from survey_deblend.catalog import select_galaxies

    draft = fm.Field(small_field.tiles_dir, small_field.im3shape, small_field.gold, np.array([], dtype=np.int64))
    ids = select_galaxies(fm.config(draft, checkpoint, tmp_path_factory.mktemp("unused")).catalog).table[
        "coadd_objects_id"].to_numpy()
    draft = fm.Field(draft.tiles_dir, draft.im3shape, draft.gold, ids)
    ref = pd.DataFrame({"e1_pred": 0.0, "e2_pred": 0.0, "bands_used": ""}, index=pd.Index(ids, name="id"))
    replay = fb.Replay(draft, ref, checkpoint)
    ref = ref.loc[replay.ids]
    ref[fb.E] = replay.predict(replay.ids)
    ref["bands_used"] = replay.batch.bands_used()
    ref = ref[np.isfinite(ref["e1_pred"])]  # off the survey: no prediction, as in a run
    replay.ids = ref.index.to_numpy()
    return replay, ref


def test_masked_replay_equals_a_run_that_lost_bands_and_sees_corruption(replayed):
    replay, ref = replayed
    n, bands = len(ref), replay.batch.bands
    keep = np.ones((n, len(bands)), dtype=bool)
    lost = np.arange(n) % 2 == 0
    keep[lost, bands.index("g")] = False  # half the galaxies lost their g band
    bad = ref.copy()
    bad[fb.E] = replay.predict(ref.index.to_numpy(), keep)
    bad["bands_used"] = [u.replace("g", "") if x else u for u, x in zip(ref["bands_used"], lost, strict=True)]
    got = fb.like_for_like(replay, ref, bad, "")
    assert got["galaxies_with_a_masked_band"] == int(lost.sum()) > 10
    assert got["band_fault_vs_masked_rms"] == 0.0 and got["band_fault_vs_masked_rms_all"] == 0.0
    assert got["band_fault_shape_rms"] == got["band_fault_masked_rms"] > 0
    # the same losses, but e1 of the galaxies that lost a band read 0.05 off: the comparison must show it
    bad.loc[bad.index[lost], "e1_pred"] += 0.05
    got = fb.like_for_like(replay, ref, bad, "")
    assert got["band_fault_vs_masked_rms"] == pytest.approx(0.05 / np.sqrt(2), abs=2e-4)

"""A failed run re-run on the same client: the erred partitions run again rather than replaying their errors.

Every partition task has a key made of the run id and the partition id, and a resumed run keeps its run id, so
this guards against the scheduler handing a re-run the remembered exception of the previous attempt.
"""

from __future__ import annotations

import io
import shutil

import pandas as pd
import pytest
from conftest import run_config

from survey_deblend.errors import SurveyDeblendError
from survey_deblend.pipeline import run


def test_rerun_on_same_client_after_failed_partitions_completes(small_field, checkpoint, client, tmp_path):
    out = tmp_path / "out"
    config = run_config(small_field, checkpoint, out, "output.partition_rows=4", "model.measure_recon=false")
    first = run(config, client, stream=io.StringIO())
    reference = pd.read_parquet(out).sort_values("coadd_objects_id").reset_index(drop=True)
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) >= 3
    # Two partitions cannot be written: a directory squats on each part file's name (os.replace fails).
    blocked = parts[:2]
    for part in blocked:
        part.unlink()
        (out / "_done" / f"{part.stem.removeprefix('part-')}.json").unlink()
        part.mkdir()
    with pytest.raises(SurveyDeblendError, match="2 partitions failed"):
        run(config, client, stream=io.StringIO())
    for part in blocked:
        shutil.rmtree(part)
    second = run(config, client, stream=io.StringIO())
    assert second.run_id == first.run_id
    assert second.n_resumed == len(parts) - len(blocked)
    again = pd.read_parquet(out).sort_values("coadd_objects_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(again, reference)

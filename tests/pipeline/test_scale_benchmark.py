"""``benchmarks/scale.py`` end to end on a small catalog (slow: hundreds of partitions through a real cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEYS = {"client_peak_rss_mb", "scheduler_peak_tasks", "first_partition_s", "plan_rows_per_s"}


@pytest.mark.slow
def test_scale_benchmark_prints_the_issue_keys_and_a_bounded_scheduler(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--workdir", str(tmp_path),
                           "--sizes", "5000", "20000", "--stage-min-rows", "10000"],
                          capture_output=True, text=True, env=env, timeout=1500)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [line["n_rows"] for line in lines] == [5000, 20000]  # the last line is the largest size
    assert [line["staged"] for line in lines] == [False, True]  # the client selects 5000 rows, the workers 20000
    assert lines[1]["streamed"]  # the synthetic catalogs are sorted by ID: partitions planned per group of ranges
    for line in lines:
        assert KEYS <= set(line) and "trivial" in line["inference"]
        assert line["scheduler_peak_tasks"] < line["n_partitions"]  # a window, not every partition
        assert line["first_partition_s"] is not None and line["plan_rows_per_s"] > 0

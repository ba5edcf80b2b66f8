"""``benchmarks/science.py --speed``: the throughput keys side by side and the flow's K profile, on real stamps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_speed_mode_prints_both_heads_and_the_k_profile(tiny_dataset, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "science.py"), "--speed", "--quick",
                           "--data", str(tiny_dataset), "--work", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    head, profile = lines[0], lines[1:]
    for key in ("flow_images_per_s", "gaussian_images_per_s", "flow_head_images_per_s"):
        assert head[key] > 0
    # the flow adds to the encoder's time, so its path is the slower one; the head alone is faster than both
    assert head["flow_images_per_s"] < head["gaussian_images_per_s"] < 10 * head["flow_head_images_per_s"]
    assert head["n"] == 1024 and head["threads"] == 2 and head["load_1min"] >= 0
    errors = {(p["samples"], p["batch_size"]): p["mean_rms_error_vs_1024"] for p in profile}
    assert set(errors) == {(4, 2048), (8, 2048), (16, 2048), (32, 2048), (16, 256), (16, 1024)}
    assert errors[(4, 2048)] > errors[(16, 2048)] > errors[(32, 2048)] > 0  # more draws, a better mean
    assert errors[(16, 256)] == errors[(16, 1024)] == errors[(16, 2048)]  # the batch size changes nothing

"""DESIGN.md's order: calibration sits between inference and pipeline; it imports nothing below it."""

import json
import subprocess
import sys


def test_calibration_imports_no_stage_below_it():
    code = ("import json, sys, survey_deblend.calibration, survey_deblend.calibration.response, "
            "survey_deblend.calibration.batch;"
            "print(json.dumps(sorted({m.split('.')[1] for m in sys.modules if m.startswith('survey_deblend.')})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & {"pipeline", "cluster", "evaluation", "cutouts", "catalog", "cli", "training"}, loaded
    assert "calibration" in loaded

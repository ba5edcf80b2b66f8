"""The import direction of DESIGN.md: data stages stay free of torch, the stages below pipeline of Dask's
distributed machinery beyond the package's own dask defaults."""

import subprocess
import sys

import pytest

TORCH_FREE = ["survey_deblend.catalog.select", "survey_deblend.cutouts.tiles", "survey_deblend.cutouts.sia",
              "survey_deblend.sim.lsst", "survey_deblend.sim.field", "survey_deblend.shapes",
              "survey_deblend.preprocess", "survey_deblend.evaluation.metrics"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_data_stages_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_stages_below_pipeline_do_not_import_the_pipeline_or_cluster():
    code = ("import sys, survey_deblend.inference, survey_deblend.training, survey_deblend.evaluation.report;"
            "print(sorted(m for m in sys.modules if m.startswith(('survey_deblend.pipeline', 'survey_deblend.cluster',"
            " 'dask_jobqueue', 'dask_cuda'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_training_does_not_import_the_inference_stage_below_it():
    code = ("import sys, survey_deblend.training.metrics, survey_deblend.training.stages;"
            "print('survey_deblend.inference' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

"""Metacalibration (DESIGN.md, "calibration"): the five deconvolved-sheared-reconvolved images of a batch,
per-galaxy PSF models, stamp noise levels, and the shear response R of any shape estimator run on them."""

from survey_deblend.calibration.metacal import DEFAULT_DELTA, SHEAR_TYPES, metacal_images, metacal_shears
from survey_deblend.calibration.noise import border_noise_sigma, seeded_noise, weight_noise_sigma
from survey_deblend.calibration.psf import PSFModel, im3shape_psf_model, sim_psf_model
from survey_deblend.calibration.response import (
    MetacalResult,
    ensemble_shear,
    metacal_response,
    paired_bias_difference,
    paired_shear_bias,
    response_matrix,
)

__all__ = [
    "DEFAULT_DELTA",
    "SHEAR_TYPES",
    "MetacalResult",
    "PSFModel",
    "border_noise_sigma",
    "ensemble_shear",
    "im3shape_psf_model",
    "metacal_images",
    "metacal_response",
    "metacal_shears",
    "paired_bias_difference",
    "paired_shear_bias",
    "response_matrix",
    "seeded_noise",
    "sim_psf_model",
    "weight_noise_sigma",
]

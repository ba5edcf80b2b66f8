"""The three trainings (VAE, deblender, regressor) over simulated LSST data sets, and their checkpoints."""

from survey_deblend.training.stages import train_all, train_deblender, train_regressor, train_vae

__all__ = ["train_all", "train_deblender", "train_regressor", "train_vae"]

"""The networks (encoder, decoder, regressor) and the checkpoint format."""

from survey_deblend.models.networks import Architecture, Decoder, Encoder, Regressor, gaussian_nll, kl_divergence

__all__ = ["Architecture", "Decoder", "Encoder", "Regressor", "gaussian_nll", "kl_divergence"]

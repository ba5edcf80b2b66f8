"""The noise level of stamps from their image's weight map, as a source that has one gives it.

DES coadds carry a ``WGT`` plane next to ``SCI``; the Data Lab lists it as the ``wtmap`` row of each image. The
noise per pixel of a stamp is the median over the stamp of 1 / sqrt(weight) (``survey_deblend.noise``), in the
flux units of the weight's own image; ``CutoutBatch.noise_sigma`` holds it in the batch's units.
"""

from __future__ import annotations

import numpy as np

from survey_deblend.noise import weight_noise_sigma

WEIGHT_EXTNAME = "WGT"  # the weight plane of a DES coadd file


def stamp_sigma(weight_stamps: np.ndarray, flux_factor: float) -> np.ndarray:
    """Noise per pixel ``(n,)`` of ``(n, S, S)`` weight stamps of one image, brought to the batch's flux units
    by ``flux_factor`` (the zeropoint factor its science pixels get); NaN where a stamp has no positive weight."""
    return weight_noise_sigma(np.asarray(weight_stamps)[:, None], absent=np.nan)[:, 0] * float(flux_factor)

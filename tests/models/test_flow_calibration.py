"""The flow's e temperature: the coverage crossing, its recovery on truths drawn from a known tempered posterior."""

from __future__ import annotations

import numpy as np
import torch

from survey_deblend.models.flow import FlowArchitecture, FlowHead
from survey_deblend.training.flow import Latents
from survey_deblend.training.flow_calibration import calibrate_head, crossing, fit_temperature

ARCH = FlowArchitecture(latent_dim=4, n_bands=6, context_dim=8, embed_hidden=32, transforms=2, z_transforms=1,
                        hidden=(16, 16), samples=16)


def test_crossing_interpolates_and_reports_the_grid_end():
    t = np.array([0.8, 1.0, 1.2])
    assert crossing(t, np.array([0.5, 0.6, 0.8]), 0.68) == (1.0 + 0.2 * 0.08 / 0.2, False)
    assert crossing(t, np.array([0.5, 0.6, 0.62]), 0.68) == (1.2, True)
    assert crossing(t, np.array([0.7, 0.8, 0.9]), 0.68) == (0.8, True)
    # a noisy dip is made non-decreasing before the crossing is read
    np.testing.assert_allclose(crossing(t, np.array([0.6, 0.58, 0.76]), 0.68)[0], 1.1)
    rng = np.random.default_rng(0)
    inside = rng.random((4000, 3)) < np.array([0.5, 0.68, 0.8])
    temperature, err, clipped = fit_temperature(inside, t, 0.68, bootstrap=100)
    assert not clipped and abs(temperature - 1.0) < 3 * err and 0.005 < err < 0.05


def test_the_temperature_of_a_known_tempered_posterior_is_recovered():
    """Truths drawn from the head itself tempered by 1.3: the fit finds 1.3, the mean is untouched."""
    torch.manual_seed(0)
    head = FlowHead(ARCH)
    rng = np.random.default_rng(1)
    e = rng.normal(0, 0.2, (500, 2))
    head.set_standardization(e, rng.uniform(0.2, 2.0, 500))
    head.eval()
    n = 1500
    latent = rng.normal(size=(n, 4)).astype(np.float32)
    mask = np.ones((n, 6), bool)
    with torch.inference_mode():
        ctx = head.context(torch.from_numpy(latent), torch.from_numpy(mask).float())
        truth = head.sample_e(torch.randn(1, n, 2, generator=torch.Generator().manual_seed(2)), ctx,
                              temperature=1.3)[0].numpy()
    val = Latents(latent, mask, truth.astype(np.float32), np.ones(n, np.float32), np.arange(n))
    before = head.summarize(latent, mask, np.arange(n))
    record = calibrate_head(head, val, n_samples=128)
    assert head.arch.e_temperature == record["e_temperature"]
    assert abs(record["e_temperature"] - 1.3) < max(0.05, 3 * record["e_temperature_err"])
    assert 0.01 < record["e_temperature_err"] < 0.08 and not record["clipped_to_grid"]
    assert abs(record["val_coverage_e_68"] - 0.68) < 0.04 and abs(record["val_coverage_e_95"] - 0.95) < 0.03
    assert record["val_nll_e_tempered"] < record["val_nll_e_untempered"]
    after = head.summarize(latent, mask, np.arange(n))
    np.testing.assert_array_equal(after["e1_pred"], before["e1_pred"])
    assert np.median(after["e_sigma_pred"] / before["e_sigma_pred"]) > 1.2

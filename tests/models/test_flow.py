"""The flow head: support and Jacobians, exact z quantiles, id-seeded draws, calibration, checkpoint storage."""

from __future__ import annotations

import dataclasses

import galsim
import numpy as np
import pytest
import torch

from survey_deblend.errors import SurveyDeblendError
from survey_deblend.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from survey_deblend.models.flow import (
    SUMMARY_COLUMNS,
    FlowArchitecture,
    FlowHead,
    conformal_to_shear,
    coverage_figures,
    seeded_normals,
    shear_to_conformal,
)

SMALL = FlowArchitecture(latent_dim=4, n_bands=6, context_dim=8, embed_hidden=32, transforms=2, z_transforms=2,
                         hidden=(32, 32), samples=32)


def _head(arch: FlowArchitecture = SMALL, seed: int = 0) -> FlowHead:
    torch.manual_seed(seed)
    head = FlowHead(arch)
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 0.25, (500, 2))
    e /= np.maximum(1.0, np.hypot(*e.T) / 0.9)[:, None]
    head.set_standardization(e, rng.uniform(0.1, 3.0, 500))
    return head.eval()


def _inputs(n: int, latent_dim: int = 4, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((n, 6), bool)
    mask[::3, 0] = False
    return rng.normal(size=(n, latent_dim)).astype(np.float32), mask


def test_conformal_shear_is_galsims_and_maps_the_plane_into_the_unit_disc():
    for g1, g2 in [(0.3, -0.4), (0.0, 0.0), (-0.05, 0.02), (0.6, 0.7)]:
        shear = galsim.Shear(g1=g1, g2=g2)
        eta, _ = shear_to_conformal(torch.tensor([[g1, g2]], dtype=torch.float64))
        np.testing.assert_allclose(eta[0].numpy(), [shear.eta1, shear.eta2], atol=1e-9)
        np.testing.assert_allclose(conformal_to_shear(eta)[0].numpy(), [g1, g2], atol=1e-9)
    far = torch.randn(10000, 2, dtype=torch.float64) * 30
    assert float(conformal_to_shear(far).norm(dim=-1).max()) < 1.0


def test_densities_integrate_to_one_over_the_disc_and_positive_z():
    head = _head()
    latent, mask = _inputs(2)
    with torch.no_grad():
        ctx = head.context(torch.from_numpy(latent), torch.from_numpy(mask).float())
        xs = torch.linspace(-0.999, 0.999, 301, dtype=torch.float32)
        grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 1, 2)
        inside = (grid.norm(dim=-1) < 1.0).float()
        p_e = head.log_prob_e(grid.expand(-1, 2, 2).contiguous(), ctx).exp() * inside
        np.testing.assert_allclose((p_e.sum(0) * (xs[1] - xs[0]) ** 2).numpy(), 1.0, atol=0.01)
        zs = torch.linspace(1e-3, 40.0, 20001)[:, None].expand(-1, 2).contiguous()
        p_z = head.log_prob_z(zs, ctx).exp()
        np.testing.assert_allclose((p_z.sum(0) * (zs[1, 0] - zs[0, 0])).numpy(), 1.0, atol=0.01)
        # the log-prob a draw comes with is the density at that draw
        draws, log_p = head.sample_e(torch.randn(16, 2, 2), ctx, with_log_prob=True)
        torch.testing.assert_close(log_p, head.log_prob_e(draws, ctx), atol=1e-3, rtol=1e-4)
        # z quantiles are exact: their PIT is the quantile level
        q = head.z_quantiles(ctx, (0.025, 0.16, 0.5, 0.84, 0.975))
        torch.testing.assert_close(head.z_pit(q, ctx), torch.tensor([0.025, 0.16, 0.5, 0.84, 0.975])[:, None]
                                   .expand(5, 2), atol=2e-4, rtol=0)


def test_seeded_normals_depend_on_the_id_alone_and_are_standard():
    ids = np.arange(200_000, dtype=np.int64) * 7919 + 3_000_000_000
    draws = seeded_normals(ids, 2)
    assert np.abs(draws.mean(0)).max() < 0.01 and np.abs(draws.std(0) - 1).max() < 0.01
    assert abs(np.corrcoef(draws.T)[0, 1]) < 0.01
    perm = np.random.default_rng(0).permutation(50)
    np.testing.assert_array_equal(seeded_normals(ids[:50][perm], 2), draws[:50][perm])
    assert not np.allclose(seeded_normals(ids[:50], 2, stream=1), draws[:50])


def test_summary_columns_reproduce_per_galaxy_whatever_the_batch():
    head = _head()
    latent, mask = _inputs(300)
    ids = np.arange(300, dtype=np.int64) + 10**12
    full = head.summarize(latent, mask, ids, batch_size=128)
    assert tuple(full) == SUMMARY_COLUMNS and all(v.shape == (300,) and v.dtype == np.float64 for v in full.values())
    assert np.all(np.hypot(full["e1_sample"], full["e2_sample"]) < 1) and np.all(full["z_lo"] > 0)
    assert np.all((full["z_lo"] <= full["z_pred"]) & (full["z_pred"] <= full["z_hi"]))
    np.testing.assert_allclose(full["z_sigma_pred"], 0.5 * (full["z_hi"] - full["z_lo"]))
    pick = np.array([250, 3, 77])
    alone = head.summarize(latent[pick], mask[pick], ids[pick])
    for key in SUMMARY_COLUMNS:
        np.testing.assert_allclose(alone[key], full[key][pick], rtol=1e-5, atol=1e-6)
    other = head.summarize(latent[pick], mask[pick], ids[pick] + 1)
    assert not np.allclose(other["e1_sample"], alone["e1_sample"])
    np.testing.assert_allclose(other["e1_pred"], alone["e1_pred"])


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A problem with a known posterior: e ~ N(0.4 * tanh(x01), 0.08^2), z ~ LogN(0.5 x2, 0.15^2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    e = (0.4 * np.tanh(x[:, :2]) + rng.normal(0, 0.08, (n, 2))).astype(np.float32)
    z = np.exp(0.5 * x[:, 2] + rng.normal(0, 0.15, n)).astype(np.float32)
    return x, np.ones((n, 6), bool), e, z


@pytest.mark.slow
def test_a_trained_flow_is_calibrated_on_a_known_posterior():
    torch.manual_seed(0)
    head = FlowHead(SMALL)
    x, mask, e, z = _toy(4000, 0)
    head.set_standardization(e, z)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    tensors = [torch.from_numpy(a) for a in (e, z, x, mask.astype(np.float32))]
    rng = np.random.default_rng(0)
    for _ in range(300):
        sel = torch.from_numpy(rng.choice(len(x), 512, replace=False))
        loss = -head.log_prob(*(t[sel] for t in tensors)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    x, mask, e, z = _toy(2000, 1)
    stats = head.calibration(x, mask, e, z, n_samples=200)
    cov = coverage_figures(stats)
    assert abs(cov["coverage_e_68"] - 0.68) < 0.05 and abs(cov["coverage_e_95"] - 0.95) < 0.03
    assert abs(cov["coverage_z_68"] - 0.68) < 0.05
    summary = head.summarize(x, mask, np.arange(len(x)))
    mean = np.stack([summary["e1_pred"], summary["e2_pred"]], 1)
    assert np.sqrt(np.mean((mean - 0.4 * np.tanh(x[:, :2])) ** 2)) < 0.03  # the posterior mean is found
    assert abs(np.median(summary["e_sigma_pred"]) - 0.08) < 0.015
    np.testing.assert_allclose(np.median(np.log(summary["z_pred"]) - 0.5 * x[:, 2]), 0.0, atol=0.03)


def test_coverage_figures_count_truths_inside():
    stats = {"e_hpd_level": np.array([0.1, 0.5, 0.7, 0.96]), "z_pit": np.array([0.5, 0.1, 0.9, 0.83])}
    cov = coverage_figures(stats)
    assert cov["coverage_e_68"] == 0.5 and cov["coverage_e_95"] == 0.75 and cov["coverage_z_68"] == 0.5
    assert cov["coverage_z_95"] == 1.0


def test_flow_travels_in_a_weights_only_checkpoint(tmp_path, untrained_checkpoint):
    base = load_checkpoint(untrained_checkpoint)
    arch = FlowArchitecture(latent_dim=int(base.metadata["latent_dim"]))
    head = _head(arch)
    metadata = {**base.metadata, "flow": {"architecture": arch.to_dict()}}
    path = save_checkpoint(tmp_path / "with_flow.pt", Checkpoint(metadata, {**base.state, "flow": head.state_dict()}))
    assert path.stat().st_size < 20e6
    payload = torch.load(path, weights_only=True)
    assert "flow" in payload["state"] and payload["metadata"]["flow"]["architecture"]["hidden"] == list(arch.hidden)
    loaded = load_checkpoint(path)
    assert loaded.has_flow
    latent, mask = _inputs(20, arch.latent_dim)
    a = head.summarize(latent, mask, np.arange(20))
    b = loaded.build("flow").summarize(latent, mask, np.arange(20))
    for key in SUMMARY_COLUMNS:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6)
    with pytest.raises(SurveyDeblendError, match="no 'flow' head"):
        base.build("flow")
    bad = {**metadata, "flow": {"architecture": {**arch.to_dict(), "transforms": 5}}}
    with pytest.raises(SurveyDeblendError, match="does not match"):
        Checkpoint(bad, loaded.state).build("flow")


def test_a_temperature_widens_the_e_posterior_but_leaves_the_mean_and_z_untouched():
    head = _head()
    latent, mask = _inputs(2)
    t = 1.4
    with torch.no_grad():
        ctx = head.context(torch.from_numpy(latent), torch.from_numpy(mask).float())
        xs = torch.linspace(-0.999, 0.999, 301, dtype=torch.float32)
        grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 1, 2)
        inside = (grid.norm(dim=-1) < 1.0).float()
        p_e = head.log_prob_e(grid.expand(-1, 2, 2).contiguous(), ctx, temperature=t).exp() * inside
        np.testing.assert_allclose((p_e.sum(0) * (xs[1] - xs[0]) ** 2).numpy(), 1.0, atol=0.01)
        draws, log_p = head.sample_e(torch.randn(16, 2, 2), ctx, with_log_prob=True, temperature=t)
        torch.testing.assert_close(log_p, head.log_prob_e(draws, ctx, temperature=t), atol=1e-3, rtol=1e-4)
    latent, mask = _inputs(200)
    ids = np.arange(200) * 31 + 5
    plain = head.summarize(latent, mask, ids)
    head.arch = dataclasses.replace(head.arch, e_temperature=t)
    hot = head.summarize(latent, mask, ids)
    for key in ("e1_pred", "e2_pred", "z_pred", "z_lo", "z_hi", "z_sigma_pred"):
        np.testing.assert_array_equal(hot[key], plain[key])  # bit for bit: the mean stays the untempered one
    ratio = hot["e_sigma_pred"] / plain["e_sigma_pred"]
    assert np.all(ratio > 1.1) and 1.25 < np.median(ratio) < 1.55  # about T where the flow is near-affine
    assert not np.allclose(hot["e1_sample"], plain["e1_sample"])
    assert np.all(np.hypot(hot["e1_sample"], hot["e2_sample"]) < 1)
    spread = np.hypot(hot["e1_sample"] - hot["e1_pred"], hot["e2_sample"] - hot["e2_pred"])
    assert np.median(spread) > 1.2 * np.median(np.hypot(plain["e1_sample"] - plain["e1_pred"],
                                                        plain["e2_sample"] - plain["e2_pred"]))


def test_the_shipped_flow_carries_its_validation_temperature():
    """The shipped checkpoint's e temperature is the one its calibration record fitted on validation data."""
    from survey_deblend.inference import default_checkpoint

    checkpoint = load_checkpoint(default_checkpoint())
    flow = checkpoint.metadata["flow"]
    record = flow["calibration"]
    head = checkpoint.build("flow")
    assert flow["architecture"]["e_temperature"] == record["e_temperature"] == head.arch.e_temperature
    assert 1.0 < record["e_temperature"] < 1.1 and not record["clipped_to_grid"]
    assert abs(record["val_coverage_e_68"] - 0.68) < 0.01 and record["validation_rows"] == 2400
    grid, cov = np.asarray(record["grid"]), np.asarray(record["coverage_e_68_by_t"])
    assert np.all(np.diff(cov) > 0) and grid[cov < 0.68].max() < record["e_temperature"] < grid[cov > 0.68].min()

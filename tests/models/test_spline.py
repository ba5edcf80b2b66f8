"""The bins-first spline (``models.spline``) against zuko's ``MonotonicRQSTransform``, and the flow head on it."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import zuko
from zuko.transforms import MonotonicRQSTransform

from survey_deblend.models.flow import FlowArchitecture, FlowHead
from survey_deblend.models.spline import BinsFirstRQSTransform, use_fast_splines

# (parameter batch shape, input shape): equal, broadcast over extra leading input dims (the z quantiles'), and over
# a parameter batch wider than the input
SHAPES = [((64, 2), (64, 2)), ((50, 1), (3, 50, 1)), ((), (40,)), ((5, 7), (7,))]


def _params(batch: tuple[int, ...], bins: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Hyper-network-like parameters: strided views of one (*batch, 3 bins - 1) output, as zuko's unpack gives."""
    gen = torch.Generator().manual_seed(seed)
    phi = 2.0 * torch.randn((*batch, 3 * bins - 1), generator=gen, dtype=torch.float64)
    return phi[..., :bins], phi[..., bins : 2 * bins], phi[..., 2 * bins :]


@pytest.mark.parametrize(("batch", "xshape"), SHAPES)
@pytest.mark.parametrize("slope", [1e-3, 1e-2])
def test_knots_and_transforms_equal_zukos(batch, xshape, slope):
    """Same knots (zuko's attribute names, shapes and dtypes), forward, inverse and log-det (float64: the same math)."""
    params = _params(batch)
    ours, theirs = BinsFirstRQSTransform(*params, slope=slope), MonotonicRQSTransform(*params, slope=slope)
    assert ours.bins == theirs.bins == 8
    for name in ("horizontal", "vertical", "derivatives"):
        mine, ref = getattr(ours, name), getattr(theirs, name)
        assert mine.shape == ref.shape and mine.dtype == ref.dtype, name
        torch.testing.assert_close(mine, ref, atol=1e-12, rtol=1e-12, msg=name)
    x = 6.0 * torch.randn(xshape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # some beyond 5
    y, ladj = ours.call_and_ladj(x)
    y_ref, ladj_ref = theirs.call_and_ladj(x)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ladj, ladj_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ours.inv(x), theirs.inv(x), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ours.inv(y), x.expand_as(y), atol=1e-9, rtol=1e-9)  # a bijection, as zuko's


def test_float32_is_as_accurate_as_zukos():
    """In float32 both round (~1e-6 on the +-5 knots); ours stays as close to the float64 result as zuko's does."""
    params = _params((4096, 2), seed=3)
    x = 6.0 * torch.randn((4096, 2), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = MonotonicRQSTransform(*params).call_and_ladj(x)
    ours = BinsFirstRQSTransform(*(p.float() for p in params)).call_and_ladj(x.float())
    theirs = MonotonicRQSTransform(*(p.float() for p in params)).call_and_ladj(x.float())
    for mine, ref, truth in zip(ours, theirs, exact, strict=True):
        torch.testing.assert_close(mine, ref, atol=5e-5, rtol=1e-5)
        assert (mine.double() - truth).abs().max() <= 2 * (ref.double() - truth).abs().max() + 1e-6


def test_gradients_equal_zukos():
    """Training runs on it too: the parameters' gradients of a log-det are zuko's."""
    grads = []
    for cls in (BinsFirstRQSTransform, MonotonicRQSTransform):
        params = [p.clone().requires_grad_() for p in _params((32, 2))]
        x = torch.linspace(-4.5, 4.5, 64, dtype=torch.float64).reshape(32, 2)
        y, ladj = cls(*params).call_and_ladj(x)
        (y.square().sum() + ladj.sum()).backward()
        grads.append([p.grad for p in params])
    for mine, ref in zip(*grads, strict=True):
        torch.testing.assert_close(mine, ref, atol=1e-10, rtol=1e-10)


def test_the_flow_head_uses_it_on_every_spline_and_keeps_zukos_keywords():
    head = FlowHead(FlowArchitecture())
    univariates = [m.univariate for m in head.modules() if hasattr(m, "univariate")]
    assert len(univariates) == head.arch.transforms + head.arch.z_transforms
    assert all(u.func is BinsFirstRQSTransform and u.keywords == {"slope": 1e-3} for u in univariates)
    assert use_fast_splines(head) == 0  # already switched
    assert use_fast_splines(head, fast=False) == len(univariates)
    assert all(m.univariate.func is MonotonicRQSTransform for m in head.modules() if hasattr(m, "univariate"))
    assert use_fast_splines(head) == len(univariates)


def test_an_unknown_univariate_is_refused_loudly():
    flow = zuko.flows.MAF(2, 3)  # affine, not a spline
    with pytest.raises(TypeError, match=r"MaskedAutoregressiveTransform\.univariate .*MonotonicRQSTransform"):
        use_fast_splines(flow)
    nsf = zuko.flows.NSF(2, 3)
    nsf.transform.transforms[0].univariate = functools.partial(MonotonicRQSTransform, 1.0)  # positional: unknown
    with pytest.raises(TypeError, match="use_fast_splines"):
        use_fast_splines(nsf)


def test_the_shipped_flow_summaries_equal_zukos(tiny_dataset):
    """``summarize`` and ``posterior_mean_e`` of the shipped checkpoint on real stamps: e within 1e-6, z within
    1e-5 relative of the same head on zuko's own splines (float32 rounding of a softmax summed in another order)."""
    from survey_deblend.evaluation.posterior import flow_head
    from survey_deblend.inference import Predictor
    from survey_deblend.sim.dataset import open_dataset

    predictor = Predictor.from_checkpoint(None, device="cpu")
    fast, plain = flow_head(predictor), flow_head(predictor)
    assert fast.arch.e_temperature != 1.0  # the tempered second pass is exercised
    use_fast_splines(plain, fast=False)
    ds = open_dataset(tiny_dataset)
    normed, mask = predictor.prepare(ds.read("blend", np.arange(600)), tuple(ds.manifest["bands"]),
                                     float(ds.manifest["pixel_scale_arcsec"]))
    mask[::4, 0] = False  # some galaxies without u, as for DES
    latent = predictor.encode_normalized(normed, mask)[0]
    ids = np.arange(len(latent), dtype=np.int64) * 7919 + 5
    mine, ref = fast.summarize(latent, mask, ids, batch_size=256), plain.summarize(latent, mask, ids, batch_size=256)
    assert mine.keys() == ref.keys()
    for key in ("e1_pred", "e2_pred", "e_sigma_pred", "e1_sample", "e2_sample"):
        np.testing.assert_allclose(mine[key], ref[key], rtol=0, atol=1e-6, err_msg=key)
    for key in ("z_pred", "z_sigma_pred", "z_lo", "z_hi"):
        np.testing.assert_allclose(mine[key], ref[key], rtol=1e-5, atol=0, err_msg=key)
    # as with zuko's splines, a galaxy's outputs do not depend on its batch or place in it, to the bit
    shifted = fast.summarize(latent[5:], mask[5:], ids[5:])
    for key in mine:
        np.testing.assert_array_equal(shifted[key], mine[key][5:], err_msg=key)
    mean = fast.posterior_mean_e(latent, mask)
    np.testing.assert_array_equal(mean, np.stack([mine["e1_pred"], mine["e2_pred"]], axis=1))
    np.testing.assert_allclose(mean, plain.posterior_mean_e(latent, mask), rtol=0, atol=1e-6)

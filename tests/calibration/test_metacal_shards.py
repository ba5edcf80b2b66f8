"""The streamed metacal benchmark (``benchmarks/metacal_shards.py``): shards simulated, measured, kept as small
``.npz`` and deleted, resumed by skipping kept shards, and combined into the same figures as one pass over the
same stamps with ``paired_shear_bias``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from survey_deblend.calibration import border_noise_sigma, metacal_response, paired_shear_bias, sim_psf_model
from survey_deblend.config.sim import LsstSimConfig
from survey_deblend.sim.dataset import open_dataset
from survey_deblend.sim.lsst import make_lsst_dataset

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmark scripts import their sibling helper modules
ms = importlib.import_module("metacal_shards")
N, SHEAR, SEEDS = 32, 0.02, [3, 4]


_moments = ms.weighted_moments  # a fast shape estimator (responds to shear, has noise)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    work = tmp_path_factory.mktemp("mcal")
    runs = list(ms.stream(work, N, SEEDS, SHEAR, 0.0, _moments, chunk=16, turn_all_shards=1))
    return work, runs


def test_shards_are_kept_small_and_their_images_deleted_and_a_rerun_skips_them(streamed):
    work, runs = streamed
    assert [seed for seed, _ in runs] == SEEDS and all(t["n_stamps"] == N for _, t in runs)
    kept = ms.finished(work, N, SHEAR)
    assert [p.name for p in kept] == [f"shard-{s}-{N}-0.02.npz" for s in SEEDS]
    assert not list(work.glob("paired-*"))  # the images are gone
    stamp = [p.stat().st_mtime_ns for p in kept]
    assert list(ms.stream(work, N, SEEDS, SHEAR, 0.0, _moments)) == []  # resumed: nothing left to do
    assert [p.stat().st_mtime_ns for p in kept] == stamp
    res = ms.load_results(kept)
    assert len(np.unique(res["pair"])) == 2 * N // 8  # pair ids made global: the shards' ids do not collide
    assert np.all(np.isfinite(res["rotated"][:, :N])) and np.all(np.isnan(res["rotated"][1:, N:]))


def test_the_combined_shards_equal_one_pass_over_the_same_stamps(streamed, tmp_path):
    """Reference: the same two paired sets made whole, metacal run on all their stamps at once, pair ids
    offset by hand, and ``paired_shear_bias`` over the concatenation."""
    work, _ = streamed
    e_raw, e_cal, e_sym, R, g, pair = [], [], [], [], [], []
    for seed in SEEDS:
        cfg = LsstSimConfig(n=N, seed=seed, kind="paired", ring_shear=SHEAR, workers=1)
        ds = open_dataset(make_lsst_dataset(tmp_path / str(seed), config=cfg))
        blend = ds.read("blend", slice(None))
        p = ds.read("pair_id", slice(None)).astype(np.int64)
        sigma = border_noise_sigma(blend)
        noise = ms.pair_noise(p, np.arange(N) % 2, sigma, seed)
        res = metacal_response(blend, sim_psf_model("LSST", ms.BANDS, N), 0.2, _moments, noise_sigma=sigma,
                               noise=noise, symmetrize=True)  # fmt: skip
        e_raw.append(np.stack(_moments(blend, None), 1))
        e_cal.append(res.sheared[0])
        e_sym.append(np.stack([res.e1, res.e2], 1))
        R.append(res.R)
        g.append(np.stack([ds.read("g1_applied", slice(None)), ds.read("g2_applied", slice(None))], 1))
        pair.append(p + 1000 * seed)
    cat = lambda a: np.concatenate(a).astype(np.float64)  # noqa: E731
    pair_all = np.concatenate(pair)
    expect = {"raw": paired_shear_bias(cat(e_raw), cat(g), pair_all),
              "cal": paired_shear_bias(cat(e_cal), cat(g), pair_all, cat(R)),
              "sym_noshear": paired_shear_bias(cat(e_sym), cat(g), pair_all, cat(R))}  # fmt: skip
    got = ms.figures(ms.load_results(ms.finished(work, N, SHEAR)), compare_subset=False)
    for name, ref in expect.items():
        for key in ("m1", "m2", "c1", "c2", "n_pairs"):
            assert got[name][key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), (name, key)
        assert got[name]["m_err"] == pytest.approx(max(ref["m1_err"], ref["m2_err"]), rel=1e-9)
    res = ms.load_results(ms.finished(work, N, SHEAR))  # the moments are exactly equivariant: e(turn) = -e
    np.testing.assert_allclose(res["rotated"][0], -res["sheared"][0], atol=1e-6)

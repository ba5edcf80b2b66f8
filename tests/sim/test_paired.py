"""Paired shear-response sets (+g/-g sharing galaxies, rotations and noise) and sheared DES-like fields."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_deblend.cli import main
from survey_deblend.config.sim import FieldSimConfig, LsstSimConfig
from survey_deblend.shapes import compose_shear
from survey_deblend.sim.dataset import open_dataset
from survey_deblend.sim.field import make_des_field
from survey_deblend.sim.lsst import make_lsst_dataset
from survey_deblend.sim.scenes import draw_scene


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    out = make_lsst_dataset(tmp_path_factory.mktemp("paired"), n=16, seed=9, kind="paired", shard_size=16)
    return open_dataset(out)


def test_plus_and_minus_share_galaxies_and_noise(paired):
    assert paired.manifest["kind"] == "paired" and len(paired) == 16
    noise = paired.read("isolated", slice(None)) - paired.read("clean", slice(None))
    clean = paired.read("clean", slice(None))
    g1, g2 = paired.read("g1_applied", slice(None)), paired.read("g2_applied", slice(None))
    pair = paired.read("pair_id", slice(None))
    for base in (0, 8):
        # variants 0/2 (+g1/-g1) and 4/6 (+g2/-g2) at 0 degrees; 1/3, 5/7 the same turned by 90 degrees
        assert g1[base] == pytest.approx(0.02) and g1[base + 2] == pytest.approx(-0.02)
        assert g2[base + 4] == pytest.approx(0.02) and g2[base + 6] == pytest.approx(-0.02)
        assert np.all(pair[base : base + 8] == pair[base])
        for v in range(2, 8, 2):
            np.testing.assert_allclose(noise[base + v], noise[base], atol=1e-3)  # the same noise realisation
            np.testing.assert_allclose(noise[base + v + 1], noise[base + 1], atol=1e-3)
        np.testing.assert_allclose(noise[base + 1], np.rot90(noise[base], -1, axes=(-2, -1)), atol=1e-3)  # turned
        assert np.abs(clean[base] - clean[base + 2]).max() > 1e-3 * clean[base].max()  # the shear differs
    assert np.abs(noise[0] - noise[8]).max() > 0  # another base scene, another realisation


def test_the_shear_acts_on_the_whole_scene():
    cfg = LsstSimConfig(n=8, seed=3, kind="paired", neighbour_mean=3.0, ring_shear=0.05)
    pair = next(p for p in range(50) if draw_scene(cfg, 8 * p, 0.2).n_neighbours > 0)
    plus, minus = draw_scene(cfg, 8 * pair, 0.2), draw_scene(cfg, 8 * pair + 2, 0.2)  # +g1 and -g1 at 0 degrees
    assert plus.n_neighbours == minus.n_neighbours > 0
    norm = 1 / np.sqrt(1 - 0.05**2)
    # undo each shear: both come from the same unsheared positions
    np.testing.assert_allclose(plus.x / (norm * 1.05), minus.x / (norm * 0.95), atol=1e-9)
    np.testing.assert_allclose(plus.y / (norm * 0.95), minus.y / (norm * 1.05), atol=1e-9)
    pop_p, pop_m = plus.population, minus.population
    e_p = compose_shear(pop_p.e1_intrinsic, pop_p.e2_intrinsic, 0.05, 0.0)
    np.testing.assert_allclose(pop_p.label[0], e_p[0])  # neighbours get the shear too
    np.testing.assert_allclose(pop_p.e1_intrinsic, pop_m.e1_intrinsic)


def test_ring_sets_keep_independent_noise(ring):
    noise = ring.read("isolated", [0, 2]) - ring.read("clean", [0, 2])
    assert np.abs(noise[0] - noise[1]).max() > 0


def test_simulate_lsst_paired_cli(tmp_path, capsys):
    rc = main(["simulate", "lsst", "--out", str(tmp_path / "p"), "--n", "8", "--kind", "paired", "--shear", "0.03"])
    assert rc == 0 and "wrote 8 paired samples" in capsys.readouterr().out
    ds = open_dataset(tmp_path / "p")
    assert ds.manifest["config"]["ring_shear"] == 0.03
    np.testing.assert_allclose(np.abs(ds.read("g1_applied", slice(None)) + ds.read("g2_applied", slice(None))), 0.03,
                               rtol=1e-6)  # fmt: skip
    rc = main(["simulate", "lsst", "--out", str(tmp_path / "q"), "--n", "12", "--kind", "paired"])
    assert rc == 2 and "multiple of 8 for a paired set" in capsys.readouterr().err


def test_a_pair_of_fields_differs_only_in_the_sign_of_the_shear(tmp_path):
    cfg = FieldSimConfig(n_tiles=1, tile_size_pix=200, seed=6, density_per_arcmin2=40.0)
    fields = {}
    for sign in (1, -1):
        paths = make_des_field(tmp_path / f"f{sign}", config=FieldSimConfig(**{**cfg.__dict__, "shear": (0.02 * sign,
                               -0.01 * sign)}))  # fmt: skip
        fields[sign] = pd.read_parquet(paths.truth)
    plus, minus = fields[1], fields[-1]
    np.testing.assert_array_equal(plus["coadd_objects_id"], minus["coadd_objects_id"])
    np.testing.assert_allclose(plus["g1_shear"], 0.02) and np.testing.assert_allclose(minus["g2_shear"], 0.01)
    np.testing.assert_allclose(plus["e1_intrinsic"], minus["e1_intrinsic"])
    e1, _ = compose_shear(plus["e1_intrinsic"], plus["e2_intrinsic"], 0.02, -0.01)
    np.testing.assert_allclose(plus["e1"], e1, atol=1e-9)
    # positions are sheared about the field centre: the separation of far-apart galaxies changes
    shift = np.hypot(plus["ra"] - minus["ra"], plus["dec"] - minus["dec"]) * 3600
    assert shift.max() > 1.0 and np.median(shift) > 0.1


def test_simulate_field_shear_cli(tmp_path, capsys):
    args = ["simulate", "field", "--out", str(tmp_path), "--tiles", "1", "--tile-size", "100", "--density", "5"]
    assert main([*args, "--shear", "0.02,-0.01"]) == 0
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert np.allclose(truth["g1_shear"], 0.02) and np.allclose(truth["g2_shear"], -0.01)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*args, "--shear", "0.02"])
    assert exc.value.code == 2 and "G1,G2" in capsys.readouterr().err
    assert main([*args, "--shear", "0.3,0"]) == 2 and "|g| < 0.2" in capsys.readouterr().err


def test_a_wider_stamp_with_the_same_neighbour_field_holds_the_same_scenes(paired, tmp_path):
    """``neighbour_field_pix``: the paired set rendered 8 pixels wider on every side (metacal's margin) is the same
    scenes: the same labels, and the central 45 pixels of its blends' noiseless light are the 45-pixel set's."""
    wide = open_dataset(make_lsst_dataset(tmp_path, config=LsstSimConfig(
        n=16, seed=9, kind="paired", shard_size=16, stamp_size=61, neighbour_field_pix=45)))  # fmt: skip
    assert wide.read("blend", slice(0, 1)).shape[-1] == 61
    for key in ("e1", "e2", "g1_applied", "pair_id", "snr"):
        np.testing.assert_allclose(wide.read(key, slice(None)), paired.read(key, slice(None)), rtol=1e-5)

    def light(ds):  # the blend without its noise (isolated = clean + noise)
        return ds.read("blend", slice(None)) - ds.read("isolated", slice(None)) + ds.read("clean", slice(None))

    narrow, core = light(paired), light(wide)[..., 8:-8, 8:-8]
    np.testing.assert_allclose(core, narrow, atol=2e-3 * np.abs(narrow).max())

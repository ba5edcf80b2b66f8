"""Shear-response (ring) sets: rotated pairs under +-g on each component cancel shape noise."""

from __future__ import annotations

import numpy as np
import pytest

from survey_deblend.shapes import compose_shear


def test_ring_pairs_cancel_intrinsic_shapes(ring):
    assert ring.manifest["kind"] == "ring" and len(ring) == 32
    read = {
        name: ring.read(name, slice(None)).astype(float) for name in ring.fields if ring.fields[name]["shape"] == [32]
    }
    np.testing.assert_array_equal(read["pair_id"], np.arange(32) // 8)
    assert abs(read["e1_intrinsic"].mean()) < 1e-7 and abs(read["e2_intrinsic"].mean()) < 1e-7
    for pid in range(4):
        sel = read["pair_id"] == pid
        e = read["e1_intrinsic"][sel] + 1j * read["e2_intrinsic"][sel]
        assert np.allclose(e[0::2], e[0]) and np.allclose(e[1::2], -e[0])  # 0 and 90 degrees
        assert np.ptp(read["z"][sel]) == 0 and np.ptp(read["n_neighbours"][sel]) == 0  # the same galaxy
    g = np.stack([read["g1_applied"], read["g2_applied"]], axis=1)
    expected = np.array([[0.02, 0], [0.02, 0], [-0.02, 0], [-0.02, 0], [0, 0.02], [0, 0.02], [0, -0.02], [0, -0.02]])
    np.testing.assert_allclose(g, np.tile(expected, (4, 1)), atol=1e-7)
    e1, e2 = compose_shear(read["e1_intrinsic"], read["e2_intrinsic"], read["g1_applied"], read["g2_applied"])
    np.testing.assert_allclose(read["e1"], e1, atol=1e-6)
    np.testing.assert_allclose(read["e2"], e2, atol=1e-6)


def test_ring_labels_respond_to_the_applied_shear(ring):
    e1, g1 = ring.read("e1", slice(None)), ring.read("g1_applied", slice(None))
    plus, minus = e1[g1 > 0].mean(), e1[g1 < 0].mean()
    response = (plus - minus) / (2 * 0.02)
    # Shape noise is gone: to first order in g the mean label moves by g times <1 - Re(e^2)> of the ring.
    e = ring.read("e1_intrinsic", slice(None)) + 1j * ring.read("e2_intrinsic", slice(None))
    expected = np.mean(1 - (e[g1 > 0] ** 2).real)
    assert response == pytest.approx(expected, abs=0.01) and abs(response - 1) > 0.01 or abs(expected - 1) < 0.01
    assert abs(ring.read("e2", slice(None))[g1 != 0].mean()) < 1e-6  # c-like term cancels exactly


def test_ring_rotation_turns_the_scene(ring):
    """Variant 1 is variant 0 rotated by 90 degrees (then both get the same +g1): its second moments swap."""
    clean = ring.read("clean", [0, 1])[:, 3].astype(float)
    y, x = np.indices(clean[0].shape) - 22

    def quadrupole(img):
        w = img / img.sum()
        return (w * x**2).sum() - (w * y**2).sum()

    q0, q1 = quadrupole(clean[0]), quadrupole(clean[1])
    e1 = ring.read("e1", [0, 1])
    assert np.sign(q0) == np.sign(e1[0]) or abs(e1[0]) < 0.03
    assert np.sign(q1) == np.sign(e1[1]) or abs(e1[1]) < 0.03
    assert ring.read("blend", 0).shape == (6, 45, 45)
    with pytest.raises(IndexError):
        ring.read("blend", 32)

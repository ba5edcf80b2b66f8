"""The on-disk data set: manifest, shards, lazy reads, determinism across worker counts."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from survey_deblend.errors import InputError, SurveyDeblendError
from survey_deblend.sim.dataset import open_dataset, write_manifest, write_shard
from survey_deblend.sim.lsst import make_lsst_dataset, stamps_frame
from survey_deblend.surveys import LSST_BANDS


def test_manifest_describes_the_data(blends):
    m = blends.manifest
    assert len(blends) == m["n_samples"] == 40
    assert m["bands"] == list(LSST_BANDS) and m["stamp_size"] == 45 and m["pixel_scale_arcsec"] == 0.2
    assert m["seed"] == 11 and m["config"]["n"] == 40 and m["kind"] == "blends"
    assert set(m["psf_fwhm_arcsec"]) == set(LSST_BANDS)
    assert [s["n"] for s in m["shards"]] == [16, 16, 8] and [s["start"] for s in m["shards"]] == [0, 16, 32]
    assert m["fields"]["blend"] == {"shape": [40, 6, 45, 45], "dtype": "float32"}
    assert m["fields"]["des_blend"] == {"shape": [40, 5, 45, 45], "dtype": "float32"}
    assert m["des"]["pixel_scale_arcsec"] == pytest.approx(0.2637) and m["des"]["bands"] == ["g", "r", "i", "z", "Y"]
    # each set of stamps says its photometric frame: LSST native electrons, DES coadd units at zeropoint 30
    lsst, des = stamps_frame(m), stamps_frame(m, "des_")
    assert (lsst.survey, lsst.bands, lsst.zeropoints) == ("LSST", LSST_BANDS, None) and m["zeropoints"] is None
    assert (des.survey, des.pixel_scale_arcsec, des.zeropoints) == ("DES", m["des"]["pixel_scale_arcsec"], (30.0,) * 5)
    old = {k: v for k, v in m["des"].items() if k not in ("zeropoints", "survey")}  # a manifest from before
    assert stamps_frame({**m, "des": old}, "des_") == des
    for name in ("e1", "e2", "z", "mag_i", "snr", "n_neighbours", "blendedness"):
        assert m["fields"][name]["shape"] == [40]
    shard = blends.path / m["shards"][1]["name"]
    for name, spec in m["fields"].items():
        arr = np.load(shard / f"{name}.npy", mmap_mode="r")
        assert arr.dtype.name == spec["dtype"] and list(arr.shape[1:]) == spec["shape"][1:]


def test_reads_across_shards_in_any_order(blends):
    whole = blends.read("z", slice(None))
    assert whole.shape == (40,)
    idx = np.array([39, 0, 17, 15, 16, 3])
    np.testing.assert_array_equal(blends.read("z", idx), whole[idx])
    np.testing.assert_array_equal(blends.read("blend", [33, 2])[1], blends.read("blend", 2))
    assert blends.read("blend", slice(10, 20)).shape == (10, 6, 45, 45)
    assert blends.read("z", -1) == whole[-1]
    with pytest.raises(IndexError):
        blends.read("z", [40])
    with pytest.raises(KeyError, match="no field 'nope'"):
        blends.read("nope", 0)


def test_pickles_without_open_maps(blends):
    blends.read("clean", 0)  # opens a memory map
    clone = pickle.loads(pickle.dumps(blends))
    np.testing.assert_array_equal(clone.read("clean", [5, 30]), blends.read("clean", [5, 30]))


def test_not_a_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="no manifest.json"):
        open_dataset(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        open_dataset(tmp_path)


def test_shard_counts_must_match_manifest(tmp_path):
    info = write_shard(tmp_path, 0, 0, {"x": np.arange(3, dtype=np.float32)})
    write_manifest(tmp_path, {"n_samples": 4, "fields": {"x": {"shape": [4], "dtype": "float32"}},
                              "shards": [info.to_dict()]})  # fmt: skip
    with pytest.raises(InputError, match="shards hold 3 samples"):
        open_dataset(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["format_version"] == 1


def test_same_seed_same_data_whatever_the_workers(tmp_path):
    one = open_dataset(make_lsst_dataset(tmp_path / "w1", n=12, seed=3, shard_size=5, workers=1))
    two = open_dataset(make_lsst_dataset(tmp_path / "w2", n=12, seed=3, shard_size=4, workers=2))
    other = open_dataset(make_lsst_dataset(tmp_path / "s4", n=12, seed=4, shard_size=12, workers=1))
    for name in one.fields:
        np.testing.assert_array_equal(one.read(name, slice(None)), two.read(name, slice(None)), err_msg=name)
    assert not np.array_equal(one.read("blend", slice(None)), other.read("blend", slice(None)))


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SurveyDeblendError, match="refusing"):
        make_lsst_dataset(tmp_path, n=2, seed=0)


def test_interrupted_generation_resumes_with_its_finished_shards(tmp_path, monkeypatch):
    import survey_deblend.sim.lsst as lsst

    real = lsst._generate_shard

    def dies_on_shard_2(out_dir, cfg, shard, start, n):
        if shard == 2:
            raise KeyboardInterrupt
        return real(out_dir, cfg, shard, start, n)

    monkeypatch.setattr(lsst, "_generate_shard", dies_on_shard_2)
    with pytest.raises(KeyboardInterrupt):
        make_lsst_dataset(tmp_path / "ds", n=10, seed=8, shard_size=4)
    assert not (tmp_path / "ds" / "manifest.json").exists()
    first = (tmp_path / "ds" / "shard-00000" / "blend.npy").stat().st_mtime_ns
    monkeypatch.setattr(lsst, "_generate_shard", real)
    resumed = open_dataset(make_lsst_dataset(tmp_path / "ds", n=10, seed=8, shard_size=4))
    assert (tmp_path / "ds" / "shard-00000" / "blend.npy").stat().st_mtime_ns == first  # kept, not redone
    fresh = open_dataset(make_lsst_dataset(tmp_path / "fresh", n=10, seed=8, shard_size=4))
    for name in fresh.fields:
        np.testing.assert_array_equal(resumed.read(name, slice(None)), fresh.read(name, slice(None)), err_msg=name)
    # A different data set in the same folder starts over instead of mixing shards.
    other = open_dataset(make_lsst_dataset(tmp_path / "ds", n=10, seed=9, shard_size=4))
    assert other.manifest["seed"] == 9 and not np.array_equal(
        other.read("z", slice(None)), fresh.read("z", slice(None))
    )

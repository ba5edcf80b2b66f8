"""``survey-deblend simulate``: real runs on tiny sizes, one-line errors with exit code 2."""

from __future__ import annotations

from survey_deblend.cli import main
from survey_deblend.sim.dataset import open_dataset


def test_simulate_lsst_ring(tmp_path, capsys):
    rc = main(["simulate", "lsst", "--out", str(tmp_path / "r"), "--n", "8", "--seed", "2", "--kind", "ring"])
    assert rc == 0 and "wrote 8 ring samples" in capsys.readouterr().out
    ds = open_dataset(tmp_path / "r")
    assert len(ds) == 8 and ds.manifest["config"]["kind"] == "ring" and "pair_id" in ds.fields


def test_simulate_lsst_bad_values_exit_2(tmp_path, capsys):
    rc = main(["simulate", "lsst", "--out", str(tmp_path / "r"), "--n", "6", "--kind", "ring"])
    err = capsys.readouterr().err
    assert rc == 2 and "n = 6: must be a multiple of 8" in err and err.count("\n") == 1
    rc = main(["simulate", "lsst", "--out", str(tmp_path / "r"), "--set", "lsst.stamp_sise=45"])
    assert rc == 2 and "unknown key 'lsst.stamp_sise'" in capsys.readouterr().err


def test_simulate_field(tmp_path, capsys):
    rc = main(["simulate", "field", "--out", str(tmp_path), "--tiles", "1", "--tile-size", "128", "--seed", "1"])
    assert rc == 0 and "1 tiles x 5 bands" in capsys.readouterr().out
    assert len(list((tmp_path / "tiles").glob("DES*_r0001p01_*.fits"))) == 5
    assert (tmp_path / "im3shape.fits").is_file() and (tmp_path / "truth.parquet").is_file()


def test_rerunning_a_field_replaces_its_tiles(tmp_path, capsys):
    args = ["simulate", "field", "--out", str(tmp_path), "--tile-size", "100", "--density", "5"]
    assert main([*args, "--tiles", "3"]) == 0
    assert len(list((tmp_path / "tiles").glob("*.fits"))) == 15
    assert main([*args, "--tiles", "1"]) == 0
    assert len(list((tmp_path / "tiles").glob("*.fits"))) == 5  # no stale tiles for a tile source to pick up


def test_shipped_sim_config_loads_and_flags_override_it(tmp_path):
    from pathlib import Path

    from survey_deblend.config import load
    from survey_deblend.config.sim import SimConfig

    path = Path(__file__).resolve().parents[2] / "pipelines" / "sim_lsst.yaml"
    cfg = load(SimConfig, path)
    assert cfg.lsst.stamp_size == 45 and cfg.lsst.central_mag_max == 25.3 and cfg.field.n_tiles == 2
    rc = main(["simulate", "lsst", "--config", str(path), "--out", str(tmp_path / "d"), "--n", "4", "--workers", "1"])
    ds = open_dataset(tmp_path / "d")
    assert rc == 0 and len(ds) == 4 and ds.manifest["config"]["neighbour_mean"] == cfg.lsst.neighbour_mean

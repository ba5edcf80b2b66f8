"""Configuration loading: safe YAML, overrides, one-line errors that name the key or the file."""

from pathlib import Path

import pytest

from survey_deblend.config import ConfigError, load
from survey_deblend.config.run import RunConfig

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def test_defaults_and_overrides(tmp_path):
    cfg = load(RunConfig, None, ["catalog.cuts.snr_w_min=30", "output.out=" + str(tmp_path)])
    assert cfg.catalog.cuts.snr_w_min == 30.0
    assert cfg.catalog.cuts.error_flag_zero is True
    assert cfg.output.out == tmp_path


def test_exponent_without_dot_is_a_number():
    assert load(RunConfig, None, ["catalog.cuts.snr_w_min=1e9"]).catalog.cuts.snr_w_min == 1e9


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("catalog:\n  cuts:\n    snr_min: 20\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'catalog\.cuts\.snr_min'"):
        load(RunConfig, path)


def test_wrong_type_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output:\n  partition_rows: many\n")
    with pytest.raises(ConfigError, match=r"output\.partition_rows: expected an integer"):
        load(RunConfig, path)


def test_literal_choices_are_checked():
    with pytest.raises(ConfigError, match=r"catalog\.match: expected one of 'id', 'sky'"):
        load(RunConfig, None, ["catalog.match=nearest"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: configuration file not found"):
        load(RunConfig, tmp_path / "nope.yaml")


def test_unsafe_yaml_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(RunConfig, path)


@pytest.mark.parametrize("name", ["des_sva1.yaml", "demo.yaml"])
def test_shipped_pipelines_load(name):
    cfg = load(RunConfig, PIPELINES / name)
    assert cfg.catalog.cuts.snr_w_min == 20.0

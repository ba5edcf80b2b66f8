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


def test_typed_values_never_pass_through_yaml():
    """Command-line options arrive as Python values: '#', digits and 'yes' stay part of a path."""
    values = {"catalog.shear": Path("shear #2.fits"), "catalog.gold": Path("yes"), "output.out": Path("2024"),
              "output.progress": False, "cluster.n_workers": 3}  # fmt: skip
    cfg = load(RunConfig, None, ["output.partition_rows=7"], values=values)
    assert cfg.catalog.shear == Path("shear #2.fits") and cfg.catalog.gold == Path("yes")
    assert cfg.output.out == Path("2024") and cfg.output.progress is False and cfg.cluster.n_workers == 3
    assert cfg.output.partition_rows == 7  # the --set layer is kept under the typed one
    with pytest.raises(ConfigError, match=r"cluster\.n_workers: expected an integer"):
        load(RunConfig, None, values={"cluster.n_workers": "three"})


def test_set_parses_yaml_and_says_how_to_keep_text():
    with pytest.raises(ConfigError, match=r"output\.out: expected a path, got 2024 \(YAML read it as int; quote"):
        load(RunConfig, None, ["output.out=2024"])
    with pytest.raises(ConfigError, match=r"catalog\.gold: expected a path, got True \(YAML read it as bool"):
        load(RunConfig, None, ["catalog.gold=yes"])
    assert load(RunConfig, None, ['output.out="2024"']).output.out == Path("2024")
    assert load(RunConfig, None, ["output.out=2024"], values={"output.out": Path("x")}).output.out == Path("x")


def test_a_partial_section_keeps_the_other_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("catalog:\n  cuts:\n    snr_w_min: 30\n")
    cfg = load(RunConfig, path, ["catalog.cuts.e_max=0.8"])
    assert (cfg.catalog.cuts.snr_w_min, cfg.catalog.cuts.e_max, cfg.catalog.cuts.flags_i_max) == (30.0, 0.8, 3)
    assert cfg.catalog.chunk_rows == RunConfig().catalog.chunk_rows


def test_config_hash_follows_the_hashed_metadata():
    """Every field marked NOT_HASHED leaves the run's configuration hash alone; every other field moves it."""
    import dataclasses

    from survey_deblend.config.hashing import is_hashed
    from survey_deblend.pipeline.manifest import config_hash

    base_cfg = RunConfig()
    base = config_hash(base_cfg, "m")
    changed = {int: 7, float: 0.25, bool: None, str: "other", Path: Path("elsewhere")}
    checked = 0
    for section in dataclasses.fields(RunConfig):
        sub = getattr(base_cfg, section.name)
        for f in dataclasses.fields(sub):
            value = getattr(sub, f.name)
            new = (not value) if isinstance(value, bool) else changed.get(type(value))
            if new is None or new == value or f.name in ("match", "scheduler"):
                continue
            try:
                other = dataclasses.replace(base_cfg, **{section.name: dataclasses.replace(sub, **{f.name: new})})
            except (TypeError, ValueError):
                continue
            moved = config_hash(other, "m") != base
            assert moved == (is_hashed(section) and is_hashed(f)), f"{section.name}.{f.name}"
            checked += 1
    assert checked > 15


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("output.partition_rows=0", "output.partition_rows must be at least 1, got 0"),
        ("model.batch_size=0", "model.batch_size must be at least 1, got 0"),
        ("model.stamp_size_pix=-3", "model.stamp_size_pix must be at least 3"),
        ("model.device=tpu", "model.device must be cpu, cuda, cuda:N, mps or null, got 'tpu'"),
        ("catalog.cuts.snr_w_min=[1", "override 'catalog.cuts.snr_w_min=[1': the value is not valid YAML"),
    ],
)
def test_values_that_would_fail_later_are_refused_at_load(override, message):
    """Found by the bad-input fuzz: these failed inside partitions (or with a traceback) instead of at the edge."""
    with pytest.raises(ConfigError) as info:
        load(RunConfig, None, [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_binary_configuration_file_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model:\n  batch_size: 8  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text"):
        load(RunConfig, path)


def test_flow_settings_leave_the_other_stages_fingerprints_alone():
    """Changing the flow head's settings must not stop the VAE, deblender or regressor stages from resuming."""
    import dataclasses

    from survey_deblend.config.training import TrainingConfig
    from survey_deblend.training.stages import _fingerprint

    base = TrainingConfig()
    flow_changed = dataclasses.replace(base, flow=dataclasses.replace(base.flow, lr=1e-2))
    for stage in ("vae", "deblender", "regressor"):
        assert _fingerprint(base, stage) == _fingerprint(flow_changed, stage)
    assert _fingerprint(base, "vae") != _fingerprint(dataclasses.replace(base, seed=1), "vae")

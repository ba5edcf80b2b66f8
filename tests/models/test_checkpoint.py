"""The checkpoint format: weights_only round trip, metadata, refusal of files needing arbitrary unpickling."""

from __future__ import annotations

import pickle

import pytest
import torch

from survey_deblend.errors import SurveyDeblendError
from survey_deblend.models.checkpoint import (
    Checkpoint,
    file_hash,
    load_checkpoint,
    save_checkpoint,
    write_untrained_checkpoint,
)
from survey_deblend.models.networks import Architecture, Encoder


class NotAllowed:
    """Any custom class: unpickling it would run arbitrary code paths."""

    def __init__(self) -> None:
        self.value = 3


def test_round_trip_with_weights_only(tmp_path, untrained_checkpoint):
    raw = torch.load(untrained_checkpoint, weights_only=True)  # the file itself is weights_only-safe
    assert set(raw["state"]) == {"vae_encoder", "decoder", "deblender", "regressor"}
    ckpt = load_checkpoint(untrained_checkpoint)
    meta = ckpt.metadata
    assert meta["bands"] == ["u", "g", "r", "i", "z", "y"] and meta["stamp_size"] == 45
    assert meta["latent_dim"] == 32 and len(meta["m_b"]) == 6 and meta["pixel_scale_arcsec"] == 0.2
    for key in ("architecture", "git_commit", "training_data", "metrics", "psf_fwhm_arcsec", "beta"):
        assert key in meta
    again = save_checkpoint(tmp_path / "copy.pt", ckpt)
    reloaded = load_checkpoint(again)
    for name in ckpt.state:
        for k, v in ckpt.state[name].items():
            assert torch.equal(v, reloaded.state[name][k])
    enc = reloaded.build("deblender")
    x = torch.randn(2, 6, 45, 45)
    m = torch.ones(2, 6)
    torch.testing.assert_close(enc(x, m)[0], ckpt.build("deblender")(x, m)[0])


def test_untrained_checkpoint_is_seeded(tmp_path):
    a = load_checkpoint(write_untrained_checkpoint(tmp_path / "a.pt", seed=1))
    b = load_checkpoint(write_untrained_checkpoint(tmp_path / "b.pt", seed=1))
    c = load_checkpoint(write_untrained_checkpoint(tmp_path / "c.pt", seed=2))
    w = "conv1.weight"
    assert torch.equal(a.state["deblender"][w], b.state["deblender"][w])
    assert not torch.equal(a.state["deblender"][w], c.state["deblender"][w])
    assert file_hash(tmp_path / "a.pt") != file_hash(tmp_path / "c.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_file_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "survey-deblend-checkpoint", "version": 1, "metadata": NotAllowed(), "state": {}}, path)
    with pytest.raises(SurveyDeblendError, match="refused.*unpickling"):
        load_checkpoint(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(NotAllowed()))
    with pytest.raises(SurveyDeblendError, match=str(plain.name)):
        load_checkpoint(plain)


def test_wrong_or_missing_files_give_one_line_errors(tmp_path):
    with pytest.raises(SurveyDeblendError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(SurveyDeblendError, match="not a survey-deblend checkpoint"):
        load_checkpoint(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(SurveyDeblendError, match="garbage.pt"):
        load_checkpoint(garbage)
    arch = Architecture()
    incomplete = Checkpoint(metadata={"bands": []}, state={"deblender": Encoder(arch).state_dict()})
    with pytest.raises(SurveyDeblendError, match="lacks"):
        save_checkpoint(tmp_path / "x.pt", incomplete)


def test_build_names_missing_stage(untrained_checkpoint):
    ckpt = load_checkpoint(untrained_checkpoint)
    del ckpt.state["regressor"]
    with pytest.raises(SurveyDeblendError, match="no 'regressor' weights"):
        ckpt.build("regressor")

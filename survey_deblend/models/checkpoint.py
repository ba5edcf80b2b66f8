"""The checkpoint format: one file, readable with ``torch.load(..., weights_only=True)`` (DESIGN.md).

A checkpoint is a plain dict ``{"format", "version", "metadata", "state"}``: ``state`` holds the state dicts of
``vae_encoder``, ``decoder``, ``deblender`` and ``regressor`` (a stage still in training may lack some), and
optionally ``flow`` (the posterior head, ``models.flow``; its hyper-parameters in ``metadata["flow"]``);
``metadata`` holds only plain types: bands, pixel scale, stamp size, latent size, ``M_b``, architecture,
training-data description, git commit, held-out metrics, PSF FWHM per band. A file that would need arbitrary
unpickling is refused with a ``SurveyDeblendError``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from survey_deblend.errors import SurveyDeblendError
from survey_deblend.models.networks import Architecture, Decoder, Encoder, Regressor
from survey_deblend.preprocess import DEFAULT_BETA, MODEL_BANDS

FORMAT = "survey-deblend-checkpoint"
VERSION = 1
NETWORK_NAMES = ("vae_encoder", "decoder", "deblender", "regressor", "flow")
REQUIRED_METADATA = ("bands", "pixel_scale_arcsec", "stamp_size", "latent_dim", "m_b", "beta", "architecture")


@dataclass
class Checkpoint:
    """State dicts plus metadata, as read from or written to one file."""

    metadata: dict[str, Any]
    state: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def architecture(self) -> Architecture:
        """The network hyper-parameters."""
        return Architecture.from_dict(self.metadata["architecture"])

    def build(self, name: str) -> torch.nn.Module:
        """Network ``name`` (``vae_encoder``, ``decoder``, ``deblender``, ``regressor``, ``flow``), eval mode."""
        if name == "flow":
            return self.build_flow()
        cls = {"vae_encoder": Encoder, "deblender": Encoder, "decoder": Decoder, "regressor": Regressor}[name]
        module = cls(self.architecture)
        if name not in self.state:
            raise SurveyDeblendError(f"checkpoint has no '{name}' weights (trained stages: {sorted(self.state)})")
        module.load_state_dict(self.state[name])
        return module.eval()

    @property
    def has_flow(self) -> bool:
        """Whether the checkpoint carries a trained flow head."""
        return "flow" in self.state and isinstance(self.metadata.get("flow"), dict)

    def build_flow(self) -> torch.nn.Module:
        """The flow head (``models.flow.FlowHead``) from ``metadata["flow"]["architecture"]``, eval mode."""
        from survey_deblend.models.flow import FlowArchitecture, FlowHead  # zuko only where a flow is used

        if not self.has_flow:
            raise SurveyDeblendError(f"checkpoint has no 'flow' head (trained stages: {sorted(self.state)}); "
                                     "run 'survey-deblend train flow'")
        try:
            head = FlowHead(FlowArchitecture.from_dict(self.metadata["flow"]["architecture"]))
            head.load_state_dict(self.state["flow"])
        except (KeyError, TypeError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SurveyDeblendError(f"checkpoint 'flow' head does not match its metadata ({first})") from None
        return head.eval()


def git_commit() -> str:
    """The commit of the source tree, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def base_metadata(
    arch: Architecture,
    m_b: list[float],
    pixel_scale_arcsec: float = 0.2,
    survey: str = "LSST",
    psf_fwhm_arcsec: dict[str, float] | None = None,
    beta: float = DEFAULT_BETA,
) -> dict[str, Any]:
    """The metadata every checkpoint carries; training adds data description and metrics."""
    return {
        "bands": list(MODEL_BANDS),
        "survey": survey,
        "pixel_scale_arcsec": float(pixel_scale_arcsec),
        "stamp_size": int(arch.stamp_size),
        "latent_dim": int(arch.latent_dim),
        "m_b": [float(v) for v in m_b],
        "beta": float(beta),
        "architecture": arch.to_dict(),
        "psf_fwhm_arcsec": {k: float(v) for k, v in (psf_fwhm_arcsec or {}).items()},
        "git_commit": git_commit(),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_data": {},
        "metrics": {},
        "trained": False,
    }


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """Write atomically (temporary file, then rename); tensors are moved to CPU first."""
    missing = [k for k in REQUIRED_METADATA if k not in checkpoint.metadata]
    if missing:
        raise SurveyDeblendError(f"checkpoint metadata lacks '{missing[0]}'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        name: {k: v.detach().to("cpu").contiguous() for k, v in sd.items()} for name, sd in checkpoint.state.items()
    }
    payload = {"format": FORMAT, "version": VERSION, "metadata": checkpoint.metadata, "state": state}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True``; anything else is a one-line ``SurveyDeblendError``."""
    path = Path(path)
    if not path.is_file():
        raise SurveyDeblendError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise SurveyDeblendError(
            f"{path}: refused, the file needs unpickling of arbitrary objects (not a survey-deblend checkpoint)"
        ) from None
    except Exception as exc:  # torch raises many kinds on a corrupt or foreign file; all mean the same here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SurveyDeblendError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SurveyDeblendError(f"{path}: not a survey-deblend checkpoint (no '{FORMAT}' format tag)")
    if payload.get("version") != VERSION:
        raise SurveyDeblendError(f"{path}: checkpoint version {payload.get('version')} (this code reads {VERSION})")
    metadata = payload.get("metadata")
    missing = [k for k in REQUIRED_METADATA if not isinstance(metadata, dict) or k not in metadata]
    if missing:
        raise SurveyDeblendError(f"{path}: checkpoint metadata lacks '{missing[0]}'")
    return Checkpoint(metadata=metadata, state=dict(payload.get("state") or {}))


def file_hash(path: str | Path) -> str:
    """Short SHA-256 of a file: the model id written next to every prediction."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def write_untrained_checkpoint(path: str | Path, seed: int = 0, arch: Architecture | None = None) -> Path:
    """A complete checkpoint with random weights (for tests of other stages); ``M_b`` are plausible LSST values."""
    arch = arch or Architecture()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        state = {
            "vae_encoder": Encoder(arch).state_dict(),
            "decoder": Decoder(arch).state_dict(),
            "deblender": Encoder(arch).state_dict(),
            "regressor": Regressor(arch).state_dict(),
        }
    finally:
        torch.random.set_rng_state(generator_state)
    from survey_deblend.surveys import band_facts

    m_b = [200.0, 1500.0, 3000.0, 3000.0, 2000.0, 800.0]
    psf = {b: band_facts("LSST", b).psf_fwhm_arcsec for b in MODEL_BANDS}
    metadata = base_metadata(arch, m_b, psf_fwhm_arcsec=psf)
    metadata["training_data"] = {"description": "untrained: random weights for tests", "seed": seed}
    metadata["train_stats"] = {"median_max": m_b}
    return save_checkpoint(path, Checkpoint(metadata=metadata, state=state))


def plain_metadata(obj: Any) -> Any:
    """JSON-like plain types (paths to strings, tuples to lists) for ``weights_only`` metadata."""
    if isinstance(obj, dict):
        return {str(k): plain_metadata(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_metadata(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj

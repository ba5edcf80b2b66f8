"""The inputs of a run, checked once at the edge: the catalogs, the checkpoint, the output folder.

``check_inputs(config)`` is what the command line calls before any cluster starts; ``pipeline.run`` calls it
only when its caller has not (a notebook, a test) and otherwise trusts the ``RunInputs`` it is handed. Each
check is written once: a catalog by the catalog stage's ``open_catalog``, the checkpoint by ``model_info``,
the folder by ``check_writable``; nothing downstream repeats them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from survey_deblend.config.run import RunConfig
from survey_deblend.errors import ConfigError, InputError, SurveyDeblendError
from survey_deblend.pipeline.manifest import check_writable


@dataclass(frozen=True)
class ModelInfo:
    """What the client needs to know of the checkpoint: its absolute path, id (file hash) and field of view."""

    path: Path
    model_id: str
    pixel_scale_arcsec: float
    stamp_size: int


@dataclass(frozen=True)
class RunInputs:
    """Proof that ``check_inputs`` passed for a configuration, with what it read on the way (the model)."""

    model: ModelInfo


def model_info(checkpoint: Path | None) -> ModelInfo:
    """Load the checkpoint's metadata on the client (the workers load the networks); one line if it cannot be.

    The path is made absolute here, so that workers started in another folder find the same file.
    """
    from survey_deblend.inference import default_checkpoint
    from survey_deblend.models.checkpoint import file_hash, load_checkpoint

    path = default_checkpoint() if checkpoint is None else Path(checkpoint).resolve()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise InputError(f"model checkpoint {checkpoint or path}: not found or not readable")
    try:
        metadata = load_checkpoint(path).metadata
    except SurveyDeblendError:
        raise
    except Exception as exc:  # a corrupt file is the user's to fix: one line, not a traceback
        raise InputError(f"model checkpoint {path}: cannot be loaded ({type(exc).__name__}: {exc})") from None
    return ModelInfo(path, file_hash(path), float(metadata["pixel_scale_arcsec"]), int(metadata["stamp_size"]))


def check_catalogs(config: RunConfig) -> None:
    """The shear catalog is given, and every catalog given opens as FITS or Parquet (header read, no rows)."""
    from survey_deblend.catalog import open_catalog

    cfg = config.catalog
    if cfg.shear is None:
        raise ConfigError("catalog.shear: no shear catalog given (--catalog FILE)")
    for path, role in ((cfg.shear, "im3shape catalog"), (cfg.gold, "gold catalog"), (cfg.wlinfo, "wlinfo")):
        if path is not None:
            open_catalog(path, role)


def check_inputs(config: RunConfig) -> RunInputs:
    """Check everything a run reads or writes before any work: catalogs, checkpoint, output folder."""
    check_catalogs(config)
    model = model_info(config.model.checkpoint)
    check_writable(Path(config.output.out))
    return RunInputs(model=model)

"""The run manifest: what produced an output folder, and whether a new run may write into it.

The configuration hash covers what changes the rows (catalog files and cuts, the image source, the model file,
stamp size, partition size) and not what only changes how they are computed (cluster, concurrency, progress),
so a resumed run on another cluster still matches. Which is which is marked on the config dataclasses' fields
(``config.hashing.NOT_HASHED``), not listed here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import survey_deblend
from survey_deblend.config.hashing import hashed_values
from survey_deblend.config.run import RunConfig
from survey_deblend.errors import InputError, SurveyDeblendError
from survey_deblend.pipeline.plan import MANIFEST_NAME, PART_PREFIX, ResumePlan, write_json_atomic


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value.resolve())
    return value


def config_dict(config: RunConfig) -> dict[str, Any]:
    """The configuration as plain JSON values (paths made absolute)."""
    return _jsonable(dataclasses.asdict(config))


def config_hash(config: RunConfig, model_id: str) -> str:
    """A short hash of everything that determines the output rows (the model by its file hash)."""
    data = _jsonable(hashed_values(config))
    data["model_id"] = model_id
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of an output folder, or None when there is none."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise InputError(f"{path}: not valid JSON (remove it or use --overwrite)") from None


def write_manifest(out_dir: str | Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(Path(out_dir) / MANIFEST_NAME, manifest)


def check_writable(out_dir: Path) -> None:
    """Create ``out_dir`` if needed and prove it is writable, or raise one line naming it."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output folder {out_dir} is not writable ({exc.strerror or exc})") from None


def prepare_output(out_dir: Path, config: RunConfig, model_id: str, digest: str) -> dict[str, Any]:
    """Start or resume the run in ``out_dir``; returns the manifest (state ``running``) with its ``run_id``.

    A folder holding a run of another configuration is refused unless ``output.overwrite`` (then its parts,
    markers and manifest are removed, nothing else). A folder with part files but no manifest is refused too.
    The folder exists and is writable: ``pipeline.inputs.check_inputs`` saw to it.
    """
    plan = ResumePlan(out_dir)
    previous = read_manifest(out_dir)
    if config.output.overwrite:
        plan.reset()
        previous = None
    elif previous is not None and previous.get("config_hash") != digest:
        raise SurveyDeblendError(
            f"{out_dir} holds a run of another configuration (config hash {previous.get('config_hash')}, this "
            f"run {digest}); use --overwrite to start over or choose another --out"
        )
    elif previous is None and any(out_dir.glob(f"{PART_PREFIX}*.parquet")):
        raise SurveyDeblendError(f"{out_dir} holds part files but no {MANIFEST_NAME}; use --overwrite or another --out")
    plan.clean_tmp()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest = dict(previous or {})
    manifest.update(
        {
            "run_id": (previous or {}).get("run_id") or f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{digest[:8]}",
            "config_hash": digest,
            "model": model_id,
            "config": config_dict(config),
            "state": "running",
            "survey_deblend_version": survey_deblend.__version__,
            "started": (previous or {}).get("started", now),
            "attempts": int((previous or {}).get("attempts", 0)) + 1,
            "pid": os.getpid(),
        }
    )
    write_manifest(out_dir, manifest)
    return manifest

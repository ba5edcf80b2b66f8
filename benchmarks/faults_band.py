"""The band-fault rows of the fault matrix (``benchmarks/faults.py``, issue 14 §2): shapes under faults, like for like.

A galaxy that lost a band under faults is predicted from its other bands; the question is whether its shape then
moves by what losing that band costs the model and by nothing more. So the yardstick is made galaxy by galaxy:
the fault-free stamps of the same galaxies (fetched once more through the same source, the local SIA server without
faults, so that each galaxy gets the same tile: in the middle of an overlap the SIA and tile sources may break the
tie differently) with the same bands masked as the faulty run's ``bands_used`` says, predicted the way the run
predicts (``pipeline.tasks.predict_shapes``, the galaxy's own id seeding its draw). Per fault run, over the
galaxies that lost a band:

- ``band_fault_shape_rms``: rms per component of e_pred, faulty run - fault-free run;
- ``band_fault_masked_rms``: the same mask applied to the fault-free stamps - fault-free run (the model's own
  band-dropout scatter on exactly these galaxies and bands);
- ``band_fault_vs_masked_rms``: faulty run - masked fault-free, which is ~0 when the surviving bands are read
  identically (a faulted band does not corrupt the others); ``_all``: over every galaxy predicted in both runs.

``band_fault_replay_rms`` checks the replay itself: all bands, fault-free stamps, against the fault-free run.
``band_dropout_rms`` is the older pooled yardstick (one band other than i masked in turn, every galaxy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faults_matrix as fm
import numpy as np
import pandas as pd

BAD_NIGHT = {"error_rate": 0.20, "html_error_rate": 0.05, "truncate_rate": 0.05, "nan_rate": 0.05}
E = ["e1_pred", "e2_pred"]


def rms(values: np.ndarray) -> float | None:
    """Root mean square of all entries (per component when given (n, 2)), to 3 significant figures (so that a
    small difference is not rounded to 0); None for no entries."""
    values = np.asarray(values, dtype=float)
    return float(f"{np.sqrt(np.mean(values**2)):.3g}") if values.size else None


class Replay:
    """The fault-free stamps of the galaxies the fault-free run predicted (from ``source``; None: the field's
    tiles), and the run's way of predicting them."""

    def __init__(self, field: fm.Field, ref: pd.DataFrame, checkpoint: Path | None = None, source=None) -> None:
        from survey_deblend.catalog import select_galaxies
        from survey_deblend.cutouts.tiles import TileSource
        from survey_deblend.inference import Predictor

        cfg = fm.config(field, checkpoint, Path("unused"))
        table = select_galaxies(cfg.catalog).table.set_index("coadd_objects_id")
        self.ids = ref.index[np.isfinite(ref["e1_pred"].to_numpy(dtype=float))].to_numpy()
        source = source if source is not None else TileSource(field.tiles_dir)
        self.predictor = Predictor.from_checkpoint(checkpoint)
        size = self.predictor.source_stamp_size(source.pixel_scale_arcsec)
        self.batch = source.fetch(table.loc[self.ids, "ra"].to_numpy(), table.loc[self.ids, "dec"].to_numpy(), size)
        self.row = pd.Series(np.arange(len(self.ids)), index=self.ids)

    def predict(self, ids: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """e_pred (n, 2) of ``ids`` from their fault-free stamps, only the bands ``keep`` (n, B) allows."""
        from survey_deblend.cutouts.base import CutoutBatch
        from survey_deblend.pipeline.tasks import predict_shapes

        rows = self.row.loc[ids].to_numpy()
        b = self.batch
        mask = b.band_mask[rows] & (True if keep is None else keep)
        images = np.where(mask[:, :, None, None], b.images[rows], np.float32(0.0))
        sub = CutoutBatch(images, mask, b.status[rows], b.frame,
                          noise_sigma=None if b.noise_sigma is None else b.noise_sigma[rows])
        return predict_shapes(sub, measure_recon=False, predictor=self.predictor, ids=ids)[E].to_numpy(float)

    def band_dropout_rms(self, required: tuple[str, ...]) -> float:
        """Rms shift per component when one band not in ``required`` is masked in turn, pooled over those bands."""
        full, shifts = self.predict(self.ids), []
        for k, band in enumerate(self.batch.bands):
            if band not in required:
                keep = np.ones(self.batch.band_mask.shape, dtype=bool)
                keep[:, k] = False
                shifts.append(self.predict(self.ids, keep) - full)
        shifts = np.concatenate(shifts)
        return rms(shifts[np.isfinite(shifts).all(axis=1)])


def like_for_like(replay: Replay, ref: pd.DataFrame, bad: pd.DataFrame, suffix: str) -> dict[str, Any]:
    """The three rms of the module docstring for one faulty run against the fault-free one."""
    predicted = np.isfinite(bad["e1_pred"].to_numpy(dtype=float))
    ids = np.intersect1d(bad.index[predicted].to_numpy(), replay.ids)
    bands = replay.batch.bands
    used = bad.loc[ids, "bands_used"].fillna("").to_numpy()
    keep = np.array([[band in str(u) for band in bands] for u in used], dtype=bool).reshape(len(ids), len(bands))
    lost = bad.loc[ids, "bands_used"].to_numpy() != ref.loc[ids, "bands_used"].to_numpy()
    fault, free = bad.loc[ids, E].to_numpy(float), ref.loc[ids, E].to_numpy(float)
    masked = replay.predict(ids, keep) if len(ids) else np.zeros((0, 2))
    return {
        f"predicted_frac_band_faults{suffix}": None,  # filled by the caller (needs the selection)
        f"galaxies_with_a_masked_band{suffix}": int(lost.sum()),
        f"band_fault_shape_rms{suffix}": rms((fault - free)[lost]),
        f"band_fault_masked_rms{suffix}": rms((masked - free)[lost]),
        f"band_fault_vs_masked_rms{suffix}": rms((fault - masked)[lost]),
        f"band_fault_shape_rms_all{suffix}": rms(fault - free),
        f"band_fault_vs_masked_rms_all{suffix}": rms(fault - masked),
    }


def band_faults_rows(field: fm.Field, work: Path, client, seed: int, rows: list[dict], line, sia_sets) -> dict:
    """The bad night (default retries, then one retry so that many galaxies lose a band) against the same run
    without faults; ``line`` prints and returns a matrix row; returns the ``faults_band_faults`` line."""
    import json

    from survey_deblend.cutouts import open_source
    from survey_deblend.cutouts.server import Faults, running_server
    from survey_deblend.cutouts.status import REQUIRED_BANDS

    runs = (("band_faults_reference", None, ()), ("band_faults", Faults(seed=seed, **BAD_NIGHT), ()),
            ("band_faults_retries1", Faults(seed=seed, **BAD_NIGHT), ("images.retries=1",)))
    frames = {}
    for name, faults, sets in runs:
        out = work / name
        with running_server(field.tiles_dir, faults=faults) as url:
            error, seconds = fm.run_in_process(fm.config(field, None, out, f"sia:{url}", *sia_sets, *sets), client)
        rows.append(line(name, out, field, seconds, error=error))
        frames[name] = fm.read_output(out).set_index("coadd_objects_id")
    ref = frames["band_faults_reference"]
    with running_server(field.tiles_dir) as url:  # the same source as the runs, without faults
        cfg = fm.config(field, None, work / "replay", f"sia:{url}", *sia_sets)
        replay = Replay(field, ref, source=open_source(cfg.images.source, cfg.images))
    result: dict[str, Any] = {
        "benchmark": "faults_band_faults", "galaxies": int(len(field.selected)),
        "predicted_frac_fault_free": round(float(np.isfinite(ref["e1_pred"].to_numpy(dtype=float)).mean()), 4),
        "band_fault_replay_rms": rms(replay.predict(replay.ids) - ref.loc[replay.ids, E].to_numpy(float)),
    }
    for name, suffix in (("band_faults", ""), ("band_faults_retries1", "_retries1")):
        bad = frames[name]
        result.update(like_for_like(replay, ref, bad, suffix))
        predicted = np.isfinite(bad["e1_pred"].to_numpy(dtype=float)).sum()
        result[f"predicted_frac_band_faults{suffix}"] = round(float(predicted / len(field.selected)), 4)
    result["band_dropout_rms"] = replay.band_dropout_rms(REQUIRED_BANDS)
    print(json.dumps(result), flush=True)
    return result

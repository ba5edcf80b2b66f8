"""LSST training and shear-response ("ring") data sets: 45x45 ugrizy stamps, sharded on disk.

Per sample (DESIGN.md, contract 3): ``blend`` (the noisy scene), ``isolated`` (the central alone with the
same noise realisation, so ``blend - isolated`` is exactly the neighbours' light), ``clean`` (the central
alone, no noise), and truth ``e1, e2`` (PSF-free label after shear), ``z``, ``mag_i``, ``mag`` (ugrizy),
``snr`` (the central's optimal i-band SNR against the sky), ``n_neighbours``, ``blendedness`` (i band,
``1 - <c, c> / <c, scene>`` on noiseless images), ``g1_shear, g2_shear, e1_intrinsic, e2_intrinsic``.
Ring sets add ``pair_id, g1_applied, g2_applied``. Paired sets (``kind="paired"``) are ring sets whose 8 variants
of a base scene also share its noise realisation (rotated with the scene), so that +g and -g differ only by
the shear: the shape noise and most pixel noise cancel in ``<e>(+g) - <e>(-g)``. With ``des_pairs`` the same
scenes are also rendered as DES sees them: ``des_blend, des_isolated, des_clean`` (grizY at the DES pixel scale,
PSFs and depth, coadd units at zeropoint 30), ``des_snr`` and ``des_mag`` (grizY).

Noise: Gaussian, variance = the surveycodex mean sky level per pixel (sky only; sources add no Poisson term),
10-year depth for LSST, full depth for DES.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from survey_deblend.config.sim import SHEAR_KINDS, LsstSimConfig
from survey_deblend.errors import SurveyDeblendError
from survey_deblend.sim.dataset import MANIFEST_NAME, ShardInfo, field_specs, shard_name, write_manifest, write_shard
from survey_deblend.sim.psf import psf_description
from survey_deblend.sim.render import StampRenderer
from survey_deblend.sim.scenes import Scene, draw_scene, sample_rng
from survey_deblend.surveys import DES_BANDS, LSST_BANDS, PhotometricFrame, band_facts, stamp_frame

GENERATOR = "survey_deblend.sim.lsst/1"
TRUTH_DTYPES: dict[str, str] = {
    "e1": "float32",
    "e2": "float32",
    "z": "float32",
    "mag_i": "float32",
    "snr": "float32",
    "n_neighbours": "int16",
    "blendedness": "float32",
    "g1_shear": "float32",
    "g2_shear": "float32",
    "e1_intrinsic": "float32",
    "e2_intrinsic": "float32",
}
RING_DTYPES: dict[str, str] = {"pair_id": "int64", "g1_applied": "float32", "g2_applied": "float32"}


@dataclass(frozen=True)
class Rendered:
    """Noisy scene, central with noise, central without noise ``(B, S, S)``, and two scalars."""

    blend: np.ndarray
    isolated: np.ndarray
    clean: np.ndarray
    snr: float
    blendedness: float


def render_scene(
    renderer: StampRenderer, scene: Scene, noise_rng: np.random.Generator, noise_rot90: int = 0
) -> Rendered:
    """Render one scene: central and neighbours in one pass (one inverse FFT per band for each group).

    ``noise_rot90``: turn the noise field by that many 90-degree steps counter-clockwise (+x West to +y North),
    as a paired set turns the scene."""
    pop = scene.population
    shapes = pop.shapes(scene.x, scene.y)
    flux = pop.flux(renderer.survey, renderer.bands)
    transforms = renderer.galaxy_transforms(shapes)
    if len(pop) > 1:
        groups = np.zeros((2, *flux.shape), dtype=np.float32)
        groups[0, 0], groups[1] = flux[0], flux  # group 0: the central alone; group 1: the whole scene
        clean, scene_img = renderer.images(transforms, groups)
    else:
        clean = scene_img = renderer.images(transforms, flux)
    sigma = renderer.sky_sigma
    noise = noise_rng.standard_normal(clean.shape, dtype=np.float32)
    if noise_rot90:  # array [y, x]: counter-clockwise in the sky frame is k = -1 in numpy's (y, x) sense
        noise = np.ascontiguousarray(np.rot90(noise, -noise_rot90, axes=(-2, -1)))
    noise *= sigma.astype(np.float32)[:, None, None]
    i = renderer.bands.index("i")
    snr = float(np.sqrt(np.sum(clean[i] ** 2)) / sigma[i])
    overlap = float(np.sum(clean[i] * scene_img[i]))
    blendedness = float(1.0 - np.sum(clean[i] ** 2) / overlap) if overlap > 0 else 0.0
    return Rendered(scene_img + noise, clean + noise, clean, snr, blendedness)


class _ShardBuffers:
    """Pre-allocated arrays of one shard, filled sample by sample."""

    def __init__(self, cfg: LsstSimConfig, n: int):
        s, self.cfg = cfg.stamp_size, cfg
        self.arrays: dict[str, np.ndarray] = {}
        for prefix, nb in [("", len(LSST_BANDS))] + ([("des_", len(DES_BANDS))] if cfg.des_pairs else []):
            for name in ("blend", "isolated", "clean"):
                self.arrays[prefix + name] = np.empty((n, nb, s, s), dtype=np.float32)
        self.arrays["mag"] = np.empty((n, len(LSST_BANDS)), dtype=np.float32)
        if cfg.des_pairs:
            self.arrays["des_mag"] = np.empty((n, len(DES_BANDS)), dtype=np.float32)
        dtypes = dict(TRUTH_DTYPES)
        if cfg.des_pairs:
            dtypes["des_snr"] = "float32"
        if cfg.kind in SHEAR_KINDS:
            dtypes.update(RING_DTYPES)
        for name, dtype in dtypes.items():
            self.arrays[name] = np.empty(n, dtype=dtype)

    def fill(self, j: int, scene: Scene, lsst: Rendered, des: Rendered | None) -> None:
        a, pop = self.arrays, scene.population
        a["blend"][j], a["isolated"][j], a["clean"][j] = lsst.blend, lsst.isolated, lsst.clean
        e1, e2 = pop.label
        truth = {
            "e1": e1[0],
            "e2": e2[0],
            "z": pop.z[0],
            "mag_i": pop.mag_i[0],
            "snr": lsst.snr,
            "n_neighbours": scene.n_neighbours,
            "blendedness": lsst.blendedness,
            "g1_shear": pop.g1_shear[0],
            "g2_shear": pop.g2_shear[0],
            "e1_intrinsic": pop.e1_intrinsic[0],
            "e2_intrinsic": pop.e2_intrinsic[0],
        }
        a["mag"][j] = pop.mag_lsst[0]
        if des is not None:
            a["des_blend"][j], a["des_isolated"][j], a["des_clean"][j] = des.blend, des.isolated, des.clean
            truth["des_snr"] = des.snr
            a["des_mag"][j] = pop.mag_des[0]
        if self.cfg.kind in SHEAR_KINDS:
            truth.update(pair_id=scene.pair_id, g1_applied=scene.g1_applied, g2_applied=scene.g2_applied)
        for name, value in truth.items():
            a[name][j] = value


def generate_samples(cfg: LsstSimConfig, start: int, n: int) -> dict[str, np.ndarray]:
    """Samples ``start .. start+n-1`` of the data set ``cfg`` as arrays (each depends only on seed and index)."""
    lsst = StampRenderer("LSST", LSST_BANDS, cfg.stamp_size, cfg.psf_model)
    des = StampRenderer("DES", DES_BANDS, cfg.stamp_size, cfg.psf_model) if cfg.des_pairs else None
    buffers = _ShardBuffers(cfg, n)
    for j in range(n):
        index = start + j
        scene = draw_scene(cfg, index, lsst.scale)
        if cfg.kind == "paired":  # one noise field per base scene, turned with the scene (variant % 2)
            noise_rng, turn = sample_rng(cfg.seed, scene.pair_id, 1), index % 2
        else:
            noise_rng, turn = sample_rng(cfg.seed, index, 1), 0
        lsst_img = render_scene(lsst, scene, noise_rng, turn)
        des_img = render_scene(des, scene, noise_rng, turn) if des is not None else None
        buffers.fill(j, scene, lsst_img, des_img)
    return buffers.arrays


def _generate_shard(out_dir: str, cfg: LsstSimConfig, shard: int, start: int, n: int) -> ShardInfo:
    return write_shard(out_dir, shard, start, generate_samples(cfg, start, n))


def build_manifest(cfg: LsstSimConfig, shards: list[ShardInfo], fields: dict[str, Any]) -> dict[str, Any]:
    """The manifest: what the data set is, how it was made and where its shards are (contract 3)."""

    def survey_block(survey: str, bands: tuple[str, ...]) -> dict[str, Any]:
        facts = [band_facts(survey, b) for b in bands]
        zeropoints = stamp_frame(survey, bands).zeropoints
        return {
            "survey": survey,
            "bands": list(bands),
            "zeropoints": None if zeropoints is None else list(zeropoints),
            "pixel_scale_arcsec": facts[0].pixel_scale_arcsec,
            "stamp_size": cfg.stamp_size,
            "psf_model": cfg.psf_model,
            "psf": psf_description(cfg.psf_model),
            "psf_fwhm_arcsec": {f.band: f.psf_fwhm_arcsec for f in facts},
            "sky_sigma": {f.band: f.sky_sigma for f in facts},
            "units": f"coadd units at zeropoint {zeropoints[0]:g}" if zeropoints else "electrons, full exposure",
        }

    manifest: dict[str, Any] = {
        "generator": GENERATOR,
        "kind": cfg.kind,
        "n_samples": cfg.n,
        "seed": cfg.seed,
        **survey_block("LSST", LSST_BANDS),
        "noise": "gaussian, variance = surveycodex mean sky level per pixel (sky only); "
        "isolated shares the blend's noise realisation",
        "label": "e1, e2: PSF-free shape of the central after shear (shear convention, DESIGN.md)",
        "config": dataclasses.asdict(cfg),
        "fields": fields,
        "shards": [s.to_dict() for s in shards],
    }
    if cfg.des_pairs:
        manifest["des"] = survey_block("DES", DES_BANDS)
    return manifest


def stamps_frame(manifest: dict[str, Any], prefix: str = "") -> PhotometricFrame:
    """The photometric frame of a data set's stamps from its manifest: the LSST stamps (``prefix=""``, native
    electrons) or the DES pairs (``"des_"``, coadd units). Manifests written before the frame was recorded get
    the frame the simulation wrote them in (``surveys.stamp_frame``)."""
    survey = "LSST" if prefix == "" else prefix.rstrip("_").upper()
    block = manifest if prefix == "" else manifest.get(prefix.rstrip("_"))
    if not isinstance(block, dict) or "bands" not in block or "pixel_scale_arcsec" not in block:
        raise SurveyDeblendError(f"data set manifest has no bands/pixel_scale_arcsec for its {survey} stamps")
    bands = tuple(block["bands"])
    zeropoints = block["zeropoints"] if "zeropoints" in block else stamp_frame(survey, bands).zeropoints
    return PhotometricFrame(block.get("survey", survey), bands, float(block["pixel_scale_arcsec"]), zeropoints)


def make_lsst_dataset(
    out_dir: str | Path,
    n: int | None = None,
    seed: int | None = None,
    kind: str | None = None,
    workers: int | None = None,
    des_pairs: bool | None = None,
    shard_size: int | None = None,
    config: LsstSimConfig | None = None,
) -> Path:
    """Generate an LSST data set into ``out_dir``; keyword arguments override ``config``. Returns ``out_dir``.

    Shards are generated in parallel over ``workers`` processes; the output is identical for any worker
    count (every sample has its own seed). An existing data set in ``out_dir`` is replaced; an interrupted
    generation of the same data set resumes, keeping its finished shards.
    """
    cfg = config or LsstSimConfig()
    overrides = {"n": n, "seed": seed, "kind": kind, "workers": workers, "des_pairs": des_pairs}
    overrides["shard_size"] = shard_size
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    out = _prepare_output(Path(out_dir), cfg)
    jobs = [(i, start, min(cfg.shard_size, cfg.n - start)) for i, start in enumerate(range(0, cfg.n, cfg.shard_size))]
    done = {i: ShardInfo(shard_name(i), start, k) for i, start, k in jobs if _shard_complete(out / shard_name(i), k)}
    todo = [job for job in jobs if job[0] not in done]
    if cfg.workers == 1 or len(todo) <= 1:
        made = [_generate_shard(str(out), cfg, *job) for job in todo]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(cfg.workers, len(todo)), mp_context=ctx) as pool:
            futures = [pool.submit(_generate_shard, str(out), cfg, *job) for job in todo]
            made = [f.result() for f in futures]
    shards = sorted([*done.values(), *made], key=lambda s: s.start)
    arrays = {p.stem: np.load(p, mmap_mode="r") for p in sorted((out / shards[0].name).glob("*.npy"))}
    write_manifest(out, build_manifest(cfg, shards, field_specs(arrays, cfg.n)))
    (out / PLAN_NAME).unlink()
    return out


PLAN_NAME = ".generating.json"


def _plan(cfg: LsstSimConfig) -> dict[str, Any]:
    """What decides the bytes of the data set (everything but the worker count)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "workers"}


def _prepare_output(out: Path, cfg: LsstSimConfig) -> Path:
    """Make ``out`` ready: resume an interrupted generation of the same data set (its finished shards are
    kept: samples depend only on seed and index), otherwise clear a previous data set; refuse foreign files."""
    ours = {MANIFEST_NAME, PLAN_NAME}
    if out.exists():
        foreign = [p.name for p in out.iterdir() if p.name not in ours and not p.name.lstrip(".").startswith("shard-")]
        if foreign:
            raise SurveyDeblendError(f"{out}: holds '{foreign[0]}', not a simulated data set; refusing to write there")
        try:
            resumable = json.loads((out / PLAN_NAME).read_text()) == _plan(cfg)
        except (OSError, ValueError):
            resumable = False
        if not resumable:
            for p in out.iterdir():
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for tmp in out.glob(".shard-*"):
            shutil.rmtree(tmp)
    out.mkdir(parents=True, exist_ok=True)
    (out / PLAN_NAME).write_text(json.dumps(_plan(cfg), sort_keys=True))
    return out


def _shard_complete(path: Path, n: int) -> bool:
    """A shard folder is complete when it exists (shards are renamed into place) and holds ``n`` samples."""
    try:
        return path.is_dir() and len(np.load(path / "z.npy", mmap_mode="r")) == n
    except (OSError, ValueError):
        return False

"""The flow head: a conditional normalizing flow posterior over (e1, e2, z) given the deblender latent.

``p(e1, e2, z | c) = p(e | c) p(z | c)`` with ``c`` an embedding of the latent mean and the band mask: two
zuko neural spline flows (rational-quadratic splines, Durkan et al. 2019) sharing that embedding. The split
keeps both marginals exact, which the calibration needs: the highest-density regions of (e1, e2) come from
``p(e | c)`` itself, and the z quantiles and PIT are exact because a 1-D flow is monotone.

Bounded support by a fixed change of variables, the Jacobian included in every density:

- e in the unit disc: the conformal shear ``eta = 2 artanh(|e|) e / |e|`` (GalSim's ``Shear.eta1/eta2``) maps
  the disc onto the plane; samples come back through ``e = tanh(|eta| / 2) eta / |eta|``, always inside.
- z > 0: ``log z``; samples come back through ``exp``.

Both are then standardized (training-set mean and scale, buffers of the state dict) so that the splines'
[-5, 5] domain covers the data. The e flow is used as an inverse autoregressive flow (sampling is one network
pass per transform); the z flow is one-dimensional (its inverse is one pass too).

The splines are zuko's with their knots stored bins-first (``models.spline.use_fast_splines``, installed on both
flows at construction): the same transform to float32 rounding, its 8-bin softmax ~10x cheaper on CPU; the state
dict, and so every checkpoint, is unchanged.

Posterior summaries (``summarize``) use K draws per galaxy, vectorised: a scrambled Sobol set of K base points
shared by all galaxies (low-variance means and spreads), plus one draw per galaxy whose base point comes from a
counter-based hash of the galaxy's id, so a re-run reproduces it whatever the batch it falls in. A calibration
temperature ``arch.e_temperature`` (fitted on validation data, ``training.flow_calibration``) scales the e base
points for the spread, the draw and the credible regions; the mean stays that of the untempered draws.

Use (the Predictor): ``head = checkpoint.build("flow")`` once when ``checkpoint.has_flow``, then per batch
``head.summarize(latent_mean, band_mask, galaxy_ids)``; its keys are DESIGN.md's output column names.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import zuko
from torch import nn

from survey_deblend.models.spline import use_fast_splines

__all__ = ["SUMMARY_COLUMNS", "FlowArchitecture", "FlowHead", "conformal_to_shear", "coverage_figures",
           "seeded_normals", "shear_to_conformal"]

# The output columns of DESIGN.md that ``FlowHead.summarize`` fills.
SUMMARY_COLUMNS = ("e1_pred", "e2_pred", "e_sigma_pred", "e1_sample", "e2_sample", "z_pred", "z_sigma_pred",
                   "z_lo", "z_hi")
Z_QUANTILES = (0.16, 0.5, 0.84)
_MAX_E = 1.0 - 1e-6  # labels on the unit circle would map to infinity


@dataclass(frozen=True)
class FlowArchitecture:
    """Hyper-parameters of the flow head; stored in the checkpoint metadata (``metadata["flow"]``)."""

    latent_dim: int = 32
    n_bands: int = 6
    context_dim: int = 16  # embedding of (latent, band mask) fed to both flows
    embed_hidden: int = 64
    transforms: int = 3  # spline transforms of the e flow
    z_transforms: int = 2  # spline transforms of the z flow
    bins: int = 8
    hidden: tuple[int, ...] = (32, 32)  # hyper-network layers of each transform
    samples: int = 16  # K, posterior draws per galaxy for the summaries (Sobol: mean error ~0.004 at 16)
    # Calibration, fitted after training on a validation split (training.flow_calibration): the e flow's base points
    # are scaled by it for e_sigma_pred, the id-seeded draw and the credible regions; 1.0 = untempered.
    e_temperature: float = 1.0

    def to_dict(self) -> dict:
        """Plain types only (``weights_only`` checkpoints)."""
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FlowArchitecture:
        """Inverse of ``to_dict``; unknown keys are an error."""
        data = dict(data)
        data["hidden"] = tuple(int(h) for h in data.get("hidden", cls.hidden))
        return cls(**data)


def shear_to_conformal(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eta, log|d eta / d e|)``: the conformal shear of shear-convention ``e`` ``(..., 2)`` in the unit disc."""
    r = e.norm(dim=-1, keepdim=True).clamp(max=_MAX_E)
    small = r < 1e-4
    safe = torch.where(small, torch.ones_like(r), r)
    ratio = torch.where(small, 2.0 + 2.0 * r**2 / 3.0, 2.0 * torch.atanh(safe) / safe)  # |eta| / |e|
    eta = e * ratio
    # radial map f(r) = 2 artanh(r): det = f'(r) * f(r) / r
    log_det = torch.log(2.0 / (1.0 - r**2)) + torch.log(ratio)
    return eta, log_det.squeeze(-1)


def conformal_to_shear(eta: torch.Tensor) -> torch.Tensor:
    """Shear-convention ``e`` (strictly inside the unit disc) of the conformal shear ``eta`` ``(..., 2)``."""
    s = eta.norm(dim=-1, keepdim=True)
    small = s < 1e-4
    safe = torch.where(small, torch.ones_like(s), s)
    ratio = torch.where(small, 0.5 - s**2 / 24.0, torch.tanh(safe / 2.0).clamp(max=_MAX_E) / safe)
    return eta * ratio


_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer (Steele et al. 2014), vectorised on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def seeded_normals(seeds: np.ndarray, n: int, stream: int = 0) -> np.ndarray:
    """``(N, n)`` standard normals, row i a function of ``(seeds[i], stream)`` only (counter-based, Box-Muller).

    A galaxy's draw therefore does not depend on which batch or position it comes in.
    """
    seeds = np.asarray(seeds).astype(np.int64).view(np.uint64)
    pairs = (n + 1) // 2
    counters = np.arange(2 * pairs, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(seeds ^ _splitmix64(np.full(seeds.shape, stream, dtype=np.uint64)))
        bits = _splitmix64(key[:, None] + counters[None, :] * np.uint64(0xD1B54A32D192ED03))
    u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1)
    u1, u2 = u[:, 0::2], u[:, 1::2]
    radius = np.sqrt(-2.0 * np.log(u1))
    normals = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)], axis=1)
    return normals[:, :n]


def sobol_normals(k: int, dim: int, seed: int = 0) -> np.ndarray:
    """``(k, dim)`` scrambled-Sobol points mapped to standard normals: low-variance posterior averages."""
    from scipy.stats import norm, qmc

    points = qmc.Sobol(d=dim, scramble=True, seed=seed).random(k)
    return norm.ppf(np.clip(points, 1e-12, 1 - 1e-12))


class FlowHead(nn.Module):
    """The conditional flow posterior over (e1, e2, z); see the module docstring for the parametrization."""

    def __init__(self, arch: FlowArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.embed = nn.Sequential(
            nn.Linear(arch.latent_dim + arch.n_bands, arch.embed_hidden), nn.SiLU(),
            nn.Linear(arch.embed_hidden, arch.context_dim),
        )
        kwargs = {"bins": arch.bins, "hidden_features": tuple(arch.hidden)}
        self.flow_e = zuko.flows.NSF(2, arch.context_dim, transforms=arch.transforms, **kwargs)
        self.flow_e.transform = self.flow_e.transform.inv  # inverse autoregressive: one pass per sample
        self.flow_z = zuko.flows.NSF(1, arch.context_dim, transforms=arch.z_transforms, **kwargs)
        use_fast_splines(self)  # zuko's splines, knots stored bins-first: same values, half the summaries' time
        # standardization of (eta1, eta2, log z); set from the training labels by ``set_standardization``
        self.register_buffer("loc", torch.zeros(3))
        self.register_buffer("scale", torch.ones(3))
        base = torch.as_tensor(sobol_normals(arch.samples, 2), dtype=torch.float32)
        self.register_buffer("base_points", base, persistent=False)

    # -- the change of variables -------------------------------------------------------------------------------
    def set_standardization(self, e: np.ndarray, z: np.ndarray) -> None:
        """Centre and scale the unconstrained variables on training labels ``e`` ``(N, 2)`` and ``z`` ``(N,)``."""
        u = self._unconstrained(torch.as_tensor(e, dtype=torch.float32), torch.as_tensor(z, dtype=torch.float32))[0]
        eta_scale = float(u[:, :2].std())  # one scale for both components keeps the problem rotation-invariant
        self.loc.copy_(torch.tensor([0.0, 0.0, float(u[:, 2].mean())]))
        self.scale.copy_(torch.tensor([eta_scale, eta_scale, float(u[:, 2].std())]).clamp(min=1e-3))

    @staticmethod
    def _unconstrained(e: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        eta, log_det_e = shear_to_conformal(e)
        log_z = torch.log(z.clamp(min=1e-4))
        return torch.cat([eta, log_z[..., None]], dim=-1), log_det_e, -log_z

    def context(self, latent: torch.Tensor, band_mask: torch.Tensor) -> torch.Tensor:
        """The shared conditioning vector ``(N, context_dim)``."""
        return self.embed(torch.cat([latent, band_mask.to(latent.dtype)], dim=-1))

    # -- densities ---------------------------------------------------------------------------------------------
    def log_prob_e(self, e: torch.Tensor, ctx: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """``log p(e1, e2 | c)`` in the (e1, e2) plane, ``e`` ``(..., N, 2)`` against ``ctx`` ``(N, C)``.

        ``temperature`` T: the density of the tempered flow, whose base is ``N(0, T^2 I)`` (see ``sample_e``).
        """
        eta, log_det = shear_to_conformal(e)
        u = (eta - self.loc[:2]) / self.scale[:2]
        dist = self.flow_e(ctx)
        if temperature == 1.0:
            log_p = dist.log_prob(u)
        else:
            base, ladj = dist.transform.call_and_ladj(u)
            log_p = dist.base.log_prob(base / temperature) - 2.0 * math.log(temperature) + ladj
        return log_p + log_det - torch.log(self.scale[:2]).sum()

    def log_prob_z(self, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """``log p(z | c)`` for ``z`` ``(..., N)``."""
        log_z = torch.log(z.clamp(min=1e-4))
        u = ((log_z - self.loc[2]) / self.scale[2])[..., None]
        return self.flow_z(ctx).log_prob(u) - log_z - torch.log(self.scale[2])

    def log_prob(self, e: torch.Tensor, z: torch.Tensor, latent: torch.Tensor, band_mask: torch.Tensor) -> torch.Tensor:
        """Joint ``log p(e1, e2, z | latent, band_mask)`` per galaxy: the training objective (negated)."""
        ctx = self.context(latent, band_mask)
        return self.log_prob_e(e, ctx) + self.log_prob_z(z, ctx)

    # -- sampling ----------------------------------------------------------------------------------------------
    def sample_e(self, eps: torch.Tensor, ctx: torch.Tensor, with_log_prob: bool = False,
                 temperature: float = 1.0):
        """Map base points ``eps`` ``(K, N, 2)`` (or ``(K, 1, 2)``, shared) to e draws ``(K, N, 2)`` in the disc.

        ``temperature`` T maps ``T * eps`` instead: draws of the tempered flow (base ``N(0, T^2 I)``, wider for
        T > 1). With ``with_log_prob`` also returns the (tempered) ``log p(e | c)`` of each draw (for HPD regions).
        """
        eps = eps.expand(eps.shape[0], ctx.shape[0], 2)
        dist = self.flow_e(ctx)
        u, ladj = dist.transform.inv.call_and_ladj(eps if temperature == 1.0 else eps * temperature)
        eta = u * self.scale[:2] + self.loc[:2]
        e = conformal_to_shear(eta)
        if not with_log_prob:
            return e
        _, log_det = shear_to_conformal(e)
        log_base = dist.base.log_prob(eps) - 2.0 * math.log(temperature)
        log_p = log_base - ladj + log_det - torch.log(self.scale[:2]).sum()
        return e, log_p

    def z_quantiles(self, ctx: torch.Tensor, quantiles: tuple[float, ...] = Z_QUANTILES) -> torch.Tensor:
        """Exact quantiles ``(len(quantiles), N)`` of ``p(z | c)``: the flow is monotone in one dimension."""
        q = torch.tensor([[_ppf(p)] for p in quantiles], dtype=ctx.dtype, device=ctx.device)  # (Q, 1)
        u = self.flow_z(ctx).transform.inv(q[:, None, :].expand(len(quantiles), ctx.shape[0], 1))
        return torch.exp(u[..., 0] * self.scale[2] + self.loc[2])

    def z_pit(self, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """The probability integral transform ``P(z' < z | c)`` of each galaxy's ``z`` (exact)."""
        u = ((torch.log(z.clamp(min=1e-4)) - self.loc[2]) / self.scale[2])[..., None]
        base = self.flow_z(ctx).transform(u)[..., 0]
        return 0.5 * (1.0 + torch.erf(base / math.sqrt(2.0)))

    # -- per-galaxy outputs -------------------------------------------------------------------------------------
    def _contexts(self, latent: np.ndarray, band_mask: np.ndarray, batch_size: int):
        """``(slice, context)`` per batch of ``batch_size`` galaxies, on the head's device."""
        device = self.loc.device
        for start in range(0, len(latent), batch_size):
            sl = slice(start, start + batch_size)
            lat = torch.as_tensor(np.asarray(latent[sl]), dtype=torch.float32, device=device)
            msk = torch.as_tensor(np.asarray(band_mask[sl]), dtype=torch.float32, device=device)
            yield sl, self.context(lat, msk)

    @torch.inference_mode()
    def summarize(self, latent: np.ndarray, band_mask: np.ndarray, seeds: np.ndarray, batch_size: int = 2048,
                  n_samples: int | None = None) -> dict[str, np.ndarray]:
        """The DESIGN.md posterior columns (``SUMMARY_COLUMNS``) of galaxies with ids ``seeds``, float64 arrays.

        ``e1_pred, e2_pred``: posterior mean over K Sobol draws; ``e_sigma_pred``: per-component posterior
        standard deviation, ``sqrt((var e1 + var e2) / 2)``; ``e1_sample, e2_sample``: one draw seeded by the id;
        ``z_pred``: posterior median; ``z_lo, z_hi``: 16th/84th percentiles; ``z_sigma_pred = (z_hi - z_lo) / 2``.
        ``n_samples`` overrides K (``arch.samples``) for this call. With a calibration temperature T
        (``arch.e_temperature``) ``e_sigma_pred`` and the draw are the tempered posterior's, while the mean stays
        the untempered one (the point estimate that shape calibrations are measured on does not move).
        """
        self.eval()
        device = self.loc.device
        base = self.base_points
        if n_samples is not None and n_samples != len(base):
            base = torch.as_tensor(sobol_normals(int(n_samples), 2), dtype=torch.float32, device=device)
        seeds = np.asarray(seeds)
        if not (len(latent) == len(band_mask) == len(seeds)):
            raise ValueError(f"summarize: {len(latent)} latents, {len(band_mask)} band masks, {len(seeds)} seeds")
        own = torch.as_tensor(seeded_normals(seeds, 2), dtype=torch.float32)
        temp = float(self.arch.e_temperature)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in SUMMARY_COLUMNS}
        for sl, ctx in self._contexts(latent, band_mask, batch_size):
            mine_eps = own[None, sl].to(device) if temp == 1.0 else own[None, sl].to(device) * temp
            eps = torch.cat([base[:, None, :].expand(-1, len(ctx), 2), mine_eps], 0)
            e = self.sample_e(eps, ctx).double()  # (K + 1, N, 2): K untempered draws and the (tempered) own draw
            draws, mine = e[:-1], e[-1]
            mean = draws.mean(dim=0)  # the untempered mean: calibration leaves e1_pred, e2_pred untouched
            if temp != 1.0:
                draws = self.sample_e(base[:, None, :], ctx, temperature=temp).double()
            var = draws.var(dim=0, unbiased=True).mean(dim=-1)
            zq = self.z_quantiles(ctx).double()
            columns = {"e1_pred": mean[:, 0], "e2_pred": mean[:, 1], "e_sigma_pred": var.sqrt(),
                       "e1_sample": mine[:, 0], "e2_sample": mine[:, 1], "z_pred": zq[1],
                       "z_sigma_pred": 0.5 * (zq[2] - zq[0]), "z_lo": zq[0], "z_hi": zq[2]}
            for key, value in columns.items():
                parts[key].append(value.cpu().numpy())
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}

    @torch.inference_mode()
    def posterior_mean_e(self, latent: np.ndarray, band_mask: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """``(N, 2)`` float64: ``summarize``'s ``e1_pred, e2_pred`` alone (the untempered mean over the same K Sobol
        points), without the draw, the spread and z: what metacalibration's five images need, at ~half the cost."""
        self.eval()
        out = []
        for _, ctx in self._contexts(latent, band_mask, batch_size):
            draws = self.sample_e(self.base_points[:, None, :], ctx).double()
            out.append(draws.mean(dim=0).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2))

    @torch.inference_mode()
    def calibration(self, latent: np.ndarray, band_mask: np.ndarray, e_true: np.ndarray, z_true: np.ndarray,
                    n_samples: int = 256, seed: int = 0, batch_size: int = 512,
                    temperature: float | None = None) -> dict[str, np.ndarray]:
        """Per-galaxy calibration statistics of the truth under the posterior, each uniform on (0, 1) if calibrated.

        ``e_hpd_level``: posterior mass of the (e1, e2) highest-density region whose edge passes through the
        truth, from the flow's log-prob of ``n_samples`` draws (truth inside the 68 % region iff <= 0.68);
        ``e1_rank``, ``e2_rank``: fraction of draws below the truth per component; ``z_pit``: exact CDF at z.
        The e statistics are those of the posterior tempered by ``temperature`` (None: ``arch.e_temperature``).
        """
        self.eval()
        device = self.loc.device
        temp = float(self.arch.e_temperature if temperature is None else temperature)
        gen = torch.Generator().manual_seed(seed)
        out: dict[str, list[np.ndarray]] = {"e_hpd_level": [], "e1_rank": [], "e2_rank": [], "z_pit": []}
        for start in range(0, len(latent), batch_size):
            sl = slice(start, start + batch_size)
            lat = torch.as_tensor(np.asarray(latent[sl]), dtype=torch.float32, device=device)
            msk = torch.as_tensor(np.asarray(band_mask[sl]), dtype=torch.float32, device=device)
            et = torch.as_tensor(np.asarray(e_true[sl]), dtype=torch.float32, device=device)
            zt = torch.as_tensor(np.asarray(z_true[sl]), dtype=torch.float32, device=device)
            ctx = self.context(lat, msk)
            eps = torch.randn((n_samples, len(lat), 2), generator=gen).to(device)
            draws, log_p = self.sample_e(eps, ctx, with_log_prob=True, temperature=temp)
            log_p_true = self.log_prob_e(et, ctx, temperature=temp)
            out["e_hpd_level"].append((log_p > log_p_true[None]).double().mean(0).cpu().numpy())
            ranks = (draws < et[None]).double().mean(0).cpu().numpy()
            out["e1_rank"].append(ranks[:, 0])
            out["e2_rank"].append(ranks[:, 1])
            out["z_pit"].append(self.z_pit(zt, ctx).double().cpu().numpy())
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def _ppf(p: float) -> float:
    """Standard-normal quantile (erfinv)."""
    return float(math.sqrt(2.0) * torch.erfinv(torch.tensor(2.0 * p - 1.0, dtype=torch.float64)))


def coverage_figures(stats: dict[str, np.ndarray]) -> dict[str, float]:
    """Fraction of truths inside the 68 % / 95 % credible regions, from ``FlowHead.calibration`` statistics.

    (e1, e2): highest-density regions (``e_hpd_level <= p``); z: central intervals (16th-84th, 2.5th-97.5th).
    A calibrated posterior gives the nominal 0.68 and 0.95.
    """
    level, pit = np.asarray(stats["e_hpd_level"]), np.asarray(stats["z_pit"])
    if level.size == 0:
        return {k: float("nan") for k in ("coverage_e_68", "coverage_e_95", "coverage_z_68", "coverage_z_95")}
    return {
        "coverage_e_68": float(np.mean(level <= 0.68)),
        "coverage_e_95": float(np.mean(level <= 0.95)),
        "coverage_z_68": float(np.mean((pit >= 0.16) & (pit <= 0.84))),
        "coverage_z_95": float(np.mean((pit >= 0.025) & (pit <= 0.975))),
    }

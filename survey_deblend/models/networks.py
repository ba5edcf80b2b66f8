"""The beta-VAE networks and the latent regressor (DESIGN.md, "models").

Stamps are ``(N, B, 45, 45)`` in the normalized model frame plus a band mask ``(N, B)``. The encoder (used both
as the VAE encoder and, with its own weights, as the deblender) maps them to a Gaussian latent; the decoder maps
a latent to the clean isolated central galaxy; the regressor maps a latent to
``(e1, e2, log sigma_e, z, log sigma_z)``. The encoder and regressor are kept small so that inference runs at
thousands of stamps per second on two CPU threads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Architecture:
    """Hyper-parameters of all three networks; stored in the checkpoint metadata."""

    n_bands: int = 6
    stamp_size: int = 45
    latent_dim: int = 32
    channels: tuple[int, int, int] = (16, 32, 64)
    hidden: int = 128
    regressor_hidden: int = 128

    def to_dict(self) -> dict:
        """Plain types only (the checkpoint is loaded with ``weights_only=True``)."""
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        """Inverse of ``to_dict``."""
        data = dict(data)
        data["channels"] = tuple(int(c) for c in data["channels"])
        return cls(**data)


class Encoder(nn.Module):
    """Convolutional encoder: stamps and band mask to the mean and log-variance of a Gaussian latent."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        if arch.stamp_size != 45:
            raise ValueError("the networks are built for 45x45 stamps")
        c0, c1, c2 = arch.channels
        self.conv1 = nn.Conv2d(arch.n_bands, c0, 3, stride=2, padding=1)  # 45 -> 23
        self.mask_embedding = nn.Linear(arch.n_bands, c0)  # tells the network which bands are absent
        self.conv2 = nn.Conv2d(c0, c1, 3, stride=2, padding=1)  # 23 -> 12
        self.conv3 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)  # 12 -> 6
        self.fc = nn.Linear(c2 * 6 * 6, arch.hidden)
        self.head = nn.Linear(arch.hidden, 2 * arch.latent_dim)
        self.latent_dim = arch.latent_dim

    def forward(self, images: torch.Tensor, band_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)``, each ``(N, latent_dim)``."""
        h = self.conv1(images) + self.mask_embedding(band_mask.to(images.dtype))[:, :, None, None]
        h = F.silu(h)
        h = F.silu(self.conv2(h))
        h = F.silu(self.conv3(h))
        h = F.silu(self.fc(h.flatten(1)))
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)


class Decoder(nn.Module):
    """Latent to the normalized clean isolated galaxy ``(N, B, 45, 45)`` in all model bands."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        c0, c1, c2 = arch.channels
        self.c2 = c2
        self.fc = nn.Sequential(nn.Linear(arch.latent_dim, arch.hidden), nn.SiLU(), nn.Linear(arch.hidden, c2 * 36))
        self.up1 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)  # 6 -> 12
        self.up2 = nn.ConvTranspose2d(c1, c0, 3, stride=2, padding=1)  # 12 -> 23
        self.up3 = nn.ConvTranspose2d(c0, c0, 3, stride=2, padding=1)  # 23 -> 45
        self.out = nn.Conv2d(c0, arch.n_bands, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents ``(N, latent_dim)``."""
        h = F.silu(self.fc(z)).view(-1, self.c2, 6, 6)
        h = F.silu(self.up1(h))
        h = F.silu(self.up2(h))
        h = F.silu(self.up3(h))
        return self.out(h)


class Regressor(nn.Module):
    """Latent to ``(e1, e2, log sigma_e, z, log sigma_z)``: a heteroscedastic Gaussian per galaxy."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        h = arch.regressor_hidden
        self.net = nn.Sequential(
            nn.Linear(arch.latent_dim, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 5)
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Return ``(N, 5)``; log-sigmas are clamped to a sane range."""
        out = self.net(latent)
        e, log_se, z, log_sz = out[:, 0:2], out[:, 2:3], out[:, 3:4], out[:, 4:5]
        return torch.cat([e, log_se.clamp(-7.0, 2.0), z, log_sz.clamp(-7.0, 2.0)], dim=1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL of ``N(mu, exp(logvar))`` from the unit Gaussian, summed over latent dims, averaged over the batch."""
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def gaussian_nll(pred: torch.Tensor, e_true: torch.Tensor, z_true: torch.Tensor) -> torch.Tensor:
    """Heteroscedastic Gaussian negative log-likelihood of the regressor output (constants dropped).

    One sigma is shared by e1 and e2. Hard galaxies get a wide sigma and so weigh less in the fit than under
    MSE; the estimate is still a conditional mean, so some shrinkage toward zero remains (docs/model-card.md).
    """
    e_pred, log_se, z_pred, log_sz = pred[:, 0:2], pred[:, 2], pred[:, 3], pred[:, 4]
    nll_e = 0.5 * ((e_pred - e_true) ** 2).sum(dim=1) * torch.exp(-2 * log_se) + 2 * log_se
    nll_z = 0.5 * (z_pred - z_true) ** 2 * torch.exp(-2 * log_sz) + log_sz
    return (nll_e + nll_z).mean()

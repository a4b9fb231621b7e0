"""Variational autoencoder.

Kingma & Welling, "Auto-encoding variational Bayes", ICLR 2014, with the paper's MNIST model
(section 5 and appendix C): a Gaussian encoder ``q(z|x) = N(mean(x), diag(exp(logvar(x))))`` and a
Bernoulli decoder ``p(x|z)`` whose means are the pixel intensities, both multilayer perceptrons;
the prior is ``N(0, I)``. Training maximizes the evidence lower bound (ELBO) through the
reparameterization ``z = mean + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``:

    -ELBO(x) = -E_q[log p(x|z)] + KL(q(z|x) || N(0, I))
             = BCE(decode(z), x)  - 1/2 * sum(1 + logvar - mean^2 - exp(logvar))

(appendix B gives the KL term in closed form). As in pytorch/examples' ``vae``, ``encode`` /
``reparameterize`` / ``decode`` are separate so that each half exports on its own.

Departures: ReLU hidden units (the paper used tanh) and, optionally, two hidden layers
(``hidden=[512, 256]``; the paper had one of 500). Grey levels in [0, 1] are used as Bernoulli
targets, as is common.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """MLP encoder to (mean, logvar), reparameterization, MLP decoder to pixel means in [0, 1].

    Args:
        latent_dim: size of z.
        hidden: hidden layer widths of the encoder; the decoder mirrors them.
        image_size: ``(H, W)`` of the images.
        channels: image channels.
    """

    def __init__(
        self,
        latent_dim: int = 16,
        hidden: Sequence[int] = (512, 256),
        image_size: Sequence[int] = (28, 28),
        channels: int = 1,
    ) -> None:
        super().__init__()
        self.latent_dim, self.channels = latent_dim, channels
        self.image_size = tuple(int(s) for s in image_size)
        pixels = channels * self.image_size[0] * self.image_size[1]
        hidden = [int(h) for h in hidden]
        self.encoder = _mlp([pixels, *hidden])
        self.mean = nn.Linear(hidden[-1], latent_dim)
        self.logvar = nn.Linear(hidden[-1], latent_dim)
        self.decoder = nn.Sequential(
            _mlp([latent_dim, *hidden[::-1]]), nn.Linear(hidden[0], pixels)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) in [0, 1] -> mean, logvar (B, latent)."""
        h = self.encoder(x.flatten(1))  # (B, hidden[-1])
        return self.mean(h), self.logvar(h)

    @staticmethod
    def reparameterize(
        mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """z = mean + sigma * eps; ``noise`` is eps (default: fresh standard normal)."""
        eps = torch.randn_like(mean) if noise is None else noise
        return mean + torch.exp(0.5 * logvar) * eps  # (B, latent)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent) -> pixel means (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent) -> Bernoulli logits (B, C, H, W) (the loss uses these: stabler than
        log)."""
        return self.decoder(z).view(-1, self.channels, *self.image_size)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """x (B, C, H, W) -> reconstruction logits (B, C, H, W), mean, logvar (B, latent)."""
        mean, logvar = self.encode(x)
        z = self.reparameterize(mean, logvar, noise)
        return self.decode_logits(z), mean, logvar


class VAEEncoder(nn.Module):
    """Serving half: the ``encoder`` graph (``pixels`` -> ``mean``, ``logvar``)."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, pixels: torch.Tensor):
        return self.vae.encode(pixels)  # (B, latent), (B, latent)


class VAEDecoder(nn.Module):
    """Serving half: the ``decoder`` graph (``z`` -> ``image`` in [0, 1])."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)  # (B, C, H, W)


def vae(
    latent_dim: int = 16,
    hidden: Sequence[int] = (512, 256),
    image_size: Sequence[int] = (28, 28),
    channels: int = 1,
) -> VAE:
    """Variational autoencoder (Kingma & Welling 2014) with MLP encoder and decoder."""
    return VAE(latent_dim, hidden, image_size, channels)

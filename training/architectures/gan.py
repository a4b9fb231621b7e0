"""DCGAN: deep convolutional generative adversarial network.

Goodfellow et al., "Generative adversarial nets", NIPS 2014: a generator G maps noise z ~ p(z) to
images, a discriminator D outputs the probability that its input is real, and the two play

    min_G max_D V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))]

with G trained on the non-saturating loss ``-log D(G(z))`` (section 3: it has the same fixed point
but strong gradients early on).

Radford, Metz & Chintala, "Unsupervised representation learning with deep convolutional generative
adversarial networks", ICLR 2016, section 3 ("architecture guidelines for stable DCGANs"):
strided convolutions in D and fractional-strided (transposed) convolutions in G instead of pooling;
batch normalization in both, except G's output and D's input layers; ReLU in G with ``tanh`` at
the output; LeakyReLU (slope 0.2) in D; no fully connected hidden layers; weights from
N(0, 0.02); Adam with lr 2e-4 and beta1 0.5.

Sizes here are for 28x28 images (MNIST-like): G projects z to ``4*ngf @ 7x7`` with a 7x7
transposed convolution, then doubles twice (14, 28); D mirrors it. G trains on images in [-1, 1]
(the tanh range); the exported :class:`Generator` maps its output to [0, 1], the card's image range.
"""

from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    """z (B, latent_dim) -> image (B, channels, 28, 28); ``forward`` returns tanh values in
    [-1, 1]."""

    def __init__(self, latent_dim: int = 64, ngf: int = 64, channels: int = 1) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, ngf * 4, 7, 1, 0, bias=False),  # (B, 4ngf, 7, 7)
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # (B, 2ngf, 14, 14)
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(ngf * 2, channels, 4, 2, 1),  # (B, C, 28, 28)
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])  # (B, latent, 1, 1) -> (B, C, 28, 28)


class Discriminator(nn.Module):
    """image (B, channels, 28, 28) in [-1, 1] -> logit (B,) of "real"."""

    def __init__(self, ndf: int = 64, channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, ndf, 4, 2, 1),  # (B, ndf, 14, 14); no BN at D's input
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # (B, 2ndf, 7, 7)
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 7, 1, 0),  # (B, 1, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()  # (B,)


class DCGAN(nn.Module):
    """The pair, so one state dict and one builder cover both players."""

    def __init__(
        self, latent_dim: int = 64, ngf: int = 64, ndf: int = 64, channels: int = 1
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.generator = Generator(latent_dim, ngf, channels)
        self.discriminator = Discriminator(ndf, channels)
        self.apply(_dcgan_init)


class ImageGenerator(nn.Module):
    """Serving half: the ``generator`` graph, ``z`` -> ``image`` in [0, 1]."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.generator(z) + 1.0) * 0.5  # (B, C, 28, 28) in [0, 1]


def _dcgan_init(m: nn.Module) -> None:
    """Radford et al.: every weight from N(0, 0.02); batch-norm scales from N(1, 0.02)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def dcgan(latent_dim: int = 64, ngf: int = 64, ndf: int = 64, channels: int = 1) -> DCGAN:
    """DCGAN (Radford et al. 2016) for 28x28 images."""
    return DCGAN(latent_dim, ngf, ndf, channels)

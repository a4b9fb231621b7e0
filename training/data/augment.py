"""Batched, seeded data augmentation on tensors: one call per batch, on the batch's device.

``digits`` (digits, MNIST, Fashion-MNIST): a random affine per image, the familiar
``RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))``; uncovered pixels become 0,
the background of light-ink images. ``cifar``: random horizontal flip, then a random crop of the
image's size from the image zero-padded by 4 pixels (the ResNet paper's CIFAR augmentation).
``none``: the batch itself.

Random numbers are drawn from ``generator`` on the generator's device and then moved to the batch's,
so a fixed generator seed gives the same batch on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KINDS = ("digits", "cifar", "none")

MAX_DEGREES = 10.0
MAX_SHIFT = 0.1  # of the frame's side, each axis
SCALE = (0.9, 1.1)
CROP_PADDING = 4


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch ``x`` (N, C, H, W) in [0, 1]; same shape and dtype, values stay in [0, 1]."""
    if kind == "none":
        return x
    if x.dim() != 4:
        raise ValueError(f"augment expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if kind == "digits":
        return _random_affine(x, generator)
    if kind == "cifar":
        return _flip_and_crop(x, generator)
    raise ValueError(f"unknown augmentation {kind!r}; expected one of {', '.join(KINDS)}")


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator, like: torch.Tensor
) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=generator.device)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def _random_affine(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    angle = _uniform(n, -MAX_DEGREES, MAX_DEGREES, generator, x) * (math.pi / 180)
    scale = _uniform(n, *SCALE, generator, x)
    # affine_grid works in coordinates where the frame spans [-1, 1]: a shift of f frames is 2f.
    shift = (
        torch.stack([_uniform(n, -MAX_SHIFT, MAX_SHIFT, generator, x) for _ in range(2)], dim=1) * 2
    )  # (N, 2)
    # The image is scaled, rotated, then shifted: out = s R(a) in + t. affine_grid wants the inverse
    # map, output pixel -> input pixel: in = R(-a) / s (out - t).
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    inverse = torch.stack(
        [torch.stack([cos, sin], dim=1), torch.stack([-sin, cos], dim=1)], dim=1
    )  # (N, 2, 2)
    offset = -(inverse @ shift.unsqueeze(2))  # (N, 2, 1)
    theta = torch.cat([inverse, offset], dim=2)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (N, H, W, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)


def _flip_and_crop(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    flip = torch.rand(n, generator=generator, device=generator.device).to(x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    p = CROP_PADDING
    padded = F.pad(x, (p, p, p, p))  # (N, C, H + 2p, W + 2p), zeros around
    top = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=generator.device).to(
        x.device
    )
    left = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=generator.device).to(
        x.device
    )
    rows = top[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = left[:, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]  # (N, C, H, W)

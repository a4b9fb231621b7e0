"""Sampling, reconstruction and interpolation for VAE and GAN cards: plain numpy, no HTTP.

Every function takes a repository :class:`~service.repository.Entry` whose sessions are open and
reads what it needs from the card: the graph that turns a latent vector into an image is the
``decoder`` (task ``vae``) or the ``generator`` (task ``gan``), the roles
``service.card.REQUIRED_ROLES`` fixes; input and output names come from ``card.io[role]``, the
latent size from ``card.latent_dim``. The VAE's ``encoder`` outputs are, in the card's order, the
posterior mean and log-variance.

Latent vectors come from a seed: ``np.random.default_rng(seed).standard_normal((count,
latent_dim))`` in float32, the standard normal prior both models were trained with. The generator
fills rows in order, so the first row for a seed is the same whatever ``count``: ``/interpolate``
from a seed starts at the first tile ``/sample`` shows for it. Same seed, same latents, same images,
same PNG.
A request is one ONNX call per graph it needs, whatever ``count`` or ``steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from service.imaging import images_to_png
from service.schemas import draw_seed

GENERATIVE_TASKS = ("vae", "gan")
DECODER_ROLE = {"vae": "decoder", "gan": "generator"}  # latent -> image, per task
Method = Literal["lerp", "slerp"]


@dataclass
class Images:
    """What a request produced: images (N, C, H, W) in [0, 1], and what they came from."""

    images: np.ndarray
    latents: np.ndarray | None = None  # (N, latent_dim) float32
    seeds: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# --- latents -----------------------------------------------------------------------------------


def latents(count: int, latent_dim: int, seed: int) -> np.ndarray:
    """(count, latent_dim) float32 draws from the standard normal prior, fixed by ``seed``."""
    return np.random.default_rng(seed).standard_normal((count, latent_dim), dtype=np.float32)


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points ``(1 - t) a + t b`` for each t: (T,) -> (T, D), float64; t=0 gives a, t=1 gives b."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)[:, None]
    return (1.0 - t) * a + t * b


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (Shoemake 1985; White 2016 for GAN latents): (T,) -> (T, D), float64.

    The direction turns along the great circle from a to b at constant speed and the norm moves
    linearly from |a| to |b|, so every point's norm lies between the endpoints' (a Gaussian prior's
    mass sits near a shell; lerp cuts through the low-norm interior). Written as
    ``c0 (r/|a|) a + c1 (r/|b|) b`` so that t=0 and t=1 give a and b exactly. Parallel, opposite or
    zero vectors have no unique great circle: those fall back to lerp.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return lerp(a, b, t)
    omega = math.acos(float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0)))
    if math.sin(omega) < 1e-6:
        return lerp(a, b, t)
    c0 = np.sin((1.0 - t) * omega) / math.sin(omega)  # (T,)
    c1 = np.sin(t * omega) / math.sin(omega)
    r = (1.0 - t) * na + t * nb  # the norm along the path
    return (c0 * r / na)[:, None] * a + (c1 * r / nb)[:, None] * b


INTERPOLATIONS = {"lerp": lerp, "slerp": slerp}


# --- graphs ------------------------------------------------------------------------------------


def decode(entry, z: np.ndarray) -> np.ndarray:
    """Latents (N, latent_dim) -> images (N, C, H, W) float32 in [0, 1]: one ONNX call."""
    role = DECODER_ROLE[entry.card.task]
    io = entry.card.io[role]
    out = entry.sessions[role].run(
        [io.outputs[0].name], {io.inputs[0].name: np.ascontiguousarray(z, np.float32)}
    )[0]
    return _unit_range(out)


def _unit_range(x: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(np.asarray(x, np.float32), nan=0.0), 0.0, 1.0)


def sample(entry, count: int, seed: int | None = None) -> Images:
    """``count`` images from the prior: one decoder call for all of them."""
    seed = draw_seed() if seed is None else seed
    z = latents(count, entry.card.latent_dim, seed)
    return Images(decode(entry, z), z, {"seed": seed})


def reconstruct(entry, pixels: np.ndarray) -> Images:
    """A VAE's view of preprocessed uploads (N, C, H, W) in [0, 1]: encode, decode the mean.

    Two ONNX calls (encoder, decoder). ``extra`` holds the posterior ``mean`` and ``logvar``
    (N, latent_dim) and ``mse``, the mean squared pixel error per image; ``images`` is the
    reconstruction and ``latents`` the mean it was decoded from.
    """
    x = np.ascontiguousarray(pixels, np.float32)
    io = entry.card.io["encoder"]
    mean, logvar = entry.sessions["encoder"].run(
        [o.name for o in io.outputs[:2]], {io.inputs[0].name: x}
    )
    recon = decode(entry, mean)
    mse = ((recon - x) ** 2).reshape(len(x), -1).mean(axis=1)
    return Images(
        recon, mean.astype(np.float32), extra={"mean": mean, "logvar": logvar, "mse": mse}
    )


def interpolate(
    entry, seed_from: int, seed_to: int, steps: int, method: Method = "slerp"
) -> Images:
    """``steps`` images on the path between the first latents of two seeds: one decoder call."""
    dim = entry.card.latent_dim
    a, b = latents(1, dim, seed_from)[0], latents(1, dim, seed_to)[0]
    path = INTERPOLATIONS[method](a, b, np.linspace(0.0, 1.0, steps)).astype(
        np.float32
    )  # (steps, D)
    return Images(decode(entry, path), path, {"seed_from": seed_from, "seed_to": seed_to})


# --- output ------------------------------------------------------------------------------------


def grid_columns(count: int) -> int:
    """The default grid: as square as it gets."""
    return max(1, math.ceil(math.sqrt(count)))


def to_png(images: np.ndarray, columns: int | None = None, scale: int = 1) -> bytes:
    """A PNG grid of (N, C, H, W) images, each enlarged ``scale`` times (nearest neighbour)."""
    n = len(images)
    return images_to_png(images, columns=min(columns or grid_columns(n), n), scale=scale)


def to_lists(images: np.ndarray, decimals: int = 5) -> list:
    """(N, C, H, W) -> nested lists (N, H, W) for one channel, (N, C, H, W) otherwise."""
    a = images[:, 0] if images.shape[1] == 1 else images
    return np.round(a.astype(np.float64), decimals).tolist()

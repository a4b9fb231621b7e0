"""Generative endpoints: the plain functions (service/generative.py) without HTTP, then /sample,
/reconstruct and /interpolate over real HTTP on dry-run VAE, DCGAN and lenet5 from the real pipeline."""

from __future__ import annotations

import dataclasses
import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import Server
from service import generative as gen
from service.catalog import Catalog
from service.runtime import RuntimeConfig


@pytest.fixture(scope="module")
def gen_repo(tmp_path_factory):
    """vae, gan and lenet5 from dry runs (~30 s on 2 cores); lenet5 last so nothing judges samples."""
    from training import pipeline

    root = tmp_path_factory.mktemp("genmodels")
    runs = tmp_path_factory.mktemp("genruns")
    for name in ("vae", "gan", "lenet5"):
        pipeline.train(name, profile="dry-run", models_root=root, runs_root=runs, progress=False)
    return root


@pytest.fixture(scope="module")
def catalog(gen_repo):
    cat = Catalog(gen_repo, runtime=RuntimeConfig(device="cpu"))
    assert all(e.status == "ready" for e in cat.entries), [e.reason for e in cat.entries]
    return cat


class CountingSession:
    """An ONNX Runtime session that records the batch shape of every run() and passes it on."""

    def __init__(self, session):
        self.session, self.calls = session, []

    def run(self, output_names, feed, *args, **kwargs):
        self.calls.append({name: np.shape(v) for name, v in feed.items()})
        return self.session.run(output_names, feed, *args, **kwargs)


def counted(entry):
    return dataclasses.replace(entry, sessions={r: CountingSession(s) for r, s in entry.sessions.items()})


# --- plain functions ----------------------------------------------------------------------------

def test_lerp_and_slerp_endpoints_are_exact_and_slerp_keeps_the_norm_between():
    a, b = gen.latents(2, 16, seed=3).astype(np.float64)
    b = 2.5 * b  # unequal norms
    t = np.linspace(0, 1, 9)
    for fn in (gen.lerp, gen.slerp):
        path = fn(a, b, t)
        assert path.shape == (9, 16)
        assert np.array_equal(path[0], a) and np.array_equal(path[-1], b)
    norms = np.linalg.norm(gen.slerp(a, b, t), axis=1)
    lo, hi = sorted([np.linalg.norm(a), np.linalg.norm(b)])
    assert np.all(norms >= lo - 1e-9) and np.all(norms <= hi + 1e-9)
    assert np.allclose(norms, np.linspace(np.linalg.norm(a), np.linalg.norm(b), 9))  # linear in t
    # equal norms: slerp stays on the sphere, lerp cuts inside it
    c = b / np.linalg.norm(b) * np.linalg.norm(a)
    assert np.allclose(np.linalg.norm(gen.slerp(a, c, t), axis=1), np.linalg.norm(a))
    assert np.linalg.norm(gen.lerp(a, c, t)[4]) < np.linalg.norm(a) - 0.1
    # constant angular speed: equal angles between neighbours
    unit = gen.slerp(a, c, t) / np.linalg.norm(a)
    angles = np.arccos(np.clip(np.sum(unit[1:] * unit[:-1], axis=1), -1, 1))
    assert np.allclose(angles, angles[0])
    # parallel vectors fall back to lerp (no unique great circle)
    assert np.allclose(gen.slerp(a, 2 * a, t), gen.lerp(a, 2 * a, t))


def test_latents_are_fixed_by_the_seed_and_rows_do_not_depend_on_count():
    z = gen.latents(16, 8, seed=42)
    assert z.dtype == np.float32 and z.shape == (16, 8)
    assert np.array_equal(z, gen.latents(16, 8, seed=42))
    assert np.array_equal(z[:1], gen.latents(1, 8, seed=42))
    assert not np.array_equal(z, gen.latents(16, 8, seed=43))
    assert 0 <= gen.draw_seed() < gen.SEED_LIMIT


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_sample_is_one_onnx_call_and_deterministic(catalog, name):
    entry = counted(catalog.resolve(name, gen.GENERATIVE_TASKS))
    role = gen.DECODER_ROLE[entry.card.task]
    first = gen.sample(entry, 37, seed=5)
    assert [list(c.values())[0] for c in entry.sessions[role].calls] == [(37, entry.card.latent_dim)]
    h, w = entry.card.image.size
    assert first.images.shape == (37, entry.card.image.channels, h, w) and first.images.dtype == np.float32
    assert first.images.min() >= 0 and first.images.max() <= 1
    assert first.seeds == {"seed": 5}
    again = gen.sample(entry, 37, seed=5)
    assert np.array_equal(first.images, again.images) and np.array_equal(first.latents, again.latents)
    assert gen.to_png(first.images, scale=2) == gen.to_png(again.images, scale=2)
    drawn = gen.sample(entry, 2)
    assert 0 <= drawn.seeds["seed"] < gen.SEED_LIMIT
    assert np.array_equal(drawn.images, gen.sample(entry, 2, seed=drawn.seeds["seed"]).images)


def test_interpolate_is_one_decoder_call_between_the_seeds_first_latents(catalog):
    for name in ("vae", "gan"):
        entry = counted(catalog.resolve(name, gen.GENERATIVE_TASKS))
        role = gen.DECODER_ROLE[entry.card.task]
        for method in ("lerp", "slerp"):
            out = gen.interpolate(entry, 1, 2, steps=7, method=method)
            assert out.images.shape[0] == 7
            assert np.array_equal(out.latents[0], gen.latents(1, entry.card.latent_dim, 1)[0])
            assert np.array_equal(out.latents[-1], gen.latents(1, entry.card.latent_dim, 2)[0])
            assert np.array_equal(out.images[0], gen.sample(entry, 3, seed=1).images[0])
        assert len(entry.sessions[role].calls) == 2 + 2  # one per interpolation, one per sample


def test_reconstruct_encodes_then_decodes_the_mean(catalog):
    entry = counted(catalog.resolve("vae", ["vae"]))
    pixels = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    out = gen.reconstruct(entry, pixels)
    assert len(entry.sessions["encoder"].calls) == 1 and len(entry.sessions["decoder"].calls) == 1
    d = entry.card.latent_dim
    assert out.extra["mean"].shape == (3, d) and out.extra["logvar"].shape == (3, d)
    assert np.array_equal(out.images, gen.decode(entry, out.extra["mean"]))
    assert np.allclose(out.extra["mse"], ((out.images - pixels) ** 2).mean(axis=(1, 2, 3)))


def test_png_grid_and_lists():
    images = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    img = Image.open(io.BytesIO(gen.to_png(images, columns=2, scale=3)))
    # tiles of 28*3 with a 1-pixel border around and between them: 2 columns, 3 rows
    assert img.size == (2 * 84 + 3, 3 * 84 + 4)
    assert gen.grid_columns(16) == 4 and gen.grid_columns(5) == 3
    lists = gen.to_lists(images)
    assert np.asarray(lists).shape == (5, 28, 28)

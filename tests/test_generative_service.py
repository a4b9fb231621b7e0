"""Generative endpoints: the plain functions (service/latent.py) without HTTP, then /sample,
/reconstruct and /interpolate over real HTTP on dry-run VAE, DCGAN and lenet5 from the real
pipeline."""

from __future__ import annotations

import dataclasses
import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from conftest import Server
from PIL import Image

from service import latent as gen
from service import schemas
from service.repository import Catalog
from service.runtime import RuntimeConfig


@pytest.fixture(scope="module")
def gen_repo(tmp_path_factory):
    """vae, gan and lenet5 from dry runs (~30 s on 2 cores); lenet5 last so nothing judges
    samples."""
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
    return dataclasses.replace(
        entry, sessions={r: CountingSession(s) for r, s in entry.sessions.items()}
    )


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
    assert 0 <= schemas.draw_seed() < schemas.SEED_LIMIT


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_sample_is_one_onnx_call_and_deterministic(catalog, name):
    entry = counted(catalog.resolve(name, gen.GENERATIVE_TASKS))
    role = gen.DECODER_ROLE[entry.card.task]
    first = gen.sample(entry, 37, seed=5)
    assert [list(c.values())[0] for c in entry.sessions[role].calls] == [
        (37, entry.card.latent_dim)
    ]
    h, w = entry.card.image.size
    assert (
        first.images.shape == (37, entry.card.image.channels, h, w)
        and first.images.dtype == np.float32
    )
    assert first.images.min() >= 0 and first.images.max() <= 1
    assert first.seeds == {"seed": 5}
    again = gen.sample(entry, 37, seed=5)
    assert np.array_equal(first.images, again.images) and np.array_equal(
        first.latents, again.latents
    )
    assert gen.to_png(first.images, scale=2) == gen.to_png(again.images, scale=2)
    drawn = gen.sample(entry, 2)
    assert 0 <= drawn.seeds["seed"] < schemas.SEED_LIMIT
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


# --- over HTTP --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gclient(gen_repo):
    with Server(gen_repo) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c


def error_text(resp) -> str:
    """The message of the service's one error body, ``{"error": str[, "detail": list]}``."""
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body["error"], str), body
    return body["error"] + str(body.get("detail", ""))


def png_size(resp) -> tuple[int, int]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(resp.content)).size


def grid_size(rows: int, cols: int, tile: int) -> tuple[int, int]:
    return cols * (tile + 1) + 1, rows * (tile + 1) + 1  # 1-pixel borders around and between tiles


def tile_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.rint(np.asarray(array) * 255).astype(np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("model", ["vae", "gan"])
def test_sample_png_grid_and_same_seed_same_bytes(gclient, model):
    resp = gclient.post(
        "/sample", json={"model": model, "count": 5, "columns": 2, "scale": 3, "seed": 11}
    )
    assert png_size(resp) == grid_size(3, 2, 28 * 3)
    assert resp.headers["x-seed"] == "11" and resp.headers["x-model"] == f"{model}@1"
    again = gclient.post(
        "/sample", json={"model": model, "count": 5, "columns": 2, "scale": 3, "seed": 11}
    )
    assert again.content == resp.content
    assert (
        gclient.post(
            "/sample", json={"model": model, "count": 5, "columns": 2, "scale": 3, "seed": 12}
        ).content
        != resp.content
    )
    # defaults: gan, 16 images in a 4 x 4 grid at scale 1; the drawn seed comes back and repeats
    drawn = gclient.post("/sample", json={})
    assert png_size(drawn) == grid_size(4, 4, 28) and drawn.headers["x-model"] == "gan@1"
    repeat = gclient.post("/sample", json={"seed": int(drawn.headers["x-seed"])})
    assert repeat.content == drawn.content


def test_sample_json_arrays(gclient, catalog):
    resp = gclient.post("/sample", json={"model": "vae", "count": 3, "seed": 7, "format": "json"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    body = resp.json()
    images, z = np.asarray(body["images"]), np.asarray(body["latents"], dtype=np.float32)
    assert images.shape == (3, 28, 28) and images.min() >= 0 and images.max() <= 1
    dim = catalog.resolve("vae").card.latent_dim
    assert body["seed"] == 7 and np.array_equal(z, gen.latents(3, dim, 7))
    assert (
        resp.content
        == gclient.post(
            "/sample", json={"model": "vae", "count": 3, "seed": 7, "format": "json"}
        ).content
    )
    assert (
        np.abs(images - gen.to_lists(gen.sample(catalog.resolve("vae"), 3, 7).images)).max() < 1e-4
    )


def test_reconstruct_png_and_json(gclient, catalog):
    from digit_images import render_digits

    data, _ = render_digits(1, seed=3)[0]
    resp = gclient.post("/reconstruct", files={"image": ("d.png", data)}, data={"scale": "2"})
    assert png_size(resp) == grid_size(
        1, 2, 56
    )  # the model's view of the input, its reconstruction
    body = gclient.post(
        "/reconstruct", files={"image": ("d.png", data)}, data={"format": "json"}
    ).json()
    dim = catalog.resolve("vae").card.latent_dim
    assert body["model"] == "vae" and len(body["mean"]) == dim and len(body["logvar"]) == dim
    x, y = np.asarray(body["input"]), np.asarray(body["reconstruction"])
    assert x.shape == y.shape == (28, 28) and 0 <= y.min() and y.max() <= 1
    assert body["reconstruction_error"]["mse"] == pytest.approx(
        float(((x - y) ** 2).mean()), abs=1e-4
    )


@pytest.mark.parametrize("model", ["vae", "gan"])
@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolation_strip_changes_smoothly(gclient, model, method):
    req = {"model": model, "seed_from": 1, "seed_to": 2, "steps": 9, "method": method}
    strip = gclient.post("/interpolate", json={**req, "scale": 2})
    assert png_size(strip) == grid_size(1, 9, 56)
    assert strip.headers["x-seed-from"] == "1" and strip.headers["x-seed-to"] == "2"
    frames = np.asarray(
        gclient.post("/interpolate", json={**req, "format": "json"}).json()["images"]
    )
    assert frames.shape == (9, 28, 28)
    neighbours = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2))
    ends = np.abs(frames[-1] - frames[0]).mean()
    print(f"{model} {method}: neighbours max {neighbours.max():.5f}, endpoints {ends:.5f}")
    assert ends > 0 and neighbours.max() < ends
    first = gclient.post(
        "/sample", json={"model": model, "count": 1, "seed": 1, "format": "json"}
    ).json()
    assert np.array_equal(
        frames[0], np.asarray(first["images"][0])
    )  # the path starts at seed 1's sample


def _png_upload(client, route, data: bytes, **fields):
    return client.post(
        route,
        files={"image": ("x.png", data, "application/octet-stream")},
        data={k: str(v) for k, v in fields.items()},
    )


@pytest.mark.parametrize(
    "route, body, status, words",
    [
        ("/sample", {"model": "nope"}, 404, ["no model named 'nope'", "gan, vae"]),
        ("/sample", {"model": "lenet5"}, 400, ["classify model", "takes vae or gan models"]),
        ("/sample", {"model": "vae@7"}, 404, ["no version 7"]),
        ("/sample", {"count": 0}, 400, ["count", "from 1 to 64"]),
        ("/sample", {"count": 65}, 400, ["count", "from 1 to 64"]),
        ("/sample", {"count": "many"}, 400, ["count", "from 1 to 64"]),
        ("/sample", {"scale": 9}, 400, ["scale", "from 1 to 8"]),
        ("/sample", {"columns": 0}, 400, ["columns", "from 1 to 64"]),
        ("/sample", {"seed": -1}, 400, ["seed", "from 0 to 4294967295"]),
        ("/sample", {"format": "gif"}, 400, ["format", "'png' or 'json'"]),
        ("/interpolate", {"model": "mlp"}, 404, ["no model named 'mlp'", "gan, vae"]),
        ("/interpolate", {"model": "lenet5"}, 400, ["takes vae or gan models"]),
        ("/interpolate", {"steps": 1}, 400, ["steps", "from 2 to 32"]),
        ("/interpolate", {"steps": 33}, 400, ["steps", "from 2 to 32"]),
        ("/interpolate", {"scale": 0}, 400, ["scale", "from 1 to 8"]),
        ("/interpolate", {"method": "cubic"}, 400, ["method", "'lerp' or 'slerp'"]),
        ("/sample", {"cuont": 3}, 400, ["cuont", "Extra inputs are not permitted"]),
        ("/interpolate", {"seed": 3}, 400, ["seed", "Extra inputs are not permitted"]),
    ],
)
def test_json_endpoint_errors_name_the_problem(gclient, route, body, status, words):
    resp = gclient.post(route, json=body)
    assert resp.status_code == status, resp.text
    for word in words:
        assert word in error_text(resp), (word, resp.text)


def test_reconstruct_errors_name_the_problem(gclient):
    from digit_images import render_digits

    good = render_digits(1)[0][0]
    cases = [
        (good, {"model": "gan"}, 400, ["'gan' is a gan model", "takes vae models: vae"]),
        (good, {"model": "lenet5"}, 400, ["takes vae models"]),
        (good, {"model": "nope"}, 404, ["no model named 'nope'", "vae"]),
        (good, {"format": "bmp"}, 400, ["format"]),
        (good, {"scale": 9}, 400, ["scale", "from 1 to 8"]),
        (b"hello, I am text", {}, 415, ["allowed format"]),
        (good[: len(good) // 2], {}, 400, ["image"]),
    ]
    for data, fields, status, words in cases:
        resp = _png_upload(gclient, "/reconstruct", data, **fields)
        assert resp.status_code == status, (fields, resp.text)
        for word in words:
            assert word in error_text(resp), (word, resp.text)
    resp = gclient.post("/reconstruct", data={"image": "http://127.0.0.1:9/secret.png"})
    assert resp.status_code == 400 and "URLs" in error_text(resp)
    assert gclient.post("/reconstruct", data={"model": "vae"}).status_code == 400  # no image


@pytest.mark.parametrize("model", ["vae", "gan"])
def test_quality_check_mechanics_over_http(gclient, model):
    """The issue's quality check, over HTTP: 200 samples classified by lenet5 through /classify.
    On dry-run models only the mechanics are asserted; `make models` gives the real figures."""
    images = []
    for seed, count in enumerate([64, 64, 64, 8]):
        resp = gclient.post(
            "/sample", json={"model": model, "count": count, "seed": seed, "format": "json"}
        )
        assert resp.status_code == 200, resp.text
        images += resp.json()["images"]
    assert len(images) == 200

    def top(img):
        resp = _png_upload(gclient, "/classify", tile_png(img), model="lenet5", top_k=1)
        assert resp.status_code == 200, resp.text
        best = resp.json()["predictions"][0]
        return best["index"], best["probability"]

    with ThreadPoolExecutor(4) as pool:
        tops = list(pool.map(top, images))
    classes = {c for c, _ in tops}
    confidence = float(np.mean([p for _, p in tops]))
    print(
        f"{model}: 200 samples, mean top probability {confidence:.3f}, "
        f"{len(classes)} digits covered"
    )
    assert 0.1 <= confidence <= 1 and 1 <= len(classes) <= 10

"""VAE and DCGAN: the losses against hand computations, the judge's scores, and dry-run training
-> export -> card with lenet5 (itself from a dry run) as the judge."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from service.card import load_card
from service.imaging import images_to_png
from training import pipeline
from training.judge import Judge, frechet_distance, inception_score
from training.loop import load_checkpoint
from training.tasks import rebuild
from training.tasks.gan import discriminator_loss, generator_loss, minimax_value
from training.tasks.vae import vae_loss


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --- losses and scores ----------------------------------------------------------------------------


def test_vae_loss_is_reconstruction_plus_kl_by_hand():
    rng = np.random.default_rng(0)
    n, pixels, latent = 3, 5, 2
    logits, x = rng.normal(size=(n, pixels)), rng.random((n, pixels))
    mean, logvar = rng.normal(size=(n, latent)), rng.normal(size=(n, latent)) * 0.5
    p = 1 / (1 + np.exp(-logits))
    bce = -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p)) / n  # Bernoulli NLL, per image
    # KL(N(m, s^2) || N(0, 1)) = 1/2 (m^2 + s^2 - 1 - log s^2), summed over z
    kl = 0.5 * np.sum(mean**2 + np.exp(logvar) - 1 - logvar) / n
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    loss, reconstruction, kl_term = vae_loss(t(logits), t(x), t(mean), t(logvar))
    assert reconstruction.item() == pytest.approx(bce, rel=1e-10)
    assert kl_term.item() == pytest.approx(kl, rel=1e-10)
    assert loss.item() == pytest.approx(bce + kl, rel=1e-10)
    # a posterior equal to the prior costs nothing
    zero = vae_loss(t(logits), t(x), t(np.zeros((n, latent))), t(np.zeros((n, latent))))[2]
    assert zero.item() == 0.0


def test_minimax_value_and_gan_losses_by_hand():
    d_real, d_fake = np.array([0.9, 0.6, 0.75]), np.array([0.2, 0.4])  # D's probabilities
    logit = lambda p: torch.tensor(np.log(p / (1 - p)), dtype=torch.float64)  # noqa: E731
    value = np.mean(np.log(d_real)) + np.mean(np.log(1 - d_fake))  # V(D, G)
    assert minimax_value(logit(d_real), logit(d_fake)).item() == pytest.approx(value, rel=1e-12)
    assert discriminator_loss(logit(d_real), logit(d_fake)).item() == pytest.approx(
        -value, rel=1e-12
    )
    # non-saturating: -E log D(G(z)), not E log(1 - D(G(z)))
    assert generator_loss(logit(d_fake)).item() == pytest.approx(
        -np.mean(np.log(d_fake)), rel=1e-12
    )
    half = torch.zeros(4, dtype=torch.float64)  # D = 1/2 everywhere: the equilibrium value -log 4
    assert minimax_value(half, half).item() == pytest.approx(-math.log(4), rel=1e-12)


def test_inception_score_and_frechet_distance():
    one_hot = np.eye(10)[np.arange(1000) % 10]
    assert inception_score(one_hot) == pytest.approx(10.0, rel=1e-6)  # confident and diverse
    assert inception_score(np.full((100, 10), 0.1)) == pytest.approx(1.0)  # no information
    assert inception_score(np.eye(10)[np.zeros(100, int)]) == pytest.approx(1.0)  # one class only
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 4)) @ rng.normal(size=(4, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + np.array([1.0, 2.0, 0.0, -2.0])) == pytest.approx(9.0, rel=1e-6)
    # against the closed form for diagonal covariances: sum (s_a - s_b)^2 + |mu_a - mu_b|^2
    x = rng.normal(size=(200_000, 3)) * np.array([1.0, 2.0, 3.0])
    y = rng.normal(size=(200_000, 3)) * np.array([2.0, 2.0, 1.0]) + 1.0
    assert frechet_distance(x, y) == pytest.approx(1 + 0 + 4 + 3, rel=0.02)


def test_grid_png_layout():
    # 2 pixels of padding at twice the size: 4 in the picture
    png = images_to_png(torch.rand(12, 1, 28, 28).numpy(), columns=5, pad=4, scale=2)
    image = Image.open(io.BytesIO(png))
    assert image.mode == "L" and image.size == ((5 * 30 + 2) * 2, (3 * 30 + 2) * 2)


# --- dry runs with a judge ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """lenet5 (the judge), then vae and gan, dry runs into one model repository."""
    root = tmp_path_factory.mktemp("gen")
    models, runs = root / "models", root / "runs"
    built = {
        name: pipeline.train(
            name, profile="dry-run", models_root=models, runs_root=runs, progress=False
        )
        for name in ("lenet5", "vae", "gan")
    }
    return built, models, runs


def _check_graph(folder, card, role):
    assert card.parity[role].max_abs_diff <= card.parity[role].tolerance
    assert card.parity[role].batch_sizes == [1, 7]
    graph = onnx.load(str(folder / card.files[role].path))
    assert all(v.type.tensor_type.shape.dim[0].dim_param == "batch" for v in graph.graph.input)
    return _session(folder / card.files[role].path)


def test_vae_dry_run_exports_encoder_and_decoder(zoo):
    built, _, runs = zoo
    folder = built["vae"]
    card = load_card(folder / "card.json")
    assert card.task == "vae" and set(card.files) == {"encoder", "decoder"}
    assert card.latent_dim == 4 and card.image.size == (28, 28) and card.image.channels == 1
    assert card.image.ink == "light"
    assert (
        card.preprocess is not None
        and card.preprocess.size == (28, 28)
        and card.preprocess.ink == "light"
    )
    assert card.metrics["test_elbo"] < 0 and card.metrics["sample_judge"] == "lenet5@1"
    assert card.metrics["sample_fid_features"].startswith("lenet5 penultimate")
    for key in ("sample_is", "sample_fid", "sample_classes", "sample_confidence"):
        assert key in card.metrics
    for extra in (
        "card.md",
        "metrics.jsonl",
        "learning_curves.png",
        "samples.png",
        "reconstructions.png",
    ):
        assert (folder / extra).stat().st_size > 0
    encoder, decoder = _check_graph(folder, card, "encoder"), _check_graph(folder, card, "decoder")
    assert [t.name for t in card.io["encoder"].inputs] == ["pixels"]
    assert [t.name for t in card.io["encoder"].outputs] == ["mean", "logvar"]
    assert card.io["decoder"].inputs[0].shape == ["batch", 4]
    assert card.io["decoder"].outputs[0].shape == ["batch", 1, 28, 28]

    model = rebuild(load_checkpoint(runs / "vae" / "best.pt"))
    z = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    (image,) = decoder.run(["image"], {"z": z})
    assert image.min() >= 0.0 and image.max() <= 1.0
    with torch.inference_mode():
        np.testing.assert_allclose(image, model.decode(torch.from_numpy(z)).numpy(), atol=1e-5)
    pixels = np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32)
    mean, logvar = encoder.run(["mean", "logvar"], {"pixels": pixels})
    with torch.inference_mode():
        want_mean, want_logvar = model.encode(torch.from_numpy(pixels))
    np.testing.assert_allclose(mean, want_mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(logvar, want_logvar.numpy(), atol=1e-5)


def test_gan_dry_run_exports_a_generator(zoo):
    built, _, runs = zoo
    folder = built["gan"]
    card = load_card(folder / "card.json")
    assert card.task == "gan" and set(card.files) == {"generator"} and card.latent_dim == 8
    assert card.metrics["sample_judge"] == "lenet5@1" and card.metrics["selected_by"].startswith(
        "validation"
    )
    for extra in ("card.md", "metrics.jsonl", "learning_curves.png", "samples.png"):
        assert (folder / extra).stat().st_size > 0
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert {"value", "val_value", "d_loss", "g_loss", "val_fid"} <= set(history[0])
    assert history[0]["value"] == pytest.approx(-history[0]["d_loss"])
    generator = _check_graph(folder, card, "generator")
    z = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    (image,) = generator.run(["image"], {"z": z})
    assert image.shape == (6, 1, 28, 28) and image.min() >= 0.0 and image.max() <= 1.0
    gan = rebuild(load_checkpoint(runs / "gan" / "best.pt"))
    with torch.inference_mode():
        want = (gan.generator(torch.from_numpy(z)) + 1) / 2
    np.testing.assert_allclose(image, want.numpy(), atol=1e-5)


def test_judge_uses_lenet5_penultimate_features(zoo):
    _, models, runs = zoo
    judge = Judge.load(models, runs)
    assert judge.ref == "lenet5@1" and judge.size == (32, 32)
    images = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert judge.features(images).shape == (20, 84)
    probs = judge.probabilities(images)
    assert probs.shape == (20, 10) and np.allclose(probs.sum(axis=1), 1.0)
    scores = judge.score(images, torch.rand(30, 1, 28, 28))
    assert 1.0 <= scores["sample_is"] <= 10.0 and 1 <= scores["sample_classes"] <= 10


def test_gan_without_a_judge_says_so_and_resumes(tmp_path):
    kwargs = {
        "profile": "dry-run",
        "models_root": tmp_path / "m",
        "runs_root": tmp_path / "r",
        "progress": False,
    }
    # with the generator's weight average, whose state must survive the resume too
    pipeline.train("gan", options={"epochs": 1, "ema_decay": 0.5}, **kwargs)
    folder = pipeline.train("gan", options={"epochs": 2, "ema_decay": 0.5}, resume=True, **kwargs)
    card = load_card(folder / "card.json")
    assert card.metrics["sample_judge"] is None and "not judged" in card.metrics["sample_note"]
    assert card.metrics["selected_by"] == "last epoch" and card.metrics["best_epoch"] == 2
    ckpt = load_checkpoint(tmp_path / "r" / "gan" / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and [h["epoch"] for h in ckpt["history"]] == [1, 2]
    assert set(ckpt["generator_average"]) == {
        k[len("generator.") :] for k in ckpt["model"] if k.startswith("generator.")
    }
    best = load_checkpoint(tmp_path / "r" / "gan" / "best.pt")
    for key, value in ckpt["generator_average"].items():  # the exported generator is the average
        assert torch.equal(best["model"][f"generator.{key}"], value)
    lines = (tmp_path / "r" / "gan" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]

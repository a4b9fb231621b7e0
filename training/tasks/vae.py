"""The variational autoencoder: 28x28 digits -> ``loop.fit`` on the negative ELBO -> best
checkpoint -> the ``encoder`` (``pixels`` -> ``mean``, ``logvar``) and ``decoder`` (``z`` ->
``image``) graphs, with samples judged by :mod:`training.judge`. Images are (batch, 1, 28, 28) in
[0, 1]; z is standard normal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.architectures.vae import VAE, VAEDecoder, VAEEncoder
from training.data import augment as augment_images
from training.export import BATCH, Graph
from training.judge import JUDGED_SAMPLES, Judge, headline, unjudged
from training.loop import finish_distributed, fit, load_checkpoint, split_options
from training.recipes import Recipe, get
from training.report import learning_curves
from training.tasks.common import (
    IMAGE_SIZE,
    fit_metrics,
    history_lines,
    image_card_fields,
    image_data,
    noise,
    publish_run,
    run_meta,
    sample_grid,
    save_best,
)

log = logging.getLogger("training")

VAE_OPTIONS: dict[str, Any] = {}


def vae_loss(logits: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor):
    """Negative ELBO per image (nats) = reconstruction + KL; returns (loss, reconstruction, kl).

    Reconstruction: Bernoulli negative log-likelihood of the pixels, summed over pixels, from the
    decoder's logits. KL(N(mean, exp(logvar)) || N(0, I)) in closed form, summed over z.
    """
    n = x.shape[0]
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
    kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp()) / n
    return reconstruction + kl, reconstruction, kl


class VariationalBound:
    """Loss: the negative ELBO per image; validation the same, with fixed noise (deterministic)."""

    metric = "loss"
    higher_is_better = False

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = batch[0]
        logits, mean, logvar = model(x)
        return vae_loss(logits, x, mean, logvar)[0]

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, data: tuple[torch.Tensor, ...]) -> dict[str, float]:
        x = data[0]
        z = torch.randn(x.shape[0], model.latent_dim, generator=torch.Generator().manual_seed(0))
        logits, mean, logvar = model(x, z.to(x.device))
        loss, reconstruction, kl = vae_loss(logits, x, mean, logvar)
        return {
            "loss": loss.item(),
            "elbo": -loss.item(),
            "reconstruction": reconstruction.item(),
            "kl": kl.item(),
        }


def train(
    recipe: Recipe,
    *,
    profile: str | None = None,
    options: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    models_root: Path = Path("models"),
    runs_root: Path = Path("runs"),
    resume: bool = False,
    progress: bool = True,
) -> Path | None:
    """Train the VAE on 28x28 digits (or MNIST / Fashion-MNIST), judge its samples, publish it."""
    defaults, train_opts, _ = recipe.resolved(profile)
    cfg, task = split_options({**train_opts, **(options or {})}, VAE_OPTIONS)
    data = image_data(recipe, dataset, data_root, cfg)
    model_args = {
        **defaults,
        **(model_args or {}),
        "image_size": list(IMAGE_SIZE),
        "channels": 1,
    }
    torch.manual_seed(cfg.seed)
    model = recipe.builder(**model_args)
    objective = VariationalBound()
    aug = (lambda x, g: augment_images(x, cfg.augment, g)) if cfg.augment != "none" else None
    meta = run_meta(recipe, model_args, task_options=task)
    run_dir = Path(runs_root) / recipe.name
    result = fit(
        model,
        data.train,
        data.val,
        objective,
        cfg,
        run_dir,
        augment=aug,
        meta=meta,
        resume=resume,
        progress=progress,
    )
    if not finish_distributed():
        return None

    model.cpu().eval()
    test = objective.evaluate(model, data.test)
    with torch.inference_mode():
        samples = model.decode(
            noise(JUDGED_SAMPLES, model.latent_dim, cfg.seed + 1)
        )  # (N, 1, 28, 28)
    judge = Judge.load(models_root, runs_root)
    judged = judge.score(samples, data.test[0]) if judge is not None else unjudged()
    metrics = {
        "test_elbo": round(test["elbo"], 3),
        "test_reconstruction": round(test["reconstruction"], 3),
        "test_kl": round(test["kl"], 3),
        "elbo_units": "nats per image (one z sample per image)",
        **judged,
        **fit_metrics(result, model),
    }
    log.info("%s: test ELBO %.1f nats; samples %s", recipe.name, test["elbo"], headline(judged))
    best = save_best(
        run_dir,
        meta=meta,
        cfg=cfg,
        model=model,
        metrics=metrics,
        history=result.history,
        data=data,
        canonical=data.canonical,
        reconstruct=data.test[0][:10],
    )
    return export(best, models_root)


def rebuild(ckpt: dict[str, Any]) -> VAE:
    """The whole VAE a checkpoint describes (the exporter wraps its halves), eval mode."""
    model = get(ckpt["recipe"]).builder(**ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def export(checkpoint_path: Path, models_root: Path) -> Path:
    """Publish a VAE checkpoint's ``encoder`` and ``decoder`` graphs, samples and card."""
    ckpt = load_checkpoint(checkpoint_path)
    model = rebuild(ckpt)
    latent = model.latent_dim
    graphs = {
        "encoder": Graph(
            VAEEncoder(model),
            lambda b, g: (torch.rand(b, 1, *IMAGE_SIZE, generator=g),),
            ["pixels"],
            ["mean", "logvar"],
            {"pixels": {0: BATCH}},
        ),
        "decoder": Graph(
            VAEDecoder(model),
            lambda b, g: (torch.randn(b, latent, generator=g),),
            ["z"],
            ["image"],
            {"z": {0: BATCH}},
        ),
    }
    fields = {
        **image_card_fields(ckpt),
        # for /reconstruct: uploads are brought to the training digits' form; pixels in [0, 1]
        "preprocess": {
            "size": IMAGE_SIZE,
            "channels": 1,
            "mean": [0.0],
            "std": [1.0],
            "normalization_in_graph": True,
            **ckpt["canonical"],
        },
    }
    with torch.inference_mode():
        samples = model.decode(noise(100, latent, 0))
        originals = ckpt["reconstruct"]
        mean, _ = model.encode(originals)
        # each original beside its reconstruction
        pairs = torch.stack([originals, model.decode(mean)], dim=1).flatten(0, 1)
    extras: dict[str, Path | bytes] = {
        "metrics.jsonl": history_lines(ckpt["history"]),
        "learning_curves.png": learning_curves(ckpt["history"], "elbo"),
        "samples.png": sample_grid(samples),
        "reconstructions.png": sample_grid(pairs),
    }
    return publish_run(ckpt, models_root, fields, graphs, extras)

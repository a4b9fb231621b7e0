"""Generative tasks end to end: the VAE and the DCGAN, and the judge that scores their samples.

Same shape as the classifier pipeline: data -> model -> training -> best checkpoint (``model_args``,
config, data facts) -> an exporter that rebuilds from the checkpoint alone and publishes the
serving halves: ``encoder`` (``pixels`` -> ``mean``, ``logvar``) and ``decoder`` (``z`` ->
``image``) for the VAE, ``generator`` (``z`` -> ``image``) for the GAN. Images are
(batch, 1, 28, 28) in [0, 1]; z is standard normal, the prior both models sample from.

The VAE trains with ``loop.fit`` (one optimizer; the objective is the negative ELBO). The GAN has
two players and two optimizers, so it has its own small loop here, with the same checkpoint
format (``loop.save_atomic``, loadable with ``weights_only=True``), ``metrics.jsonl``, ``--resume``
and ``--dry-run`` behaviour.

The judge: the zoo's ``lenet5`` (trained before the generative models). 1,000 samples from the
prior are resized 28 -> 32 as the data loader resizes (bilinear, ``align_corners=False``) and
classified by the highest ``models/lenet5`` version with ONNX Runtime:

- ``sample_is``: classifier Inception Score, ``exp(E_x KL(p(y|x) || p(y)))`` over all samples (one
  split; Salimans et al. 2016 with LeNet in place of Inception),
- ``sample_classes``: how many of the ten digits are some sample's top class,
- ``sample_confidence``: the mean top-class probability,
- ``sample_fid``: the Fréchet distance (Heusel et al. 2017) between Gaussians fitted to the
  samples' and the held-out real digits' features in lenet5's penultimate layer (F6, the input of
  its output layer: 84 units). Those come from lenet5 rebuilt from ``runs/lenet5/best.pt``, which
  is checked to give the ONNX graph's logits; without that checkpoint the logits are the features
  (the card says which: ``sample_fid_features``).

The GAN keeps the generator with the best Fréchet distance against the *validation* digits
(checked every epoch); reported numbers use the *test* digits. With ``ema_decay`` > 0 (the quick
profile) the generator judged, kept and exported is an exponential moving average of G's weights.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from service.card import load_card, versions
from training import recipes
from training.architectures.gan import DCGAN, ImageGenerator
from training.architectures.vae import VAEDecoder, VAEEncoder
from training.data import augment as augment_images
from training.data import load_images
from training.export import BATCH, Graph, publish
from training.loop import (
    CHECKPOINT_FORMAT,
    TrainConfig,
    finish_distributed,
    fit,
    fit_metrics,
    history_lines,
    load_checkpoint,
    make_scheduler,
    resolve_device,
    save_atomic,
    save_best,
)
from training.report import card_markdown, learning_curves
from training.sequence import split_options

log = logging.getLogger("training")

JUDGE = "lenet5"
JUDGED_SAMPLES = 1000
IMAGE_SIZE = (28, 28)
VAE_OPTIONS: dict[str, Any] = {}
# beta1: Adam's (Radford et al.: 0.5). ema_decay: the exported generator is an exponential moving
# average of the generator's weights (Yazici et al., "The unusual effectiveness of averaging in GAN
# training", ICLR 2019), its batch-norm statistics re-estimated afterwards; 0 exports G itself.
GAN_OPTIONS = {"beta1": 0.5, "ema_decay": 0.0}


# --- losses ---------------------------------------------------------------------------------------


def vae_loss(logits: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor):
    """Negative ELBO per image (nats) = reconstruction + KL; returns (loss, reconstruction, kl).

    Reconstruction: Bernoulli negative log-likelihood of the pixels, summed over pixels, from the
    decoder's logits. KL(N(mean, exp(logvar)) || N(0, I)) in closed form, summed over z.
    """
    n = x.shape[0]
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
    kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp()) / n
    return reconstruction + kl, reconstruction, kl


def minimax_value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))] with D = sigmoid(logits)."""
    return (
        F.logsigmoid(real_logits).mean() + F.logsigmoid(-fake_logits).mean()
    )  # log(1 - s(a)) = logs(-a)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D ascends V: its loss is -V(D, G)."""
    return -minimax_value(real_logits, fake_logits)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss -E_z[log D(G(z))] (Goodfellow et al. 2014, section 3)."""
    return -F.logsigmoid(fake_logits).mean()


# --- the judge ------------------------------------------------------------------------------------


def inception_score(probs: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) for class probabilities (N, K)."""
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1))))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between features (N, D) and (M, D).

    Tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD
    matrix.
    """
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sum(np.sqrt(np.clip(cross, 0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


class Judge:
    """lenet5 as the sample-quality judge: ONNX Runtime for the classes, torch for its F6
    features."""

    def __init__(
        self,
        ref: str,
        session: ort.InferenceSession,
        size: tuple[int, int],
        features: nn.Module | None,
        feature_note: str,
    ):
        self.ref, self.session, self.size = ref, session, size
        self.features_model, self.feature_note = features, feature_note

    @classmethod
    def load(cls, models_root: Path, runs_root: Path) -> Judge | None:
        """The highest ``lenet5`` version under ``models_root``; None (with a warning) if there is
        none."""
        found = versions(Path(models_root), JUDGE)
        if not found:
            log.warning(
                "no %s under %s: generative samples are not judged (train %s first; the zoo does)",
                JUDGE,
                models_root,
                JUDGE,
            )
            return None
        folder = Path(models_root) / JUDGE / str(found[-1])
        card = load_card(folder / "card.json")
        session = ort.InferenceSession(
            str(folder / card.files["model"].path), providers=["CPUExecutionProvider"]
        )
        judge = cls(card.ref, session, tuple(card.preprocess.size), None, "lenet5 logits (10)")
        ckpt_path = Path(runs_root) / JUDGE / "best.pt"
        if ckpt_path.exists():
            from training import pipeline  # the classifier pipeline rebuilds lenet5

            net = pipeline.rebuild(load_checkpoint(ckpt_path))
            probe = torch.rand(16, 1, *judge.size, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                expected = net(probe).numpy()
            got = session.run(None, {session.get_inputs()[0].name: probe.numpy()})[0]
            if np.max(np.abs(got - expected)) <= 1e-4 * max(1.0, float(np.max(np.abs(expected)))):
                judge.features_model = net
                judge.feature_note = "lenet5 penultimate layer (F6, 84 units)"
            else:
                log.warning(
                    "%s is not the model of %s: Fréchet distance on lenet5's logits",
                    ckpt_path,
                    card.ref,
                )
        else:
            log.warning(
                "no %s: Fréchet distance on lenet5's logits, not its penultimate layer", ckpt_path
            )
        return judge

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [0, 1] -> the judge's input size, resized as the data loader does."""
        if tuple(images.shape[-2:]) == self.size:
            return images
        shrink = self.size[0] < images.shape[-2] or self.size[1] < images.shape[-1]
        return F.interpolate(
            images, size=self.size, mode="bilinear", align_corners=False, antialias=shrink
        ).clamp(0.0, 1.0)

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        x = self.prepare(images).numpy().astype(np.float32)
        logits = self.session.run(None, {self.session.get_inputs()[0].name: x})[0]
        return torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> np.ndarray:
        x = self.prepare(images)
        if self.features_model is None:
            return self.session.run(None, {self.session.get_inputs()[0].name: x.numpy()})[0]
        captured: list[torch.Tensor] = []
        last = [m for m in self.features_model.modules() if isinstance(m, nn.Linear)][-1]
        hook = last.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self.features_model(x)
        finally:
            hook.remove()
        return captured[0].numpy()  # (N, 84): the output layer's input

    def fid(self, samples: torch.Tensor, real: torch.Tensor) -> float:
        return frechet_distance(self.features(samples), self.features(real))

    def score(self, samples: torch.Tensor, real: torch.Tensor) -> dict[str, Any]:
        probs = self.probabilities(samples)
        return {
            "sample_is": round(inception_score(probs), 3),
            "sample_fid": round(self.fid(samples, real), 2),
            "sample_classes": int(len(np.unique(probs.argmax(axis=1)))),
            "sample_confidence": round(float(probs.max(axis=1).mean()), 4),
            "sample_count": len(samples),
            "sample_judge": self.ref,
            "sample_fid_features": self.feature_note,
            "sample_fid_reference": f"{len(real)} held-out test digits",
            **self.references(real),
        }

    def references(self, real: torch.Tensor) -> dict[str, float]:
        """For scale, the same judge on held-out real digits and on uniform noise (as many as
        real)."""
        half = len(real) // 2
        noise = torch.rand(len(real), *real.shape[1:], generator=torch.Generator().manual_seed(0))
        return {
            "real_is": round(inception_score(self.probabilities(real)), 3),
            "real_fid_halves": round(self.fid(real[:half], real[half:]), 2),
            "noise_fid": round(self.fid(noise, real), 2),
        }


def unjudged() -> dict[str, Any]:
    return {
        "sample_judge": None,
        "sample_note": f"no {JUDGE} under the models root: samples not judged",
    }


# --- pictures -------------------------------------------------------------------------------------


def grid_png(images: torch.Tensor, nrow: int = 10, pad: int = 2, scale: int = 2) -> bytes:
    """(N, 1, H, W) in [0, 1] -> a PNG grid, ``nrow`` images a row, light ink on dark as the
    data."""
    n, _, h, w = images.shape
    rows = math.ceil(n / nrow)
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad), 64, dtype=np.uint8)
    pixels = (images[:, 0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = pixels[i]
    image = Image.fromarray(canvas, mode="L").resize(
        (canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST
    )
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def gan_curves(history: list[dict[str, Any]]) -> bytes:
    from training.report import plt  # matplotlib with the Agg backend

    epochs = [h["epoch"] for h in history]
    judged = [h for h in history if h.get("val_fid") is not None]
    fig, axes = plt.subplots(1, 3 if judged else 2, figsize=(13 if judged else 9, 3.2))
    axes[0].plot(epochs, [h["d_loss"] for h in history], label="D loss (-V)")
    axes[0].plot(epochs, [h["g_loss"] for h in history], label="G loss (-log D(G(z)))")
    axes[0].set_xlabel("epoch"), axes[0].legend()
    axes[1].plot(epochs, [h["value"] for h in history], label="train")
    axes[1].plot(epochs, [h["val_value"] for h in history], label="validation digits")
    axes[1].axhline(-2 * math.log(2), color="grey", ls=":", label="equilibrium -log 4")
    axes[1].set_xlabel("epoch"), axes[1].set_ylabel("V(D, G)"), axes[1].legend()
    if judged:
        judged_epochs = [h["epoch"] for h in judged]
        axes[2].plot(judged_epochs, [h["val_fid"] for h in judged], color="tab:green")
        axes[2].set_yscale("log")
        (
            axes[2].set_xlabel("epoch"),
            axes[2].set_ylabel("validation Fréchet distance (log)", color="tab:green"),
        )
        twin = axes[2].twinx()
        twin.plot(judged_epochs, [h["val_is"] for h in judged], color="tab:purple")
        twin.set_ylabel("validation Inception Score", color="tab:purple")
    fig.suptitle("DCGAN training")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _noise(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


def _image_data(
    recipe: recipes.Recipe, dataset: str | None, data_root: str | None, cfg: TrainConfig
):
    data = load_images(
        dataset or recipe.dataset,
        root=data_root,
        size=IMAGE_SIZE,
        channels=1,
        seed=cfg.seed,
        limit=cfg.limit,
    )
    return data


def _image_card_fields(ckpt: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": ckpt["recipe"],
        "architecture": ckpt["architecture"],
        "task": ckpt["task"],
        "dataset": ckpt["dataset"],
        "metrics": ckpt["metrics"],
        "training": {
            **ckpt["config"],
            **ckpt["task_options"],
            "model_args": ckpt["model_args"],
            "latent_prior": "standard normal",
        },
        "latent_dim": ckpt["model_args"]["latent_dim"],
        "image": {"size": IMAGE_SIZE, "channels": 1, "ink": "light"},
    }


# --- VAE ------------------------------------------------------------------------------------------


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
        noise = torch.randn(
            x.shape[0], model.latent_dim, generator=torch.Generator().manual_seed(0)
        )
        logits, mean, logvar = model(x, noise.to(x.device))
        loss, reconstruction, kl = vae_loss(logits, x, mean, logvar)
        return {
            "loss": loss.item(),
            "elbo": -loss.item(),
            "reconstruction": reconstruction.item(),
            "kl": kl.item(),
        }


def train_vae(
    recipe: recipes.Recipe,
    *,
    profile: str | None = None,
    options: dict[str, Any] | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    models_root: Path = Path("models"),
    runs_root: Path = Path("runs"),
    resume: bool = False,
    progress: bool = True,
) -> Path | None:
    """Train the VAE on 28x28 digits (or MNIST / Fashion-MNIST), judge its samples, publish it."""
    model_args, train_opts, _ = recipe.resolved(profile)
    cfg, task = split_options({**train_opts, **(options or {})}, VAE_OPTIONS)
    data = _image_data(recipe, dataset, data_root, cfg)
    model_args = {**model_args, "image_size": list(IMAGE_SIZE), "channels": 1}
    torch.manual_seed(cfg.seed)
    model = recipe.builder(**model_args)
    objective = VariationalBound()
    aug = (lambda x, g: augment_images(x, cfg.augment, g)) if cfg.augment != "none" else None
    meta = {
        "recipe": recipe.name,
        "task": recipe.task,
        "architecture": recipe.name,
        "model_args": model_args,
        "task_options": task,
    }
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
            _noise(JUDGED_SAMPLES, model.latent_dim, cfg.seed + 1)
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
    log.info(
        "%s: test ELBO %.1f nats; samples %s",
        recipe.name,
        test["elbo"],
        {
            k: v
            for k, v in judged.items()
            if k in ("sample_is", "sample_fid", "sample_classes", "sample_confidence")
        },
    )
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
    return export_vae(best, models_root)


rebuild_vae = recipes.rebuild  # the checkpoint carries recipe, model_args and weights


def export_vae(path: Path, models_root: Path) -> Path:
    """Publish a VAE checkpoint's ``encoder`` and ``decoder`` graphs, samples and card."""
    ckpt = load_checkpoint(path)
    model = rebuild_vae(ckpt)
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
    card_fields = {
        **_image_card_fields(ckpt),
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
        samples = model.decode(_noise(100, latent, 0))
        originals = ckpt["reconstruct"]
        mean, _ = model.encode(originals)
        pairs = torch.stack([originals, model.decode(mean)], dim=1).flatten(
            0, 1
        )  # original, reconstruction
    extras: dict[str, Path | bytes] = {
        "metrics.jsonl": history_lines(ckpt["history"]),
        "learning_curves.png": learning_curves(ckpt["history"], "elbo"),
        "samples.png": grid_png(samples, nrow=10),
        "reconstructions.png": grid_png(pairs, nrow=10),
    }
    recipe = recipes.get(ckpt["recipe"])
    images = ["learning_curves.png", "samples.png", "reconstructions.png"]
    return publish(
        models_root,
        card_fields,
        graphs,
        extras,
        card_md=lambda card: card_markdown(card, recipe.summary, images),
    )


# --- GAN ------------------------------------------------------------------------------------------


@torch.no_grad()
def recalibrate_batch_norm(
    generator: nn.Module,
    latent_dim: int,
    gen: torch.Generator,
    device,
    batches: int = 16,
    batch_size: int = 64,
) -> None:
    """Re-estimate the generator's batch-norm running statistics from its own batches (an
    average of weights has no running statistics of its own); leaves it in eval mode."""
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    generator.train()
    for _ in range(batches):
        generator(torch.randn(batch_size, latent_dim, generator=gen).to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    generator.eval()


def _gan_batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)] or [order]


def train_gan(
    recipe: recipes.Recipe,
    *,
    profile: str | None = None,
    options: dict[str, Any] | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    models_root: Path = Path("models"),
    runs_root: Path = Path("runs"),
    resume: bool = False,
    progress: bool = True,
) -> Path | None:
    """Train DCGAN on 28x28 digits (or MNIST / Fashion-MNIST), judge its samples, publish it.

    One process (two optimizers and a judge do not split across DDP ranks here). Per epoch: one
    discriminator and one generator step per batch; then V(D, G) on the validation digits and a
    fixed noise batch, and (with a judge) the validation Fréchet distance, which picks the
    generator kept and drives early stopping (``patience`` epochs without improvement).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            f"{recipe.name}: GAN training runs in one process; launch it without torchrun"
        )
    model_args, train_opts, _ = recipe.resolved(profile)
    cfg, task = split_options({**train_opts, **(options or {})}, GAN_OPTIONS)
    if cfg.batch_size == "full":
        raise ValueError(f"{recipe.name}: the GAN needs a numeric batch size")
    if cfg.optimizer != "adam":
        raise ValueError(
            f"{recipe.name}: DCGAN trains with adam (Radford et al.), not {cfg.optimizer!r}"
        )
    device = resolve_device(cfg.device)
    data = _image_data(recipe, dataset, data_root, cfg)
    torch.manual_seed(cfg.seed)
    gan: DCGAN = recipe.builder(**model_args).to(device)
    G, D = gan.generator, gan.discriminator
    decay = float(task["ema_decay"])
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"{recipe.name}: ema_decay must be in [0, 1), got {decay}")
    average = copy.deepcopy(G).requires_grad_(False) if decay > 0 else G  # the generator kept
    betas = (task["beta1"], 0.999)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    sched_g, sched_d = make_scheduler(opt_g, cfg), make_scheduler(opt_d, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    judge = Judge.load(models_root, runs_root)
    val_real = data.val[0].to(device)
    val_noise = _noise(max(len(val_real), 1), gan.latent_dim, cfg.seed + 2).to(device)
    judge_noise = _noise(JUDGED_SAMPLES // 2, gan.latent_dim, cfg.seed + 3).to(device)

    meta = {
        "recipe": recipe.name,
        "task": recipe.task,
        "architecture": recipe.name,
        "model_args": model_args,
        "task_options": task,
    }
    run_dir = Path(runs_root) / recipe.name
    ckpt_path, metrics_path = run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"
    history: list[dict[str, Any]] = []
    start_epoch, best_epoch, best_fid, bad_epochs = 1, 0, math.inf, 0
    best_state = _kept_state(gan, average)
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        gan.load_state_dict(ckpt["model"])
        average.load_state_dict(ckpt["generator_average"])
        opt_g.load_state_dict(ckpt["optimizer_g"])
        opt_d.load_state_dict(ckpt["optimizer_d"])
        sched_g.load_state_dict(ckpt["scheduler_g"])
        sched_d.load_state_dict(ckpt["scheduler_d"])
        gen.set_state(ckpt["rng"])
        history, start_epoch = list(ckpt["history"]), ckpt["epoch"] + 1
        best_epoch, best_fid, bad_epochs = (
            ckpt["best_epoch"],
            ckpt["best_metric"],
            ckpt["bad_epochs"],
        )
        best_state = ckpt["best_model"]
        log.info("resumed %s at epoch %d", run_dir, start_epoch)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path.unlink(missing_ok=True)

    t0, stopped_early = time.perf_counter(), False
    x_train = data.train[0]
    for epoch in range(start_epoch, cfg.epochs + 1):
        if judge is not None and cfg.patience is not None and bad_epochs >= cfg.patience:
            stopped_early = True
            break
        gan.train()
        t_epoch = time.perf_counter()
        sums = {"d_loss": 0.0, "g_loss": 0.0, "value": 0.0, "d_real": 0.0, "d_fake": 0.0}
        batches = _gan_batches(len(x_train), int(cfg.batch_size), gen)
        if cfg.max_batches is not None:
            batches = batches[: cfg.max_batches]
        for idx in tqdm(
            batches,
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            file=sys.stderr,
            disable=not progress,
            dynamic_ncols=True,
        ):
            real = x_train[idx].to(device)
            if cfg.augment != "none":
                real = augment_images(real, cfg.augment, aug_gen)
            real = real * 2 - 1  # [0, 1] -> [-1, 1], the generator's tanh range
            z = torch.randn(len(idx), gan.latent_dim, generator=gen).to(device)
            fake = G(z)
            # D: ascend V(D, G) = E log D(x) + E log(1 - D(G(z)))
            real_logits, fake_logits = D(real), D(fake.detach())
            d_loss = discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(D.parameters(), cfg.grad_clip)
            opt_d.step()
            # G: the non-saturating loss -E log D(G(z)), against the updated D
            g_loss = generator_loss(D(fake))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(G.parameters(), cfg.grad_clip)
            opt_g.step()
            if average is not G:
                with torch.no_grad():
                    for kept, live in zip(average.parameters(), G.parameters()):
                        kept.lerp_(live, 1.0 - decay)
            sums["d_loss"] += d_loss.item()
            sums["g_loss"] += g_loss.item()
            sums["value"] -= d_loss.item()
            sums["d_real"] += torch.sigmoid(real_logits).mean().item()
            sums["d_fake"] += torch.sigmoid(fake_logits).mean().item()

        sched_g.step()
        sched_d.step()
        gan.eval()
        if average is not G:
            recalibrate_batch_norm(
                average, gan.latent_dim, torch.Generator().manual_seed(epoch), device
            )
        with torch.inference_mode():
            val_value = minimax_value(D(val_real * 2 - 1), D(average(val_noise))).item()
            val_fid = val_is = None
            if judge is not None:
                judged_samples = ((average(judge_noise) + 1) / 2).cpu()
                val_fid = judge.fid(judged_samples, data.val[0])
                val_is = inception_score(judge.probabilities(judged_samples))
        row = {
            "epoch": epoch,
            **{k: v / len(batches) for k, v in sums.items()},
            "train_loss": sums["d_loss"] / len(batches),
            "val_value": val_value,
            "val_fid": val_fid,
            "val_is": val_is,
            "lr": opt_g.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - t_epoch, 3),
        }
        history.append(row)
        # with a judge: keep the best validation Fréchet distance; without one: the latest epoch
        if val_fid is None or val_fid < best_fid:
            best_fid = val_fid if val_fid is not None else math.inf
            best_epoch, bad_epochs = epoch, 0
            best_state = _kept_state(gan, average)
        else:
            bad_epochs += 1
        log.info(
            "epoch %d/%d D %.3f G %.3f V(D,G) %.3f val V %.3f%s%s",
            epoch,
            cfg.epochs,
            row["d_loss"],
            row["g_loss"],
            row["value"],
            val_value,
            f" val FID {val_fid:.2f} IS {val_is:.2f}" if val_fid is not None else "",
            " *" if best_epoch == epoch else "",
        )
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        save_atomic(
            {
                "format": CHECKPOINT_FORMAT,
                **meta,
                "config": asdict(cfg),
                "epoch": epoch,
                "model": gan.state_dict(),
                "generator_average": average.state_dict(),
                "optimizer_g": opt_g.state_dict(),
                "optimizer_d": opt_d.state_dict(),
                "scheduler_g": sched_g.state_dict(),
                "scheduler_d": sched_d.state_dict(),
                "rng": gen.get_state(),
                "history": history,
                "best_epoch": best_epoch,
                "best_metric": best_fid,
                "best_model": best_state,
                "bad_epochs": bad_epochs,
            },
            ckpt_path,
        )
    seconds = time.perf_counter() - t0

    gan.load_state_dict(best_state)  # the kept generator (the average, if any) and D
    gan.cpu().eval()
    with torch.inference_mode():
        samples = ImageGenerator(G)(_noise(JUDGED_SAMPLES, gan.latent_dim, cfg.seed + 1))
    judged = judge.score(samples, data.test[0]) if judge is not None else unjudged()
    metrics = {
        **judged,
        "selected_by": "validation Fréchet distance" if judge is not None else "last epoch",
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "train_seconds": round(seconds, 1),
        "parameters": {
            "generator": sum(p.numel() for p in G.parameters()),
            "discriminator": sum(p.numel() for p in D.parameters()),
        },
        "final_value": round(history[-1]["value"], 4) if history else None,
    }
    log.info(
        "%s: samples %s (best epoch %d, %.0f s)",
        recipe.name,
        {
            k: v
            for k, v in judged.items()
            if k in ("sample_is", "sample_fid", "sample_classes", "sample_confidence")
        },
        best_epoch,
        seconds,
    )
    best = save_best(
        run_dir, meta=meta, cfg=cfg, model=gan, metrics=metrics, history=history, data=data
    )
    return export_gan(best, models_root)


def _kept_state(gan: DCGAN, average: nn.Module) -> dict[str, torch.Tensor]:
    """The DCGAN state with the generator that is kept (the weight average, if any)."""
    state = {k: v.detach().clone() for k, v in gan.state_dict().items()}
    state.update({f"generator.{k}": v.detach().clone() for k, v in average.state_dict().items()})
    return state


rebuild_gan = recipes.rebuild  # the checkpoint carries recipe, model_args and weights


def export_gan(path: Path, models_root: Path) -> Path:
    """Publish a GAN checkpoint's ``generator`` graph, samples and card."""
    ckpt = load_checkpoint(path)
    gan = rebuild_gan(ckpt)
    generator = ImageGenerator(gan.generator).eval()
    latent = gan.latent_dim
    graph = Graph(
        generator,
        lambda b, g: (torch.randn(b, latent, generator=g),),
        ["z"],
        ["image"],
        {"z": {0: BATCH}},
    )
    with torch.inference_mode():
        samples = generator(_noise(100, latent, 0))
    extras: dict[str, Path | bytes] = {
        "metrics.jsonl": history_lines(ckpt["history"]),
        "learning_curves.png": gan_curves(ckpt["history"]),
        "samples.png": grid_png(samples, nrow=10),
    }
    recipe = recipes.get(ckpt["recipe"])
    images = ["learning_curves.png", "samples.png"]
    return publish(
        models_root,
        _image_card_fields(ckpt),
        {"generator": graph},
        extras,
        card_md=lambda card: card_markdown(card, recipe.summary, images),
    )

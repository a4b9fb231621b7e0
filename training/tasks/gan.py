"""DCGAN: 28x28 digits -> ``loop.fit`` with the two players' update -> best checkpoint -> the
``generator`` graph (``z`` -> ``image`` (batch, 1, 28, 28) in [0, 1]).

The loop is ``loop.fit`` (checkpoints, ``--resume``, early stopping) with :class:`AdversarialStep`
as its update: one discriminator and one generator step per batch, two optimizers. The generator
kept is the one with the best Fréchet distance (:mod:`training.judge`) against the *validation*
digits, checked every epoch; reported numbers use the *test* digits. Without a judge the last epoch
is kept. With ``ema_decay`` > 0 (the quick profile) the generator judged, kept and exported is an
exponential moving average of G's weights.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.architectures.gan import DCGAN, ImageGenerator
from training.data import augment as augment_images
from training.export import BATCH, Graph
from training.judge import JUDGED_SAMPLES, Judge, headline, inception_score, unjudged
from training.loop import (
    TrainConfig,
    copy_state,
    fit,
    load_checkpoint,
    make_scheduler,
    resolve_device,
    split_options,
)
from training.recipes import Recipe, get
from training.report import gan_curves
from training.tasks.common import (
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

# beta1: Adam's (Radford et al.: 0.5). ema_decay: the exported generator is an exponential moving
# average of the generator's weights (Yazici et al., "The unusual effectiveness of averaging in GAN
# training", ICLR 2019), its batch-norm statistics re-estimated afterwards; 0 exports G itself.
GAN_OPTIONS = {"beta1": 0.5, "ema_decay": 0.0}


def minimax_value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))] with D = sigmoid(logits)."""
    # log(1 - sigmoid(a)) = logsigmoid(-a)
    return F.logsigmoid(real_logits).mean() + F.logsigmoid(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D ascends V: its loss is -V(D, G)."""
    return -minimax_value(real_logits, fake_logits)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss -E_z[log D(G(z))] (Goodfellow et al. 2014, section 3)."""
    return -F.logsigmoid(fake_logits).mean()


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


class AdversarialStep:
    """``loop.fit``'s update for the two players: per batch, D ascends V(D, G), then G takes the
    non-saturating step against the updated D; ``average`` follows G's weights (or is G)."""

    drop_last = True  # full batches only: a short last batch is skipped

    def __init__(self, gan: DCGAN, cfg: TrainConfig, beta1: float, ema_decay: float, device):
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.gan, self.cfg, self.decay, self.device = gan, cfg, ema_decay, device
        G, D = gan.generator, gan.discriminator
        self.average = copy.deepcopy(G).requires_grad_(False) if ema_decay > 0 else G
        betas = (beta1, 0.999)
        self.opt_g = torch.optim.Adam(
            G.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay
        )
        self.opt_d = torch.optim.Adam(
            D.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay
        )
        self.sched_g = make_scheduler(self.opt_g, cfg)
        self.sched_d = make_scheduler(self.opt_d, cfg)

    def __call__(self, batch: tuple[torch.Tensor, ...], gen: torch.Generator) -> dict[str, float]:
        G, D, clip = self.gan.generator, self.gan.discriminator, self.cfg.grad_clip
        real = batch[0] * 2 - 1  # [0, 1] -> [-1, 1], the generator's tanh range
        z = torch.randn(len(real), self.gan.latent_dim, generator=gen).to(self.device)
        fake = G(z)
        # D: ascend V(D, G) = E log D(x) + E log(1 - D(G(z)))
        real_logits, fake_logits = D(real), D(fake.detach())
        d_loss = discriminator_loss(real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(D.parameters(), clip)
        self.opt_d.step()
        # G: the non-saturating loss -E log D(G(z)), against the updated D
        g_loss = generator_loss(D(fake))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(G.parameters(), clip)
        self.opt_g.step()
        if self.average is not G:
            with torch.no_grad():
                for kept, live in zip(self.average.parameters(), G.parameters()):
                    kept.lerp_(live, 1.0 - self.decay)
        return {
            "d_loss": d_loss.item(),
            "g_loss": g_loss.item(),
            "value": -d_loss.item(),
            "d_real": torch.sigmoid(real_logits).mean().item(),
            "d_fake": torch.sigmoid(fake_logits).mean().item(),
            "train_loss": d_loss.item(),
        }

    def end_epoch(self, epoch: int) -> None:
        self.sched_g.step()
        self.sched_d.step()
        if self.average is not self.gan.generator:
            seeded = torch.Generator().manual_seed(epoch)
            recalibrate_batch_norm(self.average, self.gan.latent_dim, seeded, self.device)

    @property
    def lr(self) -> float:
        return self.opt_g.param_groups[0]["lr"]

    def state(self) -> dict[str, Any]:
        return {
            "model": self.gan,
            "generator_average": self.average,
            "optimizer_g": self.opt_g,
            "optimizer_d": self.opt_d,
            "scheduler_g": self.sched_g,
            "scheduler_d": self.sched_d,
        }

    def kept(self) -> dict[str, torch.Tensor]:
        """The DCGAN state with the generator that is kept (the weight average, if any)."""
        state = copy_state(self.gan)
        state.update({f"generator.{k}": v for k, v in copy_state(self.average).items()})
        return state


class Adversarial:
    """Validation: V(D, G) on the validation digits against fixed noise; with a judge, the
    Fréchet distance (the metric that picks the generator) and Inception Score of fixed samples."""

    metric = "fid"
    higher_is_better = False

    def __init__(
        self, generator: nn.Module, judge: Judge | None, latent_dim: int, n_val: int, seed: int
    ):
        self.generator, self.judge = generator, judge
        self.val_noise = noise(max(n_val, 1), latent_dim, seed + 2)
        self.judge_noise = noise(JUDGED_SAMPLES // 2, latent_dim, seed + 3)

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, data: tuple[torch.Tensor, ...]) -> dict[str, Any]:
        (real,) = data  # (N, 1, 28, 28) in [0, 1]
        device = real.device
        fake = self.generator(self.val_noise.to(device))
        value = minimax_value(model.discriminator(real * 2 - 1), model.discriminator(fake))
        fid = score = None
        if self.judge is not None:
            samples = ((self.generator(self.judge_noise.to(device)) + 1) / 2).cpu()
            fid = self.judge.fid(samples, real.cpu())
            score = inception_score(self.judge.probabilities(samples))
        return {"value": value.item(), "fid": fid, "is": score}


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
    """Train DCGAN on 28x28 digits (or MNIST / Fashion-MNIST), judge its samples, publish it.

    One process (two optimizers and a judge do not split across DDP ranks here); early stopping
    after ``patience`` epochs without a better validation Fréchet distance.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            f"{recipe.name}: GAN training runs in one process; launch it without torchrun"
        )
    defaults, train_opts, _ = recipe.resolved(profile)
    model_args = {**defaults, **(model_args or {})}
    cfg, task = split_options({**train_opts, **(options or {})}, GAN_OPTIONS)
    if cfg.batch_size == "full":
        raise ValueError(f"{recipe.name}: the GAN needs a numeric batch size")
    if cfg.optimizer != "adam":
        raise ValueError(
            f"{recipe.name}: DCGAN trains with adam (Radford et al.), not {cfg.optimizer!r}"
        )
    device = resolve_device(cfg.device)
    data = image_data(recipe, dataset, data_root, cfg)
    torch.manual_seed(cfg.seed)
    gan: DCGAN = recipe.builder(**model_args).to(device)
    update = AdversarialStep(gan, cfg, task["beta1"], float(task["ema_decay"]), device)
    judge = Judge.load(models_root, runs_root)
    objective = Adversarial(update.average, judge, gan.latent_dim, len(data.val[0]), cfg.seed)
    aug = (lambda x, g: augment_images(x, cfg.augment, g)) if cfg.augment != "none" else None
    meta = run_meta(recipe, model_args, task_options=task)
    run_dir = Path(runs_root) / recipe.name
    result = fit(
        gan,
        (data.train[0],),
        (data.val[0],),
        objective,
        cfg,
        run_dir,
        augment=aug,
        meta=meta,
        resume=resume,
        progress=progress,
        update=update,
    )

    gan.cpu().eval()  # fit restored the kept generator (the average, if any) and D
    G, D = gan.generator, gan.discriminator
    with torch.inference_mode():
        samples = ImageGenerator(G)(noise(JUDGED_SAMPLES, gan.latent_dim, cfg.seed + 1))
    judged = judge.score(samples, data.test[0]) if judge is not None else unjudged()
    history = result.history
    metrics = {
        **judged,
        "selected_by": "validation Fréchet distance" if judge is not None else "last epoch",
        "best_epoch": result.best_epoch,
        "epochs_run": len(history),
        "stopped_early": result.stopped_early,
        "train_seconds": round(result.seconds, 1),
        "parameters": {
            "generator": sum(p.numel() for p in G.parameters()),
            "discriminator": sum(p.numel() for p in D.parameters()),
        },
        "final_value": round(history[-1]["value"], 4) if history else None,
    }
    log.info(
        "%s: samples %s (best epoch %d, %.0f s)",
        recipe.name,
        headline(judged),
        result.best_epoch,
        result.seconds,
    )
    best = save_best(
        run_dir, meta=meta, cfg=cfg, model=gan, metrics=metrics, history=history, data=data
    )
    return export(best, models_root)


def rebuild(ckpt: dict[str, Any]) -> DCGAN:
    """Both players a checkpoint describes (the exporter wraps the generator), eval mode."""
    model = get(ckpt["recipe"]).builder(**ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def export(checkpoint_path: Path, models_root: Path) -> Path:
    """Publish a GAN checkpoint's ``generator`` graph, samples and card."""
    ckpt = load_checkpoint(checkpoint_path)
    generator = ImageGenerator(rebuild(ckpt).generator).eval()
    latent = ckpt["model_args"]["latent_dim"]
    graph = Graph(
        generator,
        lambda b, g: (torch.randn(b, latent, generator=g),),
        ["z"],
        ["image"],
        {"z": {0: BATCH}},
    )
    with torch.inference_mode():
        samples = generator(noise(100, latent, 0))
    extras: dict[str, Path | bytes] = {
        "metrics.jsonl": history_lines(ckpt["history"]),
        "learning_curves.png": gan_curves(ckpt["history"]),
        "samples.png": sample_grid(samples),
    }
    return publish_run(ckpt, models_root, image_card_fields(ckpt), {"generator": graph}, extras)

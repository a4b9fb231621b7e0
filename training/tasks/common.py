"""What the task modules share: the checkpoint's run facts, ``best.pt``, the card's common fields
and publishing, and the image generators' (VAE, GAN) data, noise and sample grids."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from service.card import Card
from service.imaging import images_to_png
from training.data import load_images
from training.export import Graph, publish
from training.loop import CHECKPOINT_FORMAT, FitResult, TrainConfig, save_atomic
from training.recipes import Recipe, get
from training.report import card_markdown

IMAGE_SIZE = (28, 28)  # the VAE's and the GAN's images: (batch, 1, 28, 28) in [0, 1]


def run_meta(recipe: Recipe, model_args: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What every checkpoint of a run carries to rebuild its model: recipe, task, model_args."""
    return {
        "recipe": recipe.name,
        "task": recipe.task,
        "architecture": recipe.name,
        "model_args": model_args,
        **extra,
    }


def history_lines(history: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(h) + "\n" for h in history).encode()


def fit_metrics(result: FitResult, model: nn.Module) -> dict[str, Any]:
    return {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "train_seconds": round(result.seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def save_best(
    run_dir: Path,
    *,
    meta: dict[str, Any],
    cfg: TrainConfig,
    model: nn.Module,
    metrics: dict[str, Any],
    history: list,
    data,
    splits: dict[str, int] | None = None,
    **extra: Any,
) -> Path:
    """A finished run's ``best.pt``: what an exporter needs to rebuild and describe the model (the
    recipe's ``meta``, config, weights, metrics, history, the data set's name, source and split
    sizes), plus the task's own ``extra`` entries. Written atomically; returns its path."""
    best = Path(run_dir) / "best.pt"
    save_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            **meta,
            "config": asdict(cfg),
            "model": model.state_dict(),
            "metrics": metrics,
            "history": history,
            "dataset": {
                "name": data.name,
                "source": data.source,
                "splits": splits or data.splits(),
            },
            **extra,
        },
        best,
    )
    return best


def card_fields(ckpt: dict[str, Any], **training: Any) -> dict[str, Any]:
    """The card fields every task fills from its checkpoint; ``training`` adds to the options."""
    return {
        "name": ckpt["recipe"],
        "architecture": ckpt["architecture"],
        "task": ckpt["task"],
        "dataset": ckpt["dataset"],
        "training": {
            **ckpt["config"],
            **ckpt.get("task_options", {}),
            "model_args": ckpt["model_args"],
            **training,
        },
        "metrics": ckpt["metrics"],
    }


def publish_run(
    ckpt: dict[str, Any],
    models_root: Path,
    fields: dict[str, Any],
    graphs: dict[str, Graph],
    extras: dict[str, Path | bytes],
    *,
    appendix: Callable[[Card], str] | None = None,
) -> Path:
    """Publish a checkpoint's graphs and files; card.md shows the ``.png`` extras and
    ``appendix``."""
    summary = get(ckpt["recipe"]).summary
    images = [name for name in extras if name.endswith(".png")]

    def card_md(card: Card) -> str:
        return card_markdown(card, summary, images) + (appendix(card) if appendix else "")

    return publish(models_root, fields, graphs, extras, card_md=card_md)


# --- the image generators (VAE, GAN) --------------------------------------------------------------


def noise(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """(n, latent_dim) draws from the standard normal prior both generators sample from."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


def image_data(recipe: Recipe, dataset: str | None, data_root: str | None, cfg: TrainConfig):
    """The generators' images: one channel at ``IMAGE_SIZE`` (digits, MNIST, Fashion-MNIST)."""
    return load_images(
        dataset or recipe.dataset,
        root=data_root,
        size=IMAGE_SIZE,
        channels=1,
        seed=cfg.seed,
        limit=cfg.limit,
    )


def image_card_fields(ckpt: dict[str, Any]) -> dict[str, Any]:
    return {
        **card_fields(ckpt, latent_prior="standard normal"),
        "latent_dim": ckpt["model_args"]["latent_dim"],
        "image": {"size": IMAGE_SIZE, "channels": 1, "ink": "light"},
    }


def sample_grid(images: torch.Tensor) -> bytes:
    """(N, 1, H, W) in [0, 1] -> a PNG, ten images a row at twice their size on a dark grey."""
    return images_to_png(images.numpy(), columns=10, scale=2, pad=4, pad_value=64 / 255)

"""One recipe end to end: data -> model -> fit -> test -> best checkpoint -> export + card.

Config flows one way: CLI -> ``TrainConfig`` -> checkpoint (``model_args``, ``config``, data facts)
-> :func:`export_checkpoint` reads only the checkpoint -> card. The service reads only the card.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training import recipes
from training.data import augment as augment_images
from training.data import load_images
from training.export import BATCH, Graph, publish
from training.loop import (
    Classification,
    TrainConfig,
    finish_distributed,
    fit,
    fit_metrics,
    history_lines,
    load_checkpoint,
    save_best,
)
from training.report import card_markdown, confusion_png, learning_curves

log = logging.getLogger("training")


class Normalized(nn.Module):
    """Per-channel normalization baked into the graph: the service feeds [0, 1] pixels."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1]
        return self.net((pixels - self.mean) / self.std)  # (N, num_classes) logits


# task -> train function with the same keyword arguments as `train` (but the Recipe instead of its
# name); the sequence and generative tasks register theirs here.
TASK_TRAINERS: dict[str, Any] = {}


def _augment_kind(name: str, dataset: str) -> str | None:
    if name == "none":
        return None
    if name == "auto":
        return "cifar" if dataset == "cifar10" else "digits"
    return name


def train(
    name: str,
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
    """Train the recipe ``name`` and publish it; returns the model folder (None on non-zero
    ranks)."""
    recipe = recipes.get(name)
    if recipe.task != "classify":
        trainer = TASK_TRAINERS.get(recipe.task)
        if trainer is None:
            raise ValueError(f"{name}: task {recipe.task!r} has no training pipeline")
        extra = {"model_args": model_args} if model_args else {}
        return trainer(
            recipe,
            profile=profile,
            options=options,
            dataset=dataset,
            data_root=data_root,
            models_root=models_root,
            runs_root=runs_root,
            resume=resume,
            progress=progress,
            **extra,
        )
    defaults, train_opts, size = recipe.resolved(profile)
    model_args = {**defaults, **(model_args or {})}
    cfg = TrainConfig.from_dict({**train_opts, **(options or {})})
    data = load_images(
        dataset or recipe.dataset,
        root=data_root,
        size=size,
        channels=recipe.channels,
        seed=cfg.seed,
        limit=cfg.limit,
    )
    x_train = data.train[0]
    mean = x_train.mean(dim=(0, 2, 3)).tolist()
    std = x_train.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    num_classes = len(data.labels)
    torch.manual_seed(cfg.seed)  # the initial weights too: the seed fixes the whole run
    net = recipe.builder(
        num_classes=num_classes, in_channels=recipe.channels, input_size=size, **model_args
    )
    model = Normalized(net, mean, std)
    objective = Classification(cfg.loss, num_classes)
    kind = _augment_kind(cfg.augment, data.name)
    aug = (lambda x, g: augment_images(x, kind, g)) if kind else None
    meta = {
        "recipe": name,
        "task": recipe.task,
        "architecture": name,
        "model_args": model_args,
        "num_classes": num_classes,
        "in_channels": recipe.channels,
        "input_size": list(size),
        "mean": mean,
        "std": std,
    }
    run_dir = Path(runs_root) / name
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
    val = objective.evaluate(model, data.val)
    predictions = objective.predict(model, data.test[0]).argmax(1)
    metrics = {
        "test_accuracy": round(test["accuracy"], 6),
        "test_loss": round(test["loss"], 6),
        "val_accuracy": round(val["accuracy"], 6),
        **fit_metrics(result, net),
    }
    log.info(
        "%s: test accuracy %.4f (best epoch %d, %.0f s)",
        name,
        test["accuracy"],
        result.best_epoch,
        result.seconds,
    )
    best = save_best(
        run_dir,
        meta=meta,
        cfg=cfg,
        model=net,
        metrics=metrics,
        history=result.history,
        data=data,
        labels=data.labels,
        canonical=data.canonical,
        confusion={"true": data.test[1].tolist(), "pred": predictions.tolist()},
    )
    return export_checkpoint(best, models_root)


def rebuild(ckpt: dict[str, Any]) -> nn.Module:
    """The exported module, from the checkpoint alone."""
    recipe = recipes.get(ckpt["recipe"])
    net = recipe.builder(
        num_classes=ckpt["num_classes"],
        in_channels=ckpt["in_channels"],
        input_size=tuple(ckpt["input_size"]),
        **ckpt["model_args"],
    )
    net.load_state_dict(ckpt["model"])
    return Normalized(net, ckpt["mean"], ckpt["std"]).eval()


def export_checkpoint(path: Path, models_root: Path) -> Path:
    """Export a best-weights checkpoint as a new model version; nothing is written if any gate
    fails."""
    ckpt = load_checkpoint(path)
    if ckpt.get("task", "classify") != "classify":
        exporter = TASK_EXPORTERS.get(ckpt["task"])
        if exporter is None:
            raise ValueError(f"{path}: no exporter for task {ckpt['task']!r}")
        return exporter(path, models_root)
    model = rebuild(ckpt)
    c, (h, w) = ckpt["in_channels"], ckpt["input_size"]
    graph = Graph(
        module=model,
        make_inputs=lambda b, g: (torch.rand(b, c, h, w, generator=g),),
        input_names=["pixels"],
        output_names=["logits"],
        dynamic={"pixels": {0: BATCH}},
    )
    recipe = recipes.get(ckpt["recipe"])
    card_fields = {
        "name": ckpt["recipe"],
        "architecture": ckpt["architecture"],
        "task": ckpt["task"],
        "dataset": ckpt["dataset"],
        "training": {**ckpt["config"], "model_args": ckpt["model_args"]},
        "metrics": ckpt["metrics"],
        "preprocess": {
            "size": (h, w),
            "channels": c,
            "mean": ckpt["mean"],
            "std": ckpt["std"],
            "normalization_in_graph": True,
            **ckpt["canonical"],
        },
        "labels": ckpt["labels"],
    }
    history = ckpt["history"]
    extras: dict[str, Path | bytes] = {
        "metrics.jsonl": history_lines(history),
        "learning_curves.png": learning_curves(history, "accuracy"),
        "confusion.png": confusion_png(
            torch.tensor(ckpt["confusion"]["true"]).numpy(),
            torch.tensor(ckpt["confusion"]["pred"]).numpy(),
            ckpt["labels"],
        ),
    }
    images = ["learning_curves.png", "confusion.png"]
    return publish(
        models_root,
        card_fields,
        {"model": graph},
        extras,
        card_md=lambda card: card_markdown(card, recipe.summary, images),
    )


def zoo(
    profile: str,
    *,
    models_root: Path,
    runs_root: Path,
    only: list[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    chosen = recipes.zoo(profile)
    if only:
        chosen = [recipes.get(n) for n in only]
    built = []
    for recipe in chosen:
        log.info("zoo: %s (%s profile)", recipe.name, profile)
        path = train(
            recipe.name,
            profile=profile,
            models_root=models_root,
            runs_root=runs_root,
            progress=progress,
        )
        if path is not None:
            built.append(path)
    log.info("zoo: built %s", ", ".join(str(p) for p in built))
    return built


# The sequence and generative task trainers, registered here; imported last because they import
# this module's neighbours (recipes, export, loop), and the generative judge calls `rebuild` above.
from training import generative as _generative  # noqa: E402
from training import sequence as _sequence  # noqa: E402

TASK_TRAINERS.update(
    {
        "language_model": _sequence.train_language_model,
        "seq2seq": _sequence.train_seq2seq,
        "vae": _generative.train_vae,
        "gan": _generative.train_gan,
    }
)
# task -> exporter of a best-weights checkpoint (`python -m training export runs/<name>/best.pt`)
TASK_EXPORTERS: dict[str, Any] = {
    "language_model": _sequence.export_language_model,
    "seq2seq": _sequence.export_seq2seq,
    "vae": _generative.export_vae,
    "gan": _generative.export_gan,
}

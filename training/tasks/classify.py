"""Image classification: data -> ``Normalized`` classifier -> ``loop.fit`` -> test -> best
checkpoint -> the ``model`` graph (``pixels`` (batch, C, H, W) in [0, 1] -> ``logits``), with the
per-channel normalization baked in, the labels and the preprocessing in the card."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.data import augment as augment_images
from training.data import load_images
from training.export import BATCH, Graph
from training.loop import TrainConfig, finish_distributed, fit, load_checkpoint
from training.recipes import Recipe, get
from training.report import confusion_png, learning_curves
from training.tasks.common import (
    card_fields,
    fit_metrics,
    history_lines,
    publish_run,
    run_meta,
    save_best,
)

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


class Classification:
    """Cross-entropy (or the seed's squared error on sigmoid outputs) and accuracy."""

    metric = "accuracy"
    higher_is_better = True

    def __init__(self, loss: str = "cross_entropy", num_classes: int = 10):
        if loss not in ("cross_entropy", "mse"):
            raise ValueError(f"loss {loss!r}: allowed cross_entropy, mse")
        self.kind, self.num_classes = loss, num_classes

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y = batch
        logits = model(x)
        if self.kind == "mse":
            target = nn.functional.one_hot(y, self.num_classes).to(logits.dtype)
            return 0.5 * ((torch.sigmoid(logits) - target) ** 2).sum(dim=1).mean()
        return nn.functional.cross_entropy(logits, y)

    @torch.inference_mode()
    def predict(self, model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
        return torch.cat([model(x[i : i + batch]).float() for i in range(0, len(x), batch)])

    def evaluate(self, model: nn.Module, data: tuple[torch.Tensor, ...]) -> dict[str, float]:
        x, y = data
        logits = self.predict(model, x)
        loss = nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).float().mean().item()
        return {"loss": loss, "accuracy": acc}


def _augment_kind(name: str, dataset: str) -> str | None:
    if name == "none":
        return None
    if name == "auto":
        return "cifar" if dataset == "cifar10" else "digits"
    return name


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
    """Train an image classifier and publish it; the model folder (None on non-zero ranks)."""
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
    meta = run_meta(
        recipe,
        model_args,
        num_classes=num_classes,
        in_channels=recipe.channels,
        input_size=list(size),
        mean=mean,
        std=std,
    )
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
        recipe.name,
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
    return export(best, models_root)


def rebuild(ckpt: dict[str, Any]) -> nn.Module:
    """The exported module, normalization included, from the checkpoint alone (eval mode)."""
    net = get(ckpt["recipe"]).builder(
        num_classes=ckpt["num_classes"],
        in_channels=ckpt["in_channels"],
        input_size=tuple(ckpt["input_size"]),
        **ckpt["model_args"],
    )
    net.load_state_dict(ckpt["model"])
    return Normalized(net, ckpt["mean"], ckpt["std"]).eval()


def export(checkpoint_path: Path, models_root: Path) -> Path:
    """Publish a classifier checkpoint's ``model`` graph, plots and card; nothing is written if
    any gate fails."""
    ckpt = load_checkpoint(checkpoint_path)
    c, (h, w) = ckpt["in_channels"], ckpt["input_size"]
    graph = Graph(
        module=rebuild(ckpt),
        make_inputs=lambda b, g: (torch.rand(b, c, h, w, generator=g),),
        input_names=["pixels"],
        output_names=["logits"],
        dynamic={"pixels": {0: BATCH}},
    )
    fields = {
        **card_fields(ckpt),
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
    return publish_run(ckpt, models_root, fields, {"model": graph}, extras)

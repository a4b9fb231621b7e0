"""What people read beside a model: learning curves, confusion matrix, card.md."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

from service.card import Card


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def learning_curves(history: Sequence[dict[str, Any]], metric: str) -> bytes:
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    if "val_loss" in history[0]:
        a.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(epochs, [h[f"val_{metric}"] for h in history], color="tab:green")
    b.set_xlabel("epoch"), b.set_ylabel(f"validation {metric}")
    fig.suptitle("learning curves")
    return _png(fig)


def gan_curves(history: Sequence[dict[str, Any]]) -> bytes:
    """The GAN's losses, V(D, G) against its equilibrium, and (when judged) the validation Fréchet
    distance and Inception Score per epoch."""
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
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel("validation Fréchet distance (log)", color="tab:green")
        twin = axes[2].twinx()
        twin.plot(judged_epochs, [h["val_is"] for h in judged], color="tab:purple")
        twin.set_ylabel("validation Inception Score", color="tab:purple")
    fig.suptitle("DCGAN training")
    return _png(fig)


def confusion_png(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> bytes:
    k = len(labels)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y_true, y_pred), 1)
    fig, ax = plt.subplots(figsize=(0.45 * k + 2, 0.45 * k + 1.5))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black",
                )
    ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title("test confusion matrix")
    return _png(fig)


def card_markdown(card: Card, summary: str, images: Sequence[str]) -> str:
    lines = [
        f"# {card.name} v{card.version}",
        "",
        f"{summary}.",
        "",
        f"- task: `{card.task}`, architecture: `{card.architecture}`",
        f"- data: `{card.dataset.name}` from `{card.dataset.source}`, splits "
        + ", ".join(f"{k} {v}" for k, v in card.dataset.splits.items()),
        f"- created {card.created}, commit `{card.git_commit or 'unknown'}`",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for k, v in card.metrics.items():
        lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    lines += ["", "## Training", "", "| option | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in card.training.items()]
    lines += ["", "## Graphs", "", "| role | file | parity (max abs diff) |", "|---|---|---|"]
    lines += [
        f"| {r} | `{f.path}` | {card.parity[r].max_abs_diff:.2e} |" for r, f in card.files.items()
    ]
    lines += [""] + [f"![{img}]({img})" for img in images]
    return "\n".join(lines) + "\n"

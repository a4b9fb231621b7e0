"""The task table: one module per task, equal plug-ins exposing the same three functions.

- ``train(recipe, *, profile, options, model_args, dataset, data_root, models_root, runs_root,
  resume, progress) -> Path | None``: train, keep the best checkpoint and publish it; returns the
  model folder (None on non-zero DDP ranks);
- ``export(checkpoint_path, models_root) -> Path``: publish a best-weights checkpoint as a new
  model version;
- ``rebuild(ckpt) -> nn.Module``: the model the exporter publishes, from the checkpoint alone.

A task's module is imported when it is first asked for, so modules the tasks use (the judge of
the generative tasks) can call :func:`rebuild` without an import cycle.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any

from torch import nn

TASKS = ("classify", "language_model", "seq2seq", "vae", "gan")  # each a module of this package


def get(name: str) -> ModuleType:
    """The module of task ``name``; raises on an unknown task."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return import_module(f"{__name__}.{name}")


def rebuild(ckpt: dict[str, Any]) -> nn.Module:
    """The model a checkpoint describes, from the checkpoint alone (eval mode), by its task."""
    return get(ckpt["task"]).rebuild(ckpt)

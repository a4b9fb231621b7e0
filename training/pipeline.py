"""One recipe end to end, whatever its task: ``train`` (data -> fit -> best checkpoint -> export +
card), ``export_checkpoint`` and ``zoo``. Each task's work lives in :mod:`training.tasks`.

Config flows one way: CLI -> ``TrainConfig`` -> checkpoint (``model_args``, ``config``, data facts)
-> the task's ``export`` reads only the checkpoint -> card. The service reads only the card.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from service.card import ZOO_FILE, ZooProgress
from training import recipes, tasks
from training.loop import load_checkpoint

log = logging.getLogger("training")


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
    if resume:
        options, model_args = _resumed(
            Path(runs_root) / name / "checkpoint.pt", options, model_args
        )
    return tasks.get(recipe.task).train(
        recipe,
        profile=profile,
        options=options,
        model_args=model_args,
        dataset=dataset,
        data_root=data_root,
        models_root=models_root,
        runs_root=runs_root,
        resume=resume,
        progress=progress,
    )


def _resumed(
    path: Path, options: dict[str, Any] | None, model_args: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``--resume`` continues a run with its own settings: the checkpoint's training config and
    model arguments, under whatever the command line gives again (e.g. more ``--epochs``)."""
    if not path.exists():
        return options, model_args
    ckpt = load_checkpoint(path)
    return {**ckpt["config"], **(options or {})}, {**ckpt["model_args"], **(model_args or {})}


def export_checkpoint(path: Path, models_root: Path) -> Path:
    """Export a best-weights checkpoint as a new model version; nothing is written if any gate
    fails."""
    return tasks.get(load_checkpoint(path)["task"]).export(path, models_root)


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
    progress_file = Path(models_root) / ZOO_FILE  # what /models lists as still training
    try:
        for i, recipe in enumerate(chosen):
            pending = [r.name for r in chosen[i:]]
            _write_atomic(
                progress_file, ZooProgress(profile=profile, pending=pending).model_dump_json()
            )
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
    finally:
        progress_file.unlink(missing_ok=True)
    log.info("zoo: built %s", ", ".join(str(p) for p in built))
    return built


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

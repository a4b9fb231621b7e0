"""Train and evaluate: optimizers, schedules, early stopping, checkpoints, progress, data
parallelism.

Nothing here knows which model it trains: an *objective* supplies the validation metrics, and an
*update* the optimisation step of a batch (by default :class:`GradientStep`: one optimizer on the
objective's loss; the GAN brings its two players). The loop does the rest. Checkpoints are plain
dicts of tensors and numbers (loadable with ``torch.load(..., weights_only=True)``) carrying
``model_args`` and the config, so a model rebuilds from its checkpoint alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

log = logging.getLogger("training")

OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
SCHEDULES = ("none", "cosine", "step")
CHECKPOINT_FORMAT = "dlzoo.checkpoint/1"


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int | str = 64  # an int, or "full" for batch gradient descent (1 = stochastic)
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # for "momentum" (SGD with momentum) and RMSprop's none (kept at 0 there)
    weight_decay: float = 0.0
    loss: str = "cross_entropy"  # classifiers: cross_entropy | mse (sigmoid outputs vs one-hot)
    schedule: str = "cosine"
    patience: int | None = 10  # epochs without a better validation metric before stopping
    augment: str = "none"
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, CUDA only
    grad_clip: float | None = None
    max_batches: int | None = None  # per epoch; --dry-run sets 1
    limit: int | None = None  # examples per split; --dry-run sets a few

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: allowed {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}: allowed {', '.join(SCHEDULES)}")
        if isinstance(self.batch_size, str):
            if self.batch_size == "full":
                pass
            elif self.batch_size.isdigit():
                self.batch_size = int(self.batch_size)
            else:
                raise ValueError(f"batch size {self.batch_size!r}: a positive integer or 'full'")
        if isinstance(self.batch_size, int) and self.batch_size < 1:
            raise ValueError("batch size must be >= 1")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)


def split_options(
    values: dict[str, Any], task_defaults: dict[str, Any]
) -> tuple[TrainConfig, dict[str, Any]]:
    """A recipe's train dict (plus CLI options) -> (TrainConfig, the task's own options)."""
    task = {k: values.get(k, v) for k, v in task_defaults.items()}
    return TrainConfig.from_dict({k: v for k, v in values.items() if k not in task_defaults}), task


class Objective(Protocol):
    """What the loop needs from a task."""

    metric: str  # the validation metric early stopping watches, e.g. "accuracy"
    higher_is_better: bool

    # a batch's loss; only the default update (GradientStep) calls it
    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor: ...

    # the metric's value may be None (nothing to judge by): the epoch then counts as the best
    def evaluate(
        self, model: nn.Module, data: tuple[torch.Tensor, ...]
    ) -> dict[str, float | None]: ...


class Update(Protocol):
    """One optimisation step per batch, and what a checkpoint holds to resume it."""

    drop_last: bool  # skip a last, short batch

    # one step; ``gen`` is the loop's seeded generator, for any noise the step draws. Returns
    # per-batch statistics (their epoch means go into the history; ``train_loss`` is required).
    def __call__(
        self, batch: tuple[torch.Tensor, ...], gen: torch.Generator
    ) -> dict[str, float]: ...

    def end_epoch(self, epoch: int) -> None: ...  # e.g. step the schedules

    @property
    def lr(self) -> float: ...

    # checkpoint key -> an object with state_dict() and load_state_dict() ("model" first)
    def state(self) -> dict[str, Any]: ...

    # a copy of the weights to keep if this epoch turns out the best
    def kept(self) -> dict[str, torch.Tensor]: ...


# --- building blocks ------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: allowed auto, cpu, cuda")
    return torch.device(name)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The field's optimizers, all from torch.optim (tests check their update equations)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "momentum":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.epochs // 3), gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save to a temp file, then rename: an interrupted save never leaves a broken file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a dlzoo checkpoint ({CHECKPOINT_FORMAT})")
    return ckpt


def copy_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class GradientStep:
    """The default update: one optimizer and schedule on the objective's loss (mixed precision on
    CUDA, optional gradient clipping)."""

    drop_last = False

    def __init__(
        self,
        model: nn.Module,
        net: nn.Module,
        objective: Objective,
        cfg: TrainConfig,
        device: torch.device,
    ):
        self.model, self.net, self.objective, self.cfg = model, net, objective, cfg
        self.device_type = device.type
        self.opt = make_optimizer(model.parameters(), cfg)
        self.sched = make_scheduler(self.opt, cfg)
        self.use_amp = cfg.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    def __call__(self, batch: tuple[torch.Tensor, ...], gen: torch.Generator) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device_type, enabled=self.use_amp):
            loss = self.objective.loss(self.net, batch)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        return {"train_loss": loss.item()}

    def end_epoch(self, epoch: int) -> None:
        self.sched.step()

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def state(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.opt, "scheduler": self.sched}

    def kept(self) -> dict[str, torch.Tensor]:
        return copy_state(self.model)


# --- distributed ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on CPU, NCCL on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size())


def finish_distributed() -> bool:
    """After ``fit``: tear the process group down; True on the rank that exports (rank 0)."""
    if not dist.is_initialized():
        return True
    rank = dist.get_rank()
    dist.barrier()
    dist.destroy_process_group()
    return rank == 0


# --- the loop ---------------------------------------------------------------------------------


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_metric: float
    stopped_early: bool
    seconds: float


def _batches(
    n: int, batch_size: int | str, gen: torch.Generator, dist_info: DistInfo, drop_last: bool
):
    size = n if batch_size == "full" else int(batch_size)
    order = torch.randperm(n, generator=gen)
    order = order[dist_info.rank :: dist_info.world]  # each rank its shard, same permutation
    per_rank = max(1, size // dist_info.world) if size > 1 else 1
    # every rank must run the same number of steps, or DDP's all-reduce waits forever
    steps = math.ceil(math.ceil(n / dist_info.world) / per_rank)
    if drop_last:  # full batches only, but at least one
        steps = max(1, n // dist_info.world // per_rank)
    for i in range(steps):
        idx = order[i * per_rank : (i + 1) * per_rank]
        if len(idx) == 0:
            idx = order[:per_rank]
        yield idx


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, ...],
    val: tuple[torch.Tensor, ...],
    objective: Objective,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
    update: Update | None = None,
) -> FitResult:
    """Train ``model`` in place; on return it holds the best weights seen on the validation split.

    ``meta`` (model_args, recipe, data facts) is stored in every checkpoint so the model rebuilds
    from the checkpoint alone. ``run_dir/checkpoint.pt`` is written after every epoch (rank 0) and
    ``--resume`` continues from it; ``run_dir/metrics.jsonl`` gets one line per epoch. ``update``
    (default: a :class:`GradientStep` on ``objective.loss``) is built on ``model``, which must
    already be on the device then, and runs in one process.
    """
    device = resolve_device(cfg.device)
    dist_info = init_distributed(device)
    if update is not None and dist_info.world > 1:
        raise ValueError("a task's own update runs in one process; launch it without torchrun")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)

    model.to(device)
    net: nn.Module = model
    if dist_info.world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    update = update or GradientStep(model, net, objective, cfg, device)

    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    metrics_path = run_dir / "metrics.jsonl"
    history: list[dict[str, Any]] = []
    start_epoch, best_epoch, best_metric, bad_epochs = 1, 0, -math.inf, 0
    best_state = update.kept()
    sign = 1.0 if objective.higher_is_better else -1.0

    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        for key, part in update.state().items():
            part.load_state_dict(ckpt[key])
        gen.set_state(ckpt["rng"])
        history = list(ckpt["history"])
        start_epoch = ckpt["epoch"] + 1
        best_epoch, best_metric = ckpt["best_epoch"], ckpt["best_metric"]
        best_state = ckpt["best_model"]
        bad_epochs = ckpt["bad_epochs"]
        log.info(
            "resumed %s at epoch %d (best %s %.4f at %d)",
            run_dir,
            start_epoch,
            objective.metric,
            sign * best_metric,
            best_epoch,
        )
    elif dist_info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path.unlink(missing_ok=True)

    t0 = time.perf_counter()
    stopped_early = False
    n = len(train[0])
    for epoch in range(start_epoch, cfg.epochs + 1):
        if cfg.patience is not None and bad_epochs >= cfg.patience:
            stopped_early = True
            break
        net.train()
        t_epoch = time.perf_counter()
        sums: dict[str, float] = {}
        count = 0
        batches = list(_batches(n, cfg.batch_size, gen, dist_info, update.drop_last))
        if cfg.max_batches is not None:
            batches = batches[: cfg.max_batches]
        bar = tqdm(
            batches,
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            file=sys.stderr,
            disable=not (progress and dist_info.main),
            dynamic_ncols=True,
        )
        for idx in bar:
            batch = tuple(t[idx].to(device, non_blocking=True) for t in train)
            if augment is not None:
                batch = (augment(batch[0], aug_gen),) + batch[1:]
            for key, value in update(batch, gen).items():
                sums[key] = sums.get(key, 0.0) + value * len(idx)
            count += len(idx)
            bar.set_postfix(loss=f"{sums['train_loss'] / count:.4f}")
        update.end_epoch(epoch)

        model.eval()
        with torch.inference_mode():
            val_stats = objective.evaluate(model, tuple(t.to(device) for t in val))
        row = {
            "epoch": epoch,
            **{k: v / max(count, 1) for k, v in sums.items()},
            **{f"val_{k}": v for k, v in val_stats.items()},
            "lr": update.lr,
            "seconds": round(time.perf_counter() - t_epoch, 3),
        }
        history.append(row)
        value = val_stats[objective.metric]
        if value is None or sign * value > best_metric:  # nothing to judge by: the latest is kept
            best_metric = -math.inf if value is None else sign * value
            best_epoch, bad_epochs = epoch, 0
            best_state = update.kept()
        else:
            bad_epochs += 1
        if dist_info.main:
            shown = [k for k in row if k in sums or k.startswith("val_")]
            log.info(
                "epoch %d/%d %s%s",
                epoch,
                cfg.epochs,
                " ".join(f"{k} {_shown(row[k])}" for k in shown),
                " *" if best_epoch == epoch else "",
            )
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            save_atomic(
                {
                    "format": CHECKPOINT_FORMAT,
                    **(meta or {}),
                    "config": asdict(cfg),
                    "epoch": epoch,
                    **{key: part.state_dict() for key, part in update.state().items()},
                    "rng": gen.get_state(),
                    "history": history,
                    "best_epoch": best_epoch,
                    "best_metric": best_metric,
                    "best_model": best_state,
                    "bad_epochs": bad_epochs,
                },
                ckpt_path,
            )

    model.load_state_dict(best_state)  # early stopping restores the best weights
    model.eval()
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_metric=sign * best_metric,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - t0,
    )

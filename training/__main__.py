"""``python -m training``: list, train, export, zoo.

python -m training list
python -m training train lenet5 --epochs 30 --optimizer momentum --batch-size 64
python -m training train mlp --batch-size full --optimizer sgd --lr 0.5   # batch gradient descent
python -m training zoo --profile quick                                   # what `make models` runs
torchrun --standalone --nproc_per_node 2 -m training train lenet5          # data parallel
                                                                           # (gloo on CPU)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from training import pipeline, recipes
from training.loop import OPTIMIZERS, SCHEDULES


def _options(args: argparse.Namespace) -> dict:
    """Only the flags given on the command line override the recipe's defaults."""
    names = [
        "epochs",
        "batch_size",
        "optimizer",
        "lr",
        "momentum",
        "weight_decay",
        "loss",
        "schedule",
        "patience",
        "augment",
        "seed",
        "device",
        "limit",
    ]
    opts = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.no_amp:
        opts["amp"] = False
    return opts


def _model_args(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--arg {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--models",
        type=Path,
        default=Path(os.environ.get("DLZOO_MODELS", "models")),
        help="model repository to publish into (default: $DLZOO_MODELS or models/)",
    )
    p.add_argument(
        "--runs", type=Path, default=Path("runs"), help="checkpoints and logs (default: runs/)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="the registered architectures")

    t = sub.add_parser("train", help="train one architecture and publish it")
    t.add_argument("arch", help="a registered architecture (see `list`)")
    t.add_argument(
        "--profile",
        choices=["quick", "full"],
        default=None,
        help="size profile (default: the recipe's paper-sized defaults)",
    )
    t.add_argument(
        "--dataset",
        default=None,
        help="digits | mnist | fashion-mnist | cifar10 (default: the recipe's)",
    )
    t.add_argument("--data-root", default=None, help="folder of the IDX / CIFAR binary files")
    t.add_argument(
        "--epochs", type=int, default=None, help="maximum epochs (default: the recipe's)"
    )
    t.add_argument(
        "--batch-size", default=None, help="N, 1 (stochastic) or 'full' (batch gradient descent)"
    )
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="default: the recipe's")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    t.add_argument(
        "--momentum", type=float, default=None, help="for --optimizer momentum (default 0.9)"
    )
    t.add_argument(
        "--weight-decay", type=float, default=None, help="L2 penalty (default: the recipe's)"
    )
    t.add_argument(
        "--loss", choices=["cross_entropy", "mse"], default=None, help="default cross_entropy"
    )
    t.add_argument("--schedule", choices=SCHEDULES, default=None, help="learning-rate schedule")
    t.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs")
    t.add_argument(
        "--augment",
        choices=["none", "auto", "digits", "cifar"],
        default=None,
        help="data augmentation (default: the recipe's)",
    )
    t.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="default auto")
    t.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    t.add_argument("--limit", type=int, default=None, help="at most N examples per split")
    t.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model argument, value as JSON (e.g. --arg width=0.5 --arg dropout=0.3)",
    )
    t.add_argument(
        "--dry-run", action="store_true", help="one batch of a few examples, then export"
    )
    t.add_argument("--resume", action="store_true", help="continue from runs/<arch>/checkpoint.pt")

    e = sub.add_parser("export", help="publish a best-weights checkpoint (runs/<arch>/best.pt)")
    e.add_argument("checkpoint", type=Path)

    z = sub.add_parser("zoo", help="train and publish the whole zoo")
    z.add_argument(
        "--profile",
        choices=["quick", "full", "dry-run"],
        default="quick",
        help="quick (CPU-sized), full (paper-sized) or dry-run (one batch per model: "
        "seconds, a smoke test, not useful models); default quick",
    )
    z.add_argument("--only", default=None, help="comma-separated subset")

    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    progress = not args.quiet and sys.stderr.isatty()
    try:
        if args.command == "list":
            for r in recipes.RECIPES.values():
                print(f"{r.name:12s} {r.task:15s} {r.dataset:14s} {r.summary}")
        elif args.command == "train":
            profile = "dry-run" if args.dry_run else args.profile
            path = pipeline.train(
                args.arch,
                profile=profile,
                options=_options(args),
                model_args=_model_args(args.arg),
                dataset=args.dataset,
                data_root=args.data_root,
                models_root=args.models,
                runs_root=args.runs,
                resume=args.resume,
                progress=progress,
            )
            if path is not None:
                print(path)
        elif args.command == "export":
            print(pipeline.export_checkpoint(args.checkpoint, args.models))
        elif args.command == "zoo":
            only = args.only.split(",") if args.only else None
            for path in pipeline.zoo(
                args.profile,
                models_root=args.models,
                runs_root=args.runs,
                only=only,
                progress=progress,
            ):
                print(path)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

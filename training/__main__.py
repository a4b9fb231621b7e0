"""``python -m training``: list, train, export, zoo, import.

python -m training list
python -m training train lenet5 --epochs 30 --optimizer momentum --batch-size 64
python -m training train mlp --batch-size full --optimizer sgd --lr 0.5   # batch gradient descent
python -m training zoo --profile quick                                   # what `make models` runs
torchrun --standalone --nproc_per_node 2 -m training train lenet5          # data parallel
                                                                           # (gloo on CPU)
python -m training import onnx net.onnx --name net --labels labels.txt --size 224 224 \
    --resize crop --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225       # any ONNX classifier
python -m training import onnx model.onnx --name tabular --task tensor   # any graph, as it is
python -m training import torchvision resnet50 resnet50.pth --name resnet50 --labels imagenet
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from training import importing, pipeline, recipes
from training.export import ExportError
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


def _import_parsers(sub) -> None:
    i = sub.add_parser("import", help="bring your own model: an ONNX file or a torchvision file")
    kinds = i.add_subparsers(dest="kind", required=True)
    o = kinds.add_parser("onnx", help="any ONNX graph: an image classifier, or tensors as they are")
    o.add_argument("file", type=Path, help="one self-contained .onnx file")
    o.add_argument("--name", required=True, help="the model's name in the repository")
    o.add_argument(
        "--task",
        choices=["classify", "tensor"],
        default="classify",
        help="classify: images in, labels out (/classify); tensor: the graph's own tensors, "
        "no preprocessing or labels (default classify)",
    )
    o.add_argument("--labels", type=Path, help="class names, one per line (default: indices)")
    o.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: the graph's)"
    )
    o.add_argument(
        "--channels", type=int, choices=[1, 3], help="1 or 3 (default: the graph's, else 3)"
    )
    o.add_argument(
        "--resize",
        choices=["frame", "crop", "stretch"],
        help="crop: shorter side to 256/224 of the size, then the centre (default); stretch: "
        "straight to the size; frame: the object's box fitted as in MNIST (light ink)",
    )
    o.add_argument(
        "--mean", type=float, nargs="+", help="what the graph expects after scaling pixels to "
        "[0, 1]: M or M M M (default 0); baked into the graph",
    )  # fmt: skip
    o.add_argument("--std", type=float, nargs="+", help="S or S S S (default 1); baked in too")
    o.add_argument(
        "--output",
        choices=["logits", "probabilities"],
        help="what the first output holds (default logits: the service applies softmax)",
    )
    t = kinds.add_parser("torchvision", help="a torchvision ImageNet classifier's state dict")
    t.add_argument("arch", help=f"one of {', '.join(importing.TORCHVISION)}")
    t.add_argument("state_dict", type=Path, help="the .pth file (torch.load, weights_only=True)")
    t.add_argument("--name", required=True, help="the model's name in the repository")
    t.add_argument("--labels", help="class names, one per line, or 'imagenet' (default: indices)")


def _run_import(args: argparse.Namespace) -> Path:
    if args.kind == "torchvision":
        return importing.import_torchvision(
            args.arch, args.state_dict, args.name, args.models, labels=args.labels
        )
    flags = ("labels", "size", "channels", "resize", "mean", "std", "output")
    image = importing.ImageFlags(**{f: getattr(args, f) for f in flags})
    return importing.import_onnx(args.file, args.name, args.models, task=args.task, image=image)


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

    _import_parsers(sub)
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
        elif args.command == "import":
            print(_run_import(args))
    except (ValueError, FileNotFoundError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

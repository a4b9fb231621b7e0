"""Bring your own model: a foreign ONNX graph, or a torchvision state dict, -> card + publish.

``import_onnx`` checks a graph (``onnx.checker``, one self-contained file, an opset ONNX Runtime
runs), runs it once, and writes a card whose io is the graph's own; what a graph cannot say (task,
labels, preprocessing, what its output holds) comes from the caller. A classifier that expects
normalized input gets its normalization baked in front of it, so the service feeds [0, 1] pixels
as it does to the zoo's own exports (the graph work is in training/onnx_graphs.py).
``import_torchvision`` loads a torchvision state dict into dlzoo's architecture of the same name
(parameter names are torchvision's) and exports it through :func:`training.export.publish` with
its parity gate. Both publish atomically, like an export, and never overwrite a version.

``data/imagenet_labels.txt`` holds the 1,000 ImageNet-1k category names in class-index order, as
torchvision 0.29.1 lists them (``_IMAGENET_CATEGORIES`` in ``torchvision/models/_meta.py``, read
out of its wheel, not installed).
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from service.card import NAME_PATTERN, Card, GraphIO, Parity, sha256_file
from training import architectures
from training import onnx_graphs as graphs
from training.export import BATCH, Graph, publish_graphs
from training.export import publish as publish_export
from training.onnx_graphs import ImportFailure

IMAGENET_LABELS = Path(__file__).resolve().parent / "data" / "imagenet_labels.txt"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IMAGENET_SIZE = (224, 224)
# torchvision's classifiers that dlzoo's architectures reproduce, with the builder kwargs that
# give torchvision's layout (AlexNet: the 2014 single-GPU variant torchvision ships).
TORCHVISION = {
    "alexnet": {"variant": "owt"},
    **{f"vgg{d}{bn}": {} for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    **{f"resnet{d}": {} for d in (18, 34, 50, 101, 152)},
}
UNKNOWN_DATA = "not known: an imported model's training data is not recorded in its file"


# ------------------------------------------------------------------------------------------- ONNX


@dataclass(frozen=True)
class ImageFlags:
    """What an image classifier's graph cannot say (the CLI's flags of the same names); None is
    the graph's own value, or the default."""

    labels: Path | None = None  # one label per line; default the class indices
    size: Sequence[int] | None = None  # (H, W)
    channels: int | None = None  # 1 or 3
    resize: str | None = None  # frame, crop (default), stretch
    mean: Sequence[float] | None = None  # 1 or C values; default 0
    std: Sequence[float] | None = None  # 1 or C values; default 1
    output: str | None = None  # logits (default), probabilities


def import_onnx(
    path: Path,
    name: str,
    models_root: Path,
    *,
    task: str = "classify",
    image: ImageFlags | None = None,
) -> Path:
    """Publish the ONNX file ``path`` as a new version of ``name``; returns its folder."""
    _check_name(name)
    image = image or ImageFlags()
    given = [f"--{k}" for k, v in asdict(image).items() if v is not None]
    if task == "tensor" and given:
        raise ImportFailure(f"{', '.join(given)}: only for --task classify, not tensor")
    if task not in ("classify", "tensor"):
        raise ImportFailure(f"--task {task!r}: allowed classify, tensor")
    data, model, io = graphs.read_onnx(Path(path))
    session = graphs.open_session(data, path, model)
    fields: dict[str, Any] = {
        "name": name,
        "architecture": f"onnx ({model.graph.name})" if model.graph.name else "onnx",
        "task": task,
        "dataset": {"name": "unknown", "source": UNKNOWN_DATA, "splits": {}},
        "training": {},
        "metrics": {},
        "origin": {
            "kind": "onnx",
            "file": Path(path).name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "producer": f"{model.producer_name} {model.producer_version}".strip() or None,
            "opset": graphs.opset(model),
            "ir_version": int(model.ir_version),
        },
    }
    published, normalize, feeds = data, None, graphs.random_feeds(io)
    if task == "classify":
        pre, labels, feeds = _classifier(io, session, Path(path), image)
        fields.update(preprocess=pre, labels=labels, output=image.output or "logits")
        if any(m != 0.0 for m in pre["mean"]) or any(s != 1.0 for s in pre["std"]):
            x = next(iter(feeds.values()))
            published, normalize = graphs.bake_normalization(model, x, pre["mean"], pre["std"])
    parity = graphs.compare(session, published, feeds, normalize)

    def write(folder: Path) -> dict[str, tuple[GraphIO, Parity]]:
        (folder / "model.onnx").write_bytes(published)
        return {"model": (graphs.read_io(onnx.load_model_from_string(published), path), parity)}

    return publish_graphs(models_root, fields, write, card_md=_card_md)


def _classifier(io: GraphIO, session, path: Path, flags: ImageFlags):
    """Check that the graph is an image classifier as the flags describe it; the card's
    preprocess, the labels, and the random input it answered (batch 1 unless fixed otherwise)."""
    size, channels = flags.size, flags.channels
    where = f"{path.name}: an image classifier"
    if len(io.inputs) != 1 or io.inputs[0].dtype != "float32" or len(io.inputs[0].shape) != 4:
        have = ", ".join(f"{t.name} {t.dtype} {t.shape}" for t in io.inputs)
        raise ImportFailure(
            f"{where} takes one float32 input (N, C, H, W); this graph takes {have} "
            "(import it with --task tensor)"
        )
    n, c, h, w = io.inputs[0].shape
    if channels is not None and isinstance(c, int) and c != channels:
        raise ImportFailure(f"--channels {channels}, but the graph's input has {c} channels")
    channels = channels if channels is not None else (c if isinstance(c, int) else 3)
    if channels not in (1, 3):
        raise ImportFailure(f"{where} takes 1 or 3 channels; this graph's input has {c}")
    fixed = (h, w) if isinstance(h, int) and isinstance(w, int) else None
    if size is not None and fixed is not None and tuple(size) != fixed:
        raise ImportFailure(f"--size {size[0]} {size[1]}, but the graph's input is {h}x{w}")
    if size is None and fixed is None:
        raise ImportFailure(f"--size H W is needed: the graph's input size is {h}x{w}")
    size = tuple(int(s) for s in (size or fixed))
    out = io.outputs[0]
    if len(out.shape) != 2 or out.dtype not in ("float32", "float16"):
        raise ImportFailure(
            f"{where} answers (N, classes) scores first; this graph's first output is {out.name} "
            f"{out.dtype} {out.shape} (import it with --task tensor)"
        )
    batch = n if isinstance(n, int) else 1
    x = np.random.default_rng(0).random((batch, channels, *size), dtype=np.float32)
    try:
        scores = session.run([out.name], {io.inputs[0].name: x})[0].astype(np.float64)
    except Exception as exc:
        raise ImportFailure(f"{path.name} failed on a {tuple(x.shape)} input: {exc}") from None
    classes = scores.shape[1]
    names = _labels(flags.labels, classes)
    if flags.output == "probabilities" and not (
        scores.min() >= -1e-6 and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)
    ):
        raise ImportFailure(
            f"--output probabilities, but {out.name} on a random input is not a distribution "
            f"(min {scores.min():.3g}, row sums {scores.sum(axis=1).round(3).tolist()}): "
            "use --output logits"
        )
    pre = {
        "size": size,
        "channels": channels,
        "resize": flags.resize or "crop",
        "mean": _per_channel("--mean", flags.mean, channels, 0.0),
        "std": _per_channel("--std", flags.std, channels, 1.0),
        "normalization_in_graph": True,
    }
    if pre["resize"] == "frame":  # MNIST's convention: light ink, its box 20/28 of the frame
        pre.update(
            native_size=size,
            ink="light",
            framing={"mode": "bbox", "fill": 20 / 28, "center": "mass"},
            stretch_contrast=True,
        )
    if any(s <= 0 for s in pre["std"]):
        raise ImportFailure(f"--std must be positive, got {pre['std']}")
    return pre, names, {io.inputs[0].name: x}


def _per_channel(flag: str, values, channels: int, default: float) -> list[float]:
    if values is None:
        return [default] * channels
    if len(values) == 1:
        return [float(values[0])] * channels
    if len(values) != channels:
        raise ImportFailure(f"{flag}: give 1 or {channels} values, got {len(values)}")
    return [float(v) for v in values]


def _labels(source: Path | str | None, classes: int) -> list[str]:
    """Labels from a file (one per line), ``imagenet``, or class indices when none are given."""
    if source is None:
        return [str(i) for i in range(classes)]
    path = IMAGENET_LABELS if str(source) == "imagenet" else Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"--labels {source}: no such file (or 'imagenet')")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as exc:
        raise ImportFailure(f"--labels {source}: not UTF-8 text ({exc})") from None
    while names and not names[-1]:
        names.pop()
    if "" in names:
        raise ImportFailure(f"--labels {source}: line {names.index('') + 1} is empty")
    if len(names) != classes:
        raise ImportFailure(
            f"--labels {source} has {len(names)} labels, but the model has {classes} classes"
        )
    return names


# ------------------------------------------------------------------------------------ torchvision


def import_torchvision(
    arch: str, path: Path, name: str, models_root: Path, *, labels: str | Path | None = None
) -> Path:
    """Publish a torchvision state dict of ``arch`` as a new version of ``name``."""
    _check_name(name)
    if arch not in TORCHVISION:
        raise ImportFailure(
            f"unknown architecture {arch!r}; torchvision architectures dlzoo imports: "
            f"{', '.join(TORCHVISION)}"
        )
    path = Path(path)
    state = _state_dict(path)
    head = "fc.weight" if arch.startswith("resnet") else "classifier.6.weight"
    classes = int(state[head].shape[0]) if head in state and state[head].ndim == 2 else 1000
    model_args = {"width": 1.0, "small_input": False, **TORCHVISION[arch]}
    net = getattr(architectures, arch)(
        num_classes=classes, in_channels=3, input_size=IMAGENET_SIZE, **model_args
    )
    _check_keys(arch, path, state, net.state_dict())
    net.load_state_dict({**net.state_dict(), **state}, strict=True)
    names = _labels(labels, classes)

    from training.tasks.classify import Normalized  # the zoo's classifiers' wrapper

    graph = Graph(
        module=Normalized(net, IMAGENET_MEAN, IMAGENET_STD).eval(),
        make_inputs=lambda b, g: (torch.rand(b, 3, *IMAGENET_SIZE, generator=g),),
        input_names=["pixels"],
        output_names=["logits"],
        dynamic={"pixels": {0: BATCH}},
    )
    fields = {
        "name": name,
        "architecture": arch,
        "task": "classify",
        "dataset": {"name": "unknown", "source": UNKNOWN_DATA, "splits": {}},
        "training": {"num_classes": classes, "input_size": list(IMAGENET_SIZE), **model_args},
        "metrics": {},
        "preprocess": {
            "size": IMAGENET_SIZE,
            "channels": 3,
            "resize": "crop",
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "normalization_in_graph": True,
        },
        "labels": names,
        "output": "logits",
        "origin": {"kind": "torchvision", "file": path.name, "sha256": sha256_file(path)},
    }
    return publish_export(models_root, fields, {"model": graph}, card_md=_card_md)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # e.g. about a plain pickle's protocol: the error says more
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused what the pickle holds
        why = re.search(r"WeightsUnpickler error:\s*([^\n]+?)(?:\s+Please use|\n|$)", str(exc))
        raise ImportFailure(
            f"{path.name} is not a state dict: torch.load(weights_only=True) refuses it "
            f"({why.group(1) if why else 'objects other than tensors'}); save "
            "model.state_dict(), not the model or other objects"
        ) from None
    except Exception as exc:  # not a file torch.save wrote
        raise ImportFailure(
            f"{path.name} is not a file torch.save wrote ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        inner = [k for k in ("state_dict", "model") if isinstance(obj, Mapping) and k in obj]
        hint = f"; it has a {inner[0]!r} entry: save that entry alone" if inner else ""
        raise ImportFailure(
            f"{path.name} holds a {type(obj).__name__}, not a state dict (a mapping of "
            f"parameter names to tensors){hint}"
        )
    return dict(obj)


def _check_keys(arch: str, path: Path, state: Mapping[str, torch.Tensor], expected) -> None:
    """Every key of ``arch`` present with its shape, nothing else; ``num_batches_tracked`` may be
    absent (older torchvision files; it does not change the eval forward)."""
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} is {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in {arch}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    problems = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected)):
        if keys:
            problems.append(f"{len(keys)} {what}: {', '.join(keys[:5])}{' …' * (len(keys) > 5)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {'; '.join(shapes[:5])}")
    if problems:
        raise ImportFailure(
            f"{path.name} is not a torchvision {arch} state dict: " + "; ".join(problems)
        )


# ------------------------------------------------------------------------------------------ cards


def _check_name(name: str) -> None:
    if not re.match(NAME_PATTERN, name):
        raise ImportFailure(
            f"--name {name!r}: lowercase letters, digits, '_' and '-', starting with a letter"
        )


def _card_md(card: Card) -> str:
    """card.md of an imported model: where it came from, that nobody measured it here, its io."""
    o, parity = card.origin, card.parity["model"]
    if o.kind == "onnx":
        source = (
            f"the ONNX file `{o.file}` (SHA-256 `{o.sha256}`), written by "
            f"{o.producer or 'an unnamed producer'}, IR {o.ir_version}, opset {o.opset}"
        )
        check = "the published graph against the imported one"
    else:
        source = f"the torchvision {card.architecture} state dict `{o.file}` (SHA-256 `{o.sha256}`)"
        check = "ONNX Runtime against PyTorch"
    io = card.io["model"]
    tensors = lambda ts: ", ".join(f"`{t.name}` {t.dtype} {t.shape}" for t in ts)  # noqa: E731
    lines = [
        f"# {card.name} v{card.version}",
        "",
        f"Imported, not trained here, from {source}.",
        "",
        "**Its accuracy was not measured here**: this card has no metrics, and what the model was "
        "trained on is not known from the file.",
        "",
        f"- task `{card.task}`, architecture `{card.architecture}`, created {card.created}, "
        f"commit `{card.git_commit or 'unknown'}`",
        f"- inputs (from the graph): {tensors(io.inputs)}; outputs: {tensors(io.outputs)}",
    ]
    if card.preprocess is not None:
        p = card.preprocess
        baked = any(m != 0 for m in p.mean) or any(s != 1 for s in p.std)
        norm = (
            f"mean {p.mean} and std {p.std} baked into the graph" if baked else "no normalization"
        )
        lines.append(
            f"- uploads: resize `{p.resize}` to {p.channels} x {p.size[0]} x {p.size[1]} in "
            f"[0, 1], {norm}; the first output holds {card.output_kind}; {len(card.labels)} "
            f"labels ({', '.join(card.labels[:3])}, ...)"
        )
    lines.append(
        f"- check: {check} on random inputs at batch {parity.batch_sizes}: max abs difference "
        f"{parity.max_abs_diff:.2e} (tolerance {parity.tolerance:.2e})"
    )
    return "\n".join(lines) + "\n"

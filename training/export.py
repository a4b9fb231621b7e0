"""ONNX export with a gate: checker, dynamic axes, parity against PyTorch; then the model folder.

``publish`` writes everything for one model version into a temporary folder inside the model
repository and renames it to ``<name>/<version>`` only when every graph passed the gate and the
card validated, so an interrupted or failed export leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from service.card import (
    CARD_FILE,
    UNNAMED_DIM,
    Card,
    GraphIO,
    Parity,
    TensorSpec,
    sha256_file,
    versions,
)

log = logging.getLogger("training.export")

BATCH = "batch"
PARITY_BATCHES = (1, 7)
PARITY_RTOL = 1e-4  # max|ort - torch| <= 1e-4 * max(1, max|torch|)

_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
}


class ExportError(RuntimeError):
    pass


@dataclass
class Graph:
    """One graph to export: ``make_inputs(batch, generator)`` gives fresh example inputs."""

    module: nn.Module
    make_inputs: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]
    input_names: list[str]
    output_names: list[str]
    # input name -> axes that must stay symbolic, e.g. {"pixels": {0: "batch"}}
    dynamic: dict[str, dict[int, str]]


def graph_io(model: onnx.ModelProto) -> GraphIO:
    """Names, dtypes and shapes of a graph's inputs and outputs, as the card records them: a fixed
    dim is its int, a named symbolic dim its name, an unnamed one ``UNNAMED_DIM``."""

    def spec(v: onnx.ValueInfoProto, kind: str) -> TensorSpec:
        if v.type.WhichOneof("value") != "tensor_type":
            raise ExportError(f"{kind} {v.name!r} is a {v.type.WhichOneof('value')}, not a tensor")
        t = v.type.tensor_type
        if t.elem_type not in _DTYPES:
            name, allowed = onnx.TensorProto.DataType.Name(t.elem_type), ", ".join(_DTYPES.values())
            raise ExportError(f"{kind} {v.name!r}: element type {name} is not one of {allowed}")
        if not t.HasField("shape"):
            raise ExportError(f"{kind} {v.name!r} has no shape in the graph (not even a rank)")
        shape = [
            int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or UNNAMED_DIM)
            for d in t.shape.dim
        ]
        return TensorSpec(name=v.name, dtype=_DTYPES[t.elem_type], shape=shape)

    weights = {t.name for t in model.graph.initializer}  # listed as inputs by IR < 4 graphs
    return GraphIO(
        inputs=[spec(v, "input") for v in model.graph.input if v.name not in weights],
        outputs=[spec(v, "output") for v in model.graph.output],
    )


def export_graph(graph: Graph, path: Path) -> GraphIO:
    """Export to one self-contained ONNX file, check it and its symbolic axes; return its io."""
    module = graph.module.eval()
    example = graph.make_inputs(2, torch.Generator().manual_seed(0))
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = []
    for name in graph.input_names:
        axes = graph.dynamic.get(name, {})
        dynamic_shapes.append(
            {
                a: dims.setdefault(n, torch.export.Dim(n, min=1, max=1 << 16))
                for a, n in axes.items()
            }
            or None
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            example,
            input_names=graph.input_names,
            output_names=graph.output_names,
            dynamic_shapes=tuple(dynamic_shapes),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise ExportError(f"{path.name}: the exporter returned nothing")
    program.save(str(path))
    model = onnx.load(str(path))
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise ExportError(f"{path.name}: weights were written outside the file")
    onnx.checker.check_model(model, full_check=True)
    io = graph_io(model)
    by_name = {t.name: t for t in io.inputs}
    for name, axes in graph.dynamic.items():
        for axis, dim in axes.items():
            got = by_name[name].shape[axis]
            if got != dim:
                # e.g. the dynamo exporter silently fixing a sequence length to the example's
                raise ExportError(
                    f"{path.name}: input {name} axis {axis} should be {dim!r}, is {got!r}"
                )
    return io


def check_parity(
    graph: Graph, path: Path, batches: tuple[int, ...] = PARITY_BATCHES, seed: int = 1234
) -> Parity:
    """Run ONNX Runtime and PyTorch on fresh random inputs at each batch size; raise if they
    differ."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst, tolerance = 0.0, 0.0
    for b in batches:
        inputs = graph.make_inputs(b, gen)
        with torch.inference_mode():
            expected = graph.module.eval()(*inputs)
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        got = sess.run(
            graph.output_names, {n: t.numpy() for n, t in zip(graph.input_names, inputs)}
        )
        for name, e, g in zip(graph.output_names, expected, got):
            e = e.detach().float().numpy()
            if e.shape != g.shape:
                raise ExportError(
                    f"{path.name}: output {name} shape {g.shape} != torch {e.shape} at batch {b}"
                )
            diff = float(np.max(np.abs(e - g))) if e.size else 0.0
            tol = PARITY_RTOL * max(1.0, float(np.max(np.abs(e))) if e.size else 1.0)
            if not diff <= tol:
                raise ExportError(
                    f"{path.name}: output {name} differs from torch by {diff:.3g} "
                    f"(tolerance {tol:.3g}) at batch {b}"
                )
            worst, tolerance = max(worst, diff), max(tolerance, tol)
    return Parity(max_abs_diff=worst, tolerance=tolerance, batch_sizes=list(batches))


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def publish(
    models_root: Path,
    card_fields: dict[str, Any],
    graphs: dict[str, Graph],
    extras: dict[str, Path | bytes] | None = None,
    card_md: Callable[[Card], str] | None = None,
) -> Path:
    """Export every graph (role -> Graph), gate it, write the card; return the new version folder.

    ``card_fields`` holds everything but ``version``, ``created``, ``git_commit``, ``files``, ``io``
    and ``parity``, which this function measures. ``extras`` are copied beside the card.
    """

    def export_all(folder: Path) -> dict[str, tuple[GraphIO, Parity]]:
        out = {}
        for role, graph in graphs.items():
            path = folder / f"{role}.onnx"
            io = export_graph(graph, path)
            out[role] = (io, check_parity(graph, path))
            log.info(
                "%s/%s: exported, parity %.2e", card_fields["name"], role, out[role][1].max_abs_diff
            )
        return out

    return publish_graphs(models_root, card_fields, export_all, extras, card_md)


def publish_graphs(
    models_root: Path,
    card_fields: dict[str, Any],
    write: Callable[[Path], dict[str, tuple[GraphIO, Parity]]],
    extras: dict[str, Path | bytes] | None = None,
    card_md: Callable[[Card], str] | None = None,
) -> Path:
    """The atomic part of :func:`publish`, whoever makes the graphs (an export, an import).

    ``write(folder)`` writes ``<role>.onnx`` for each role into the temporary folder and returns
    role -> (io, parity); any exception leaves nothing behind. The folder is renamed to the next
    free ``<name>/<version>``, never over an existing one.
    """
    models_root = Path(models_root)
    models_root.mkdir(parents=True, exist_ok=True)
    name = card_fields["name"]
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=models_root))
    try:
        measured = write(tmp)
        files = {
            role: {"path": f"{role}.onnx", "sha256": sha256_file(tmp / f"{role}.onnx")}
            for role in measured
        }
        io = {role: m[0] for role, m in measured.items()}
        parity = {role: m[1] for role, m in measured.items()}
        for fname, content in (extras or {}).items():
            if isinstance(content, bytes):
                (tmp / fname).write_bytes(content)
            else:
                shutil.copyfile(content, tmp / fname)
        for _attempt in range(100):
            version = (versions(models_root, name) or [0])[-1] + 1
            card = Card(
                **card_fields,
                version=version,
                git_commit=git_commit(),
                created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                files=files,
                io=io,
                parity=parity,
            )
            (tmp / CARD_FILE).write_text(card.to_json())
            if card_md is not None:
                (tmp / "card.md").write_text(card_md(card))
            target = models_root / name / str(version)
            target.parent.mkdir(exist_ok=True)
            try:
                # rename is atomic; it refuses a non-empty target, so two exporters never collide
                os.rename(tmp, target)
                return target
            except OSError:
                if not target.exists():
                    raise
        raise ExportError(f"could not allocate a version folder for {name}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

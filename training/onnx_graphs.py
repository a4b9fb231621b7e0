"""ONNX graphs dlzoo did not write: read and check a file, bake a normalization in front of a
graph, compare two graphs in ONNX Runtime. The import of such a graph is training/importing.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from service.card import GraphIO, Parity
from training.export import PARITY_RTOL, ExportError, graph_io

MIN_OPSET = 7  # the oldest default-domain opset ONNX Runtime runs
# A normalization baked in front of a graph must equal numpy's to this (max abs difference).
BAKE_TOLERANCE = 1e-5
CPU = ["CPUExecutionProvider"]


class ImportFailure(ValueError):
    """A file that cannot be imported as asked; the message names the problem."""


def read_onnx(path: Path) -> tuple[bytes, onnx.ModelProto, GraphIO]:
    """The file's bytes, graph and io, checked: an ONNX model, one file, a supported opset, tensor
    inputs and outputs with shapes, ``onnx.checker``'s full check."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError, or anything else a parser raises
        raise ImportFailure(
            f"{path.name} is not an ONNX model (it does not parse: {exc})"
        ) from None
    if model.ir_version < 1 or not model.opset_import or not model.graph.output:
        raise ImportFailure(
            f"{path.name} is not an ONNX model (no IR version, opset or graph outputs)"
        )
    external = [
        t.name for t in stored_tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise ImportFailure(
            f"{path.name} keeps {len(external)} tensor(s) in external data files (first: "
            f"{external[0]!r}); import one self-contained file, e.g. onnx.save(onnx.load(FILE), "
            "OUT, save_as_external_data=False)"
        )
    version = opset(model)
    if version is not None and version < MIN_OPSET:
        raise ImportFailure(
            f"{path.name} uses opset {version}; ONNX Runtime runs opset {MIN_OPSET} and later"
        )
    io = read_io(model, path)  # before the checker: its messages do not name the tensor
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError
        raise ImportFailure(f"{path.name}: onnx.checker refuses it: {exc}") from None
    return data, model, io


def stored_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in a graph and its subgraphs: initializers and attribute values."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in [attr.g] * attr.HasField("g") + list(attr.graphs):
                yield from stored_tensors(sub)


def opset(model: onnx.ModelProto) -> int | None:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def open_session(data: bytes, path: Path, model: onnx.ModelProto) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(data, providers=CPU)
    except Exception as exc:
        raise ImportFailure(
            f"ONNX Runtime {ort.__version__} cannot load {Path(path).name} (IR "
            f"{model.ir_version}, opset {opset(model)}): {exc}"
        ) from None


def read_io(model: onnx.ModelProto, path: Path) -> GraphIO:
    try:
        return graph_io(model)
    except ExportError as exc:
        hint = ""
        if "not a tensor" in str(exc):  # skl2onnx's default ZipMap output: a sequence of maps
            hint = "; dlzoo serves tensors (skl2onnx: convert with options={'zipmap': False})"
        raise ImportFailure(f"{Path(path).name}: {exc}{hint}") from None


def bake_normalization(model: onnx.ModelProto, x: np.ndarray, mean, std) -> tuple[bytes, Any]:
    """The graph with ``(x - mean) / std`` in front of its input, checked against numpy on ``x``
    (max difference <= BAKE_TOLERANCE); its bytes and the numpy normalization."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g, name = m.graph, m.graph.input[0].name
    taken = {v for n in g.node for v in (*n.input, *n.output)} | {t.name for t in g.initializer}
    taken |= {v.name for v in (*g.input, *g.output)}
    fresh = {}
    for role in ("mean", "std", "centred", "normalized"):
        fresh[role] = f"{name}_{role}"
        while fresh[role] in taken:
            fresh[role] += "_"
    _rename_uses(g, name, fresh["normalized"])
    shape = (1, len(mean), 1, 1)
    consts = {
        k: np.asarray(v, np.float32).reshape(shape) for k, v in (("mean", mean), ("std", std))
    }
    nodes = [
        helper.make_node("Constant", [], [fresh[k]], value=numpy_helper.from_array(v, fresh[k]))
        for k, v in consts.items()
    ]
    nodes += [
        helper.make_node("Sub", [name, fresh["mean"]], [fresh["centred"]]),
        helper.make_node("Div", [fresh["centred"], fresh["std"]], [fresh["normalized"]]),
    ]
    old = list(g.node)
    del g.node[:]
    g.node.extend(nodes + old)
    onnx.checker.check_model(m)

    def normalize(a: np.ndarray) -> np.ndarray:
        return (a - consts["mean"]) / consts["std"]

    # the normalized tensor as an extra output: ORT computes only the nodes it needs
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    probe.graph.output.append(
        helper.make_tensor_value_info(fresh["normalized"], onnx.TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(probe.SerializeToString(), providers=CPU)
    got = session.run([fresh["normalized"]], {name: x})[0]
    diff = float(np.max(np.abs(got - normalize(x))))
    if not diff <= BAKE_TOLERANCE:
        raise ImportFailure(f"the baked normalization differs from numpy's by {diff:.3g}")
    return m.SerializeToString(), normalize


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node (subgraphs too) that reads ``old`` reads ``new`` instead."""
    for node in graph.node:
        for i, v in enumerate(node.input):
            if v == old:
                node.input[i] = new
        for attr in node.attribute:
            for sub in [attr.g] * attr.HasField("g") + list(attr.graphs):
                if old not in {v.name for v in (*sub.input, *sub.initializer)}:  # not shadowed
                    _rename_uses(sub, old, new)


def random_feeds(io: GraphIO) -> dict[str, np.ndarray]:
    """Random inputs shaped by the graph, every symbolic dim 1."""
    rng = np.random.default_rng(2)
    feeds = {}
    for spec in io.inputs:
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        if spec.dtype.startswith("float"):
            feeds[spec.name] = rng.random(shape).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return feeds


def compare(session, published: bytes, feeds: dict[str, np.ndarray], normalize) -> Parity:
    """The published graph against the imported one (fed numpy's normalization, if baked) on the
    same random input: the card's parity record."""
    theirs = dict(feeds)
    if normalize is not None:
        name = next(iter(feeds))
        theirs[name] = normalize(feeds[name]).astype(np.float32)
    try:
        want = session.run(None, theirs)
        got = ort.InferenceSession(published, providers=CPU).run(None, feeds)
    except Exception as exc:
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        raise ImportFailure(f"the graph failed on a random input {shapes}: {exc}") from None
    diff, tol = 0.0, 0.0
    for w, g in zip(want, got):
        w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
        diff = max(diff, float(np.max(np.abs(w - g))) if w.size else 0.0)
        tol = max(tol, PARITY_RTOL * max(1.0, float(np.max(np.abs(w))) if w.size else 1.0))
    if not diff <= tol:
        raise ImportFailure(f"the published graph differs from the imported one by {diff:.3g}")
    first = next(iter(feeds.values()), np.zeros(1))
    return Parity(
        max_abs_diff=diff, tolerance=tol, batch_sizes=[int(first.shape[0]) if first.ndim else 1]
    )

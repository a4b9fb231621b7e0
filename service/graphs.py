"""The model repository as the Open Inference Protocol sees it: one V2 model per graph.

A model whose one graph is the whole model is served under its own name (a classifier's
``model``, a GAN's ``generator``, an imported tensor graph's ``model``); the graphs of the others
under ``<name>.<role>`` (``vae.decoder``, ``seq2seq.encoder``, ``lstm.step``): a language model's
step or half a seq2seq model is one step of a procedure, not the model. Versions are the
repository's. A classifier takes what ``/classify`` hands its batcher (pixels in [0, 1] at the
card's preprocess size) and answers its graph's first output, through the same batcher
(service/classify.py); the other graphs run as they are, under ``Catalog.hold``.

Here: the names, the tensors each graph takes and gives, the protocol's metadata, Triton's model
configuration, repository index and statistics bodies, the checks of a request's tensors, and
:func:`run`, which the front (classifiers on a CPU) and the Inference service both call.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from service.card import NAME_PATTERN, UNNAMED_DIM, Card
from service.errors import BadRequest, ClientError, Failure, NotFoundError, ServiceUnavailableError
from service.metrics import STAGE_SECONDS, observe_call
from service.repository import Catalog, Entry
from service.tensors import DTYPES, FROM_CARD, Tensor, shown

WHOLE = {"classify": "model", "gan": "generator", "tensor": "model"}  # task -> its one graph
PLATFORM = "onnx_onnxv1"
IMAGE_INPUT = "image"  # a classifier's BYTES input: encoded images, preprocessed by the card
# The repository's states (service/repository.py) as the protocol's.
STATES = {
    "ready": "READY",
    "loading": "LOADING",
    "draining": "UNLOADING",
    "failed": "UNAVAILABLE",
    "unloaded": "UNAVAILABLE",
}
_TYPES = {k: "TYPE_STRING" if k == "BYTES" else f"TYPE_{k}" for k in DTYPES}  # Triton's config


@dataclass(frozen=True)
class Spec:
    """A tensor a graph takes or gives; a string in ``shape`` is a symbolic axis (``batch``)."""

    name: str
    datatype: str
    shape: tuple[int | str, ...]

    @property
    def dims(self) -> list[int]:
        return [d if isinstance(d, int) else -1 for d in self.shape]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.dims}


# ---------------------------------------------------------------------------------------- names


def names(task: str, roles) -> dict[str, str]:
    """V2 name -> role, for a model ``name`` of ``task`` with graphs ``roles`` (as suffixes)."""
    if task in WHOLE:
        return {"": WHOLE[task]}
    return {f".{role}": role for role in roles}


def split(v2_name: str) -> tuple[str, str | None]:
    """``"vae.decoder"`` -> ("vae", "decoder"); ``"lenet5"`` -> ("lenet5", None)."""
    name, _, role = v2_name.partition(".")
    if not re.match(NAME_PATTERN, name) or (role and not re.fullmatch(r"[a-z_]{1,64}", role)):
        raise NotFoundError(f"model: no model named {shown(v2_name)}")
    return name, role or None


def role_of(card: Card, v2_name: str, role: str | None) -> str:
    """The graph ``v2_name`` stands for in ``card``, or 404 naming the V2 names it has."""
    served = {card.name + suffix: r for suffix, r in names(card.task, card.files).items()}
    if v2_name not in served:
        raise NotFoundError(
            f"model: {card.name} has no graph {shown(v2_name)}; its V2 names: {', '.join(served)}"
        )
    return served[v2_name]


def specs(card: Card, role: str) -> tuple[list[Spec], list[Spec]]:
    """The inputs and outputs a V2 client sees for ``role`` of ``card``."""
    io = card.io[role]
    if card.task == "classify":  # what the batcher takes, and its first output
        pre, first, out = card.preprocess, io.inputs[0], io.outputs[0]
        pixels = Spec(first.name, FROM_CARD[first.dtype], ("batch", pre.channels, *pre.size))
        return [pixels], [Spec(out.name, FROM_CARD[out.dtype], ("batch", len(card.labels)))]
    spec = lambda t: Spec(t.name, FROM_CARD[t.dtype], tuple(t.shape))  # noqa: E731
    return [spec(t) for t in io.inputs], [spec(t) for t in io.outputs]


# ----------------------------------------------------------------------------- protocol bodies


def metadata(v2_name: str, versions: list[int], inputs: list[Spec], outputs: list[Spec]) -> dict:
    return {
        "name": v2_name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [s.describe() for s in inputs],
        "outputs": [s.describe() for s in outputs],
    }


def config(v2_name: str, card: Card, inputs: list[Spec], outputs: list[Spec], max_batch: int):
    """Triton's model configuration (what perf_analyzer reads): with a leading batch axis on every
    tensor, ``max_batch_size`` is DLZOO_MAX_BATCH and ``dims`` leave the batch out."""
    batched = all(s.shape and isinstance(s.shape[0], str) for s in (*inputs, *outputs))
    cut = 1 if batched else 0
    tensor = lambda s: {"name": s.name, "data_type": _TYPES[s.datatype], "dims": s.dims[cut:]}  # noqa: E731
    body: dict[str, Any] = {
        "name": v2_name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": max_batch if batched else 0,
        "input": [{**tensor(s), "format": "FORMAT_NONE"} for s in inputs],
        "output": [tensor(s) for s in outputs],
    }
    if card.task == "classify":
        body["dynamic_batching"] = {}  # requests join /classify's continuous batcher
    return body


def index(listing: list[dict[str, Any]], ready_only: bool) -> list[dict[str, str]]:
    """The repository extension's index from ``/models``' listing: a row per graph and version."""
    rows = []
    for m in listing:
        if m.get("version") is None:  # still training: not in the repository yet
            continue
        state = STATES.get(m["status"], "UNAVAILABLE")
        if ready_only and state != "READY":
            continue
        graphs = names(m["task"], m["inputs"]) if "task" in m else {"": ""}  # no card: its folder
        for suffix in graphs:
            row = {"name": m["name"] + suffix, "version": str(m["version"]), "state": state}
            rows.append({**row, "reason": m.get("reason") or ""})
    return rows


def statistics(served: list[tuple[str, Entry]], totals: dict[str, dict[str, float]]) -> dict:
    """Triton's statistics from the service's metrics (every process's), per model version: the
    graphs of one version share its figures. Counts are of rows (a ``/classify`` request is one).
    Every row that ran passed the queue, input, infer and output once, so each of their counts is
    the rows that ran, as in Triton (perf_analyzer requires the three compute counts equal, and
    without ``-x`` takes the version whose queue count grew); the times are the stages measured:
    ``queue`` the batcher's wait (a graph run as it is has none), ``compute_input`` the
    preprocess stage (decoding and preparing images; a tensor input has none), ``success`` what
    the stages add up to. Failures, output extraction and a cache are not measured (zero)."""

    def duration(count: float, seconds: float) -> dict[str, int]:
        return {"count": int(count), "ns": int(round(seconds * 1e9))}

    stats = []
    for v2_name, entry in served:
        t = totals.get(entry.ref, {})
        stage = {
            s: (
                t.get(f"dlzoo_stage_seconds_count/{s}", 0),
                t.get(f"dlzoo_stage_seconds_sum/{s}", 0),
            )
            for s in ("queue", "preprocess", "inference")
        }
        spent = sum(seconds for _, seconds in stage.values())
        ran = stage["inference"][0]
        zero = duration(0, 0)
        stats.append(
            {
                "name": v2_name,
                "version": str(entry.version),
                "last_inference": int(t.get("dlzoo_last_inference_timestamp_seconds", 0) * 1e3),
                "inference_count": int(t.get("dlzoo_batch_size_sum", 0)),
                "execution_count": int(t.get("dlzoo_inference_seconds_count", 0)),
                "inference_stats": {
                    "success": duration(ran, spent),
                    "fail": zero,
                    "queue": duration(ran, stage["queue"][1]),
                    "compute_input": duration(ran, stage["preprocess"][1]),
                    "compute_infer": duration(*stage["inference"]),
                    "compute_output": duration(ran, 0),
                    "cache_hit": zero,
                    "cache_miss": zero,
                },
                "batch_stats": [],
            }
        )
    return {"model_stats": stats}


# ---------------------------------------------------------------------------------- the tensors


def check(tensors: list[Tensor], inputs: list[Spec], max_batch: int, images: bool):
    """The arrays to run, by input name, after checking them against ``inputs``: names,
    datatypes, ranks, fixed sizes, one size per symbolic axis, a batch of 1..``max_batch``.
    ``images``: a BYTES input ``image`` (encoded images, one per batch row) may stand for the
    one input instead; it is returned under ``IMAGE_INPUT``, undecoded."""
    wanted = {s.name: s for s in inputs}
    if images and len(tensors) == 1 and tensors[0].datatype == "BYTES":
        t = tensors[0]
        if t.name != IMAGE_INPUT or len(t.shape) not in (1, 2) or t.shape[1:] not in ((), (1,)):
            raise BadRequest(
                f"inputs: encoded images go in a BYTES input named {IMAGE_INPUT!r} of shape "
                "[N] or [N, 1]"
            )
        _batch(t.shape[0], max_batch, t.name)
        return {IMAGE_INPUT: t.data.reshape(-1)}
    given = {t.name for t in tensors}
    missing = [n for n in wanted if n not in given]
    if missing:
        also = f" (or a BYTES input {IMAGE_INPUT!r} of encoded images)" if images else ""
        raise BadRequest(f"inputs: missing {', '.join(map(repr, missing))}{also}")
    unknown = [t.name for t in tensors if t.name not in wanted]
    if unknown:
        raise BadRequest(
            f"inputs: no input named {shown(unknown[0])}; this model takes {', '.join(wanted)}"
        )
    sizes: dict[str, int] = {}
    for t in tensors:
        spec = wanted[t.name]
        if t.datatype != spec.datatype:
            raise BadRequest(f"inputs ({t.name}): datatype {t.datatype}; it takes {spec.datatype}")
        if len(t.shape) != len(spec.shape) or any(
            isinstance(d, int) and d != n for d, n in zip(spec.shape, t.shape)
        ):
            raise BadRequest(f"inputs ({t.name}): shape {list(t.shape)}; it takes {spec.dims}")
        for d, n in zip(spec.shape, t.shape):  # an unnamed axis ("?") is its own
            if isinstance(d, str) and d != UNNAMED_DIM and sizes.setdefault(d, n) != n:
                raise BadRequest(f"inputs: axis {d!r} is {sizes[d]} in one input, {n} in another")
        if spec.shape and isinstance(spec.shape[0], str):
            _batch(t.shape[0], max_batch, t.name)
    return {t.name: t.data for t in tensors}


def _batch(n: int, max_batch: int, name: str) -> None:
    if not 1 <= n <= max_batch:
        raise BadRequest(
            f"inputs ({name}): batch of {n}; 1 to {max_batch} per request (DLZOO_MAX_BATCH)"
        )


# ------------------------------------------------------------------------------------ running


async def run(catalog: Catalog, classifier, ref: str, role: str, inputs: dict[str, Any]) -> dict:
    """Graph ``role`` of ``ref`` (name@version, resolved by the front) on checked ``inputs``:
    ``{model, version, outputs: {name: array}}``, or a failure answer (service/errors.py). A
    classifier's rows go through ``classifier`` (its batcher); other graphs run here, held."""
    try:
        entry = catalog.loaded(ref)
    except (ClientError, ServiceUnavailableError) as exc:
        return Failure.of(exc).answer()
    if entry.card.task == "classify":
        return await _classify_rows(classifier, entry, next(iter(inputs.values())))
    with catalog.hold(entry):
        return await anyio.to_thread.run_sync(_run_session, entry, role, inputs)


async def _classify_rows(classifier, entry: Entry, pixels: np.ndarray) -> dict:
    """Each row one item of the batcher, asking for the graph's own output (classify.py)."""
    sent = time.time()
    items = [
        {"model": entry.ref, "pixels": row, "top_k": 0, "sent": sent, "raw": True} for row in pixels
    ]
    answers = await asyncio.gather(*(classifier.classify(item) for item in items))
    for answer in answers:
        if "failure" in answer:
            return answer
    name = entry.card.io["model"].outputs[0].name
    out = np.stack([np.asarray(a["output"]) for a in answers])  # (N, classes)
    return {"model": entry.name, "version": entry.version, "outputs": {name: out}}


def _run_session(entry: Entry, role: str, inputs: dict[str, Any]) -> dict:
    session = entry.sessions[role]
    t0 = time.perf_counter()
    try:
        values = session.run(None, inputs)
    except Exception as exc:  # values the graph refuses (a token id past the vocabulary...)
        return Failure(400, f"inputs: {role} could not run on them: {str(exc)[:300]}").answer()
    seconds = time.perf_counter() - t0
    first = next(iter(inputs.values()))
    rows = int(first.shape[0]) if np.ndim(first) else 1
    observe_call(entry.ref, entry.provider, rows, seconds)
    labels = {"model": entry.ref, "provider": entry.provider}
    STAGE_SECONDS.labels(stage="inference", **labels).observe(seconds)
    outputs = {o.name: v for o, v in zip(session.get_outputs(), values)}
    return {"model": entry.name, "version": entry.version, "outputs": outputs}

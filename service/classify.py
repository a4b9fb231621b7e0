"""Classification: one interface whether the classifiers run in this process or in Inference.

``LocalClassifier`` batches continuously (service/batching.py) over this process's sessions; a
batch may mix models and runs one ONNX call per model. ``RemoteClassifier`` hands each item to the
Inference service, whose own ``LocalClassifier`` batches it. Where they run is decided once, by
``Settings.classifiers_in_front``. A bad item gets a failure answer instead of failing its batch.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, NotRequired, Protocol, TypedDict

import numpy as np

from service.batching import Batcher, Overloaded
from service.errors import ClientError, Failure, ServiceUnavailableError
from service.metrics import STAGE_SECONDS, observe_call
from service.repository import Catalog


class Item(TypedDict):
    model: str  # name@version, resolved by the front
    pixels: np.ndarray  # (C, H, W) float32 in [0, 1], preprocessed with the card's recipe
    top_k: int
    sent: float  # epoch seconds when the front handed it on
    raw: NotRequired[bool]  # V2 (service/graphs.py): the graph's own output row, not the top-k


class Classifier(Protocol):
    async def classify(self, item: Item) -> dict[str, Any]:
        """The result, or a failure answer (service.errors.unwrap raises it)."""
        ...


@dataclass(frozen=True)
class Call:
    """One ONNX call, for metrics."""

    model: str  # name@version
    provider: str
    items: int
    seconds: float


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _run(session: Any, name: str, x: np.ndarray, batch: int | str) -> np.ndarray:
    """The first output for ``x``; a graph with a fixed batch size (an imported one may take
    exactly 1) gets slices of that size, the last one padded with zeros."""
    if isinstance(batch, str) or batch == len(x):
        return session.run(None, {name: x})[0]
    out = []
    for i in range(0, len(x), batch):
        part = x[i : i + batch]
        if len(part) < batch:
            part = np.concatenate([part, np.zeros((batch - len(part), *x.shape[1:]), x.dtype)])
        out.append(session.run(None, {name: part})[0])
    return np.concatenate(out)[: len(x)]


def classify_items(
    catalog: Catalog, items: list[Item], now: float | None = None
) -> tuple[list[dict[str, Any]], list[Call]]:
    """One batch that may mix models: results in the items' order, and the ONNX calls made."""
    started = time.time() if now is None else now
    results: list[dict[str, Any]] = [{} for _ in items]
    calls: list[Call] = []
    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[item["model"]].append(i)
    for ref, idx in groups.items():
        try:
            entry = catalog.loaded(ref)
        except (ClientError, ServiceUnavailableError) as exc:
            for i in idx:
                results[i] = Failure.of(exc).answer()
            continue
        spec = entry.card.io["model"].inputs[0]
        # the card's size and channels: the graph's own dims, or what fits its symbolic ones
        want = (entry.card.preprocess.channels, *entry.card.preprocess.size)
        good = []
        for i in idx:
            shape = tuple(np.shape(items[i]["pixels"]))
            if shape != want:
                results[i] = Failure(400, f"pixels: shape {shape}, {ref} takes {want}").answer()
            else:
                good.append(i)
        if not good:
            continue
        x = np.stack([items[i]["pixels"] for i in good]).astype(
            np.float32, copy=False
        )  # (B, C, H, W)
        t0 = time.perf_counter()
        scores = _run(entry.sessions["model"], spec.name, x, spec.shape[0])  # (B, classes)
        seconds = time.perf_counter() - t0
        calls.append(Call(entry.ref, entry.provider, len(good), seconds))
        raw = scores  # (B, classes) as the graph gave them, for the items that ask
        scores = scores.astype(np.float64)
        # an imported graph may end in a softmax already: never apply a second one
        probs = scores if entry.card.output_kind == "probabilities" else softmax(scores)
        names = entry.card.labels
        for row, i in enumerate(good):
            top = np.argsort(-probs[row], kind="stable")[: items[i]["top_k"]]
            queue = max(0.0, started - items[i]["sent"])
            results[i] = {
                "model": entry.name,
                "version": entry.version,
                "provider": entry.provider,
                "predictions": [
                    {"label": names[j], "index": int(j), "probability": float(probs[row, j])}
                    for j in top
                ],
                "timings_ms": {
                    "queue": round(queue * 1e3, 3),
                    "inference": round(seconds * 1e3, 3),
                },
                "batch_size": len(good),
            }
            if items[i].get("raw"):
                results[i]["output"] = raw[row]
    return results, calls


class LocalClassifier:
    """Continuous batching over ``catalog``'s classifier sessions, with its metrics."""

    def __init__(self, catalog: Catalog, max_batch: int, max_wait: float) -> None:
        self.catalog = catalog
        self.batcher = Batcher(self._run, max_batch=max_batch, max_wait=max_wait, name="classify")

    async def classify(self, item: Item) -> dict[str, Any]:
        try:
            entry = self.catalog.loaded(item["model"])
        except (ClientError, ServiceUnavailableError) as exc:
            return Failure.of(exc).answer()
        with self.catalog.hold(entry):  # its version stays loaded until the answer is out
            try:
                return await self.batcher.submit(item)
            except Overloaded as exc:
                return Failure(
                    503, f"overloaded: the request {exc} (DLZOO_MAX_LATENCY_MS)"
                ).answer()

    def _run(self, items: list[Item]) -> list[dict[str, Any]]:
        results, calls = classify_items(self.catalog, items)
        for call in calls:
            observe_call(call.model, call.provider, call.items, call.seconds)
        for r in results:
            if "failure" not in r:
                labels = {"model": f"{r['model']}@{r['version']}", "provider": r["provider"]}
                STAGE_SECONDS.labels(stage="queue", **labels).observe(
                    r["timings_ms"]["queue"] / 1e3
                )
                STAGE_SECONDS.labels(stage="inference", **labels).observe(
                    r["timings_ms"]["inference"] / 1e3
                )
        return results


class RemoteClassifier:
    """The Inference service's classifiers (``inference``: BentoML's client of it)."""

    def __init__(self, inference) -> None:
        self.inference = inference

    async def classify(self, item: Item) -> dict[str, Any]:
        return await self.inference.to_async.classify(item=item)

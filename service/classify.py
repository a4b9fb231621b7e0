"""Classification of a batch that may mix models: one ONNX call per model, top-k per item.

Plain numpy over the catalog's sessions, no HTTP: the batcher (service/batching.py) hands its
batches here. A bad item gets an error result (status + message) instead of failing its batch,
since an exception raised for a batch would reach every request in it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.catalog import Catalog
from service.errors import ClientError


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


def classify_items(catalog: Catalog, items: list[dict[str, Any]],
                   now: float | None = None) -> tuple[list[dict[str, Any]], list[Call]]:
    """items: ``{model: "name@version", pixels: (C, H, W) float32, top_k, sent: epoch seconds}``."""
    started = time.time() if now is None else now
    results: list[dict[str, Any]] = [{} for _ in items]
    calls: list[Call] = []
    groups: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[item["model"]].append(i)
    for ref, idx in groups.items():
        try:
            entry = catalog.resolve(ref, ["classify"])
        except ClientError as exc:
            for i in idx:
                results[i] = {"error": str(exc), "status": exc.status}
            continue
        if "model" not in entry.sessions:  # this process does not run classifiers (DLZOO_CLASSIFY_IN)
            for i in idx:
                results[i] = {"error": f"model: {ref} is not loaded in this process", "status": 503}
            continue
        spec = entry.card.io["model"].inputs[0]
        want = tuple(spec.shape[1:])
        good = []
        for i in idx:
            shape = tuple(np.shape(items[i]["pixels"]))
            if shape != want:
                results[i] = {"error": f"pixels: shape {shape}, {ref} takes {want}", "status": 400}
            else:
                good.append(i)
        if not good:
            continue
        x = np.stack([items[i]["pixels"] for i in good]).astype(np.float32, copy=False)  # (B, C, H, W)
        t0 = time.perf_counter()
        logits = entry.sessions["model"].run(None, {spec.name: x})[0]  # (B, classes)
        seconds = time.perf_counter() - t0
        calls.append(Call(entry.ref, entry.provider, len(good), seconds))
        probs = softmax(logits.astype(np.float64))
        names = entry.card.labels
        for row, i in enumerate(good):
            top = np.argsort(-probs[row], kind="stable")[: items[i]["top_k"]]
            queue = max(0.0, started - items[i]["sent"])
            results[i] = {
                "model": entry.name, "version": entry.version, "provider": entry.provider,
                "predictions": [{"label": names[j], "index": int(j), "probability": float(probs[row, j])}
                                for j in top],
                "timings_ms": {"queue": round(queue * 1e3, 3), "inference": round(seconds * 1e3, 3)},
                "batch_size": len(good),
            }
    return results, calls

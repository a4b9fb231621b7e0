"""What both comparison servers share with ours: the card's preprocessing and the answer's shape.

The work per image is identical to the service's: ``service.imaging.preprocess_upload`` with the
card's ``preprocess`` and the service's size limits, then softmax and top-k as
``service.classify`` answers them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from load_tests.common import latest_version
from service.card import Card, load_card
from service.classify import softmax
from service.imaging import preprocess_upload
from service.settings import Settings

SETTINGS = Settings.from_env()


def card_of(models: Path, name: str) -> tuple[Card, Path]:
    folder = latest_version(models, name)
    if folder is None:
        raise SystemExit(f"{models}: no model named {name}")
    return load_card(folder / "card.json"), folder


def prepare(data: bytes, card: Card) -> np.ndarray:
    """Upload bytes -> (C, H, W) float32, exactly as the service's front does it."""
    return preprocess_upload(data, card.preprocess, max_bytes=SETTINGS.max_upload_bytes,
                             max_pixels=SETTINGS.max_pixels)


def top_k(card: Card, logits: np.ndarray, k: int, batch_size: int) -> list[dict]:
    """(B, classes) logits -> one answer per row, shaped like the service's."""
    probs = softmax(np.asarray(logits, dtype=np.float64))
    out = []
    for row in probs:
        top = np.argsort(-row, kind="stable")[:k]
        out.append({"model": card.name, "version": card.version,
                    "predictions": [{"label": card.labels[j], "index": int(j), "probability": float(row[j])}
                                    for j in top], "batch_size": batch_size})
    return out

"""Service configuration: environment variables with documented defaults, read once at start-up.

| variable | default | meaning |
|---|---|---|
| DLZOO_MODELS | models | the model repository |
| DLZOO_MAX_UPLOAD_BYTES | 10000000 | largest image upload (413 above) |
| DLZOO_MAX_PIXELS | 40000000 | largest image in pixels, checked before decoding (413 above) |
| DLZOO_MAX_BATCH | 64 | adaptive batching: most items in one batch |
| DLZOO_MAX_LATENCY_MS | 10000 | adaptive batching: a request that BentoML expects to wait longer is refused (503) |
| DLZOO_FRONT_WORKERS | 1 | HTTP worker processes (decode, preprocess) |
| DLZOO_INFERENCE_WORKERS | 1 | inference processes (one ONNX Runtime session per graph each) |
ONNX Runtime's own variables (DLZOO_DEVICE, threads, GPU options) are documented in runtime.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


def _int(env: Mapping[str, str], key: str, default: int, low: int = 1) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r}: expected an integer >= {low}") from None
    if value < low:
        raise ValueError(f"{key}={raw!r}: expected an integer >= {low}")
    return value


@dataclass(frozen=True)
class Settings:
    models: Path
    max_upload_bytes: int
    max_pixels: int
    max_batch: int
    max_latency_ms: int
    front_workers: int
    inference_workers: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        return cls(
            models=Path(env.get("DLZOO_MODELS") or "models"),
            max_upload_bytes=_int(env, "DLZOO_MAX_UPLOAD_BYTES", 10_000_000),
            max_pixels=_int(env, "DLZOO_MAX_PIXELS", 40_000_000),
            max_batch=_int(env, "DLZOO_MAX_BATCH", 64),
            max_latency_ms=_int(env, "DLZOO_MAX_LATENCY_MS", 10_000),
            front_workers=_int(env, "DLZOO_FRONT_WORKERS", 1),
            inference_workers=_int(env, "DLZOO_INFERENCE_WORKERS", 1),
        )

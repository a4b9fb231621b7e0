"""Service configuration: environment variables with documented defaults, read once at start-up.

| variable | default | meaning |
|---|---|---|
| DLZOO_MODELS | models | the model repository |
| DLZOO_MAX_UPLOAD_BYTES | 10000000 | largest image upload (413 above) |
| DLZOO_MAX_PIXELS | 40000000 | largest image in pixels, checked before decoding (413 above) |
| DLZOO_MAX_BATCH | 64 | classification: most items in one batch (1: no batching) |
| DLZOO_MAX_LATENCY_MS | 10000 | classification: a request that waited longer for its batch is refused (503) |
| DLZOO_FRONT_WORKERS | cores, at most 4 | HTTP worker processes (decode, preprocess; on a CPU also classify) |
| DLZOO_INFERENCE_WORKERS | 1 | inference processes (one ONNX Runtime session per graph each) |
| DLZOO_MAX_STREAMS | 64 | generation: most streams of one model sharing a step call; more wait their turn |
| DLZOO_CHANNEL_SECONDS | 600 | a front worker's generation channel takes new generations this long, then a new one does |
| DLZOO_UNTRACED_PATHS | /classify, /generate_stream, /generation_channel, /generate_events | comma-separated paths (exact) OpenTelemetry does not trace, in either service (empty: trace all) |
| DLZOO_CONNECTION_SECONDS | 2 | with several front workers, a client connection is closed after its first response once this old, so that connections spread over the workers (0: never; service/connections.py) |
| DLZOO_CLASSIFY_IN | auto | where classifiers run: `front` (in each HTTP worker, no internal hop), `inference` (in the Inference service, one copy of each session), `auto` (front on CPU, inference on a GPU) |
ONNX Runtime's own variables (DLZOO_DEVICE, threads, GPU options) are documented in runtime.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


def _env_number(env: Mapping[str, str], name: str, default, minimum, kind: type, noun: str):  # noqa: ANN001, ANN202
    """A number variable (unset or empty: ``default``); a bad value names the variable."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be {noun} >= {minimum}; got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ValueError(f"{name} must be {noun} >= {minimum}; got {value}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int | None, *, minimum: int = 1) -> int | None:
    return _env_number(env, name, default, minimum, int, "an integer")


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    return _env_number(env, name, default, minimum, float, "a number")


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return raw


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 0 or 1 (or true/false); got {raw!r}")


# The hot path and the streams. BentoML's OpenTelemetry middleware makes spans for every request
# even when nothing exports them (sample rate 0), and for a streamed response one more span per
# chunk, i.e. per token: under load ~20% of a front worker's GIL time for /classify, ~24% of the
# front's and ~16% of the Inference service's for 16 generation streams (py-spy; FINDINGS.md).
UNTRACED_PATHS = ("/classify", "/generate_stream", "/generation_channel", "/generate_events")


def default_front_workers() -> int:
    """One HTTP worker per core this process may use, at most 4.

    A worker is one Python process, and under load its event loop, multipart parsing, preprocessing
    and response writing hold the GIL most of the time: on 2 cores one worker served resnet18 at
    ~290 req/s using 1.2 cores, two at ~380-550 (load_tests/FINDINGS.md). More workers than cores only
    add contention. The cap: on a CPU every worker holds its own copy of each classifier session
    (DLZOO_CLASSIFY_IN), so memory grows with workers; set the variable to go beyond it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        # A container's CPU quota (cgroup v1 or v2), which the affinity mask does not show: BentoML
        # reads it for its own "cpu_count" workers. Internal to BentoML, hence the fallback.
        from bentoml._internal.resource import CpuResource

        cores = min(cores, max(1, int(CpuResource.from_system())))
    except Exception:  # noqa: BLE001 - without it, the affinity mask is the best guess
        pass
    return max(1, min(cores, 4))


@dataclass(frozen=True)
class Settings:
    models: Path
    max_upload_bytes: int
    max_pixels: int
    max_batch: int
    max_latency_ms: int
    front_workers: int
    inference_workers: int
    max_streams: int = 64
    channel_seconds: float = 600.0
    classify_in: str = "auto"  # auto | front | inference (see classify_in_front)
    untraced_paths: tuple[str, ...] = UNTRACED_PATHS
    connection_seconds: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        return cls(
            models=Path(env.get("DLZOO_MODELS") or "models"),
            max_upload_bytes=env_int(env, "DLZOO_MAX_UPLOAD_BYTES", 10_000_000),
            max_pixels=env_int(env, "DLZOO_MAX_PIXELS", 40_000_000),
            max_batch=env_int(env, "DLZOO_MAX_BATCH", 64),
            max_latency_ms=env_int(env, "DLZOO_MAX_LATENCY_MS", 10_000),
            front_workers=env_int(env, "DLZOO_FRONT_WORKERS", default_front_workers()),
            inference_workers=env_int(env, "DLZOO_INFERENCE_WORKERS", 1),
            max_streams=env_int(env, "DLZOO_MAX_STREAMS", 64),
            channel_seconds=env_float(env, "DLZOO_CHANNEL_SECONDS", 600.0, minimum=0.1),
            untraced_paths=tuple(p.strip() for p in env.get("DLZOO_UNTRACED_PATHS", ",".join(UNTRACED_PATHS))
                                 .split(",") if p.strip()),
            connection_seconds=env_float(env, "DLZOO_CONNECTION_SECONDS", 2.0, minimum=0.0),
            classify_in=env_choice(env, "DLZOO_CLASSIFY_IN", "auto", ("auto", "front", "inference")),
        )

    def classify_in_front(self, on_gpu: bool) -> bool:
        """Whether the HTTP workers run the classifiers themselves.

        On a CPU the hop from the front to the Inference service cost more than the model: a quick
        resnet18 request took 6.6 ms of CPU with it and 4.5 ms without (load_tests/FINDINGS.md), so
        ``auto`` classifies in the front, batching the requests of each HTTP worker. On a GPU one
        process should own the device and see every request (bigger batches, one copy of each
        session in GPU memory), so ``auto`` leaves classification in the Inference service."""
        if self.classify_in == "auto":
            return not on_gpu
        return self.classify_in == "front"

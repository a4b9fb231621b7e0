"""Service configuration: environment variables with documented defaults, read once at start-up.

``VARIABLES`` is the one list of them (README.md's table is checked against it by a test); the
service reads them all through :meth:`Settings.from_env`, ONNX Runtime's included (``runtime``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.bentoml_compat import cpu_quota
from service.repository import VersionPolicy
from service.runtime import RuntimeConfig, gpu_expected


@dataclass(frozen=True)
class Variable:
    name: str
    default: str  # as the README shows it
    meaning: str


VARIABLES = (
    Variable("DLZOO_MODELS", "`models`", "the model repository"),
    Variable(
        "DLZOO_POLL_SECONDS",
        "`2`",
        "rescan the repository this often (`0`: only at start and on /admin/reload)",
    ),
    Variable(
        "DLZOO_VERSION_POLICY",
        "`latest:2`",
        "versions of each model kept loaded: `latest:N` (N that verified) or `all`",
    ),
    Variable(
        "DLZOO_ADMIN_TOKEN",
        "none",
        "enables `POST /admin/reload` with `Authorization: Bearer <token>`",
    ),
    Variable(
        "DLZOO_API_TOKEN",
        "none",
        "every request but to `DLZOO_OPEN_PATHS` needs `Authorization: Bearer <token>`",
    ),
    Variable("DLZOO_OPEN_PATHS", "`/livez,/readyz,/metrics`", "paths open without the API token"),
    Variable(
        "DLZOO_DEVICE", "`auto`", "`auto`, `cpu` or `cuda` (`cuda` that ends on CPU fails start-up)"
    ),
    Variable(
        "DLZOO_INTRA_OP_THREADS",
        "`1`",
        "ONNX Runtime threads per session (0: one per physical core)",
    ),
    Variable("DLZOO_MAX_UPLOAD_BYTES", "`10000000`", "largest upload (413)"),
    Variable("DLZOO_MAX_PIXELS", "`40000000`", "largest image, checked before decoding (413)"),
    Variable("DLZOO_MAX_BATCH", "`64`", "classification: most items per batch (`1`: no batching)"),
    Variable(
        "DLZOO_MAX_QUEUE",
        "`32`",
        "model requests waiting for an answer per HTTP worker; more are refused at once (503, "
        "`Retry-After`)",
    ),
    Variable(
        "DLZOO_MAX_LATENCY_MS",
        "`1000`",
        "a model request is refused at once (503) while the oldest one waiting in its worker has "
        "waited this long; a classification that waited this long for its batch too",
    ),
    Variable(
        "DLZOO_FRONT_WORKERS",
        "cores, at most 4",
        "HTTP worker processes (a container's CPU quota counts)",
    ),
    Variable(
        "DLZOO_INFERENCE_WORKERS",
        "`1`",
        "Inference processes; only 1: a generation channel lives in the worker that opened it",
    ),
    Variable(
        "DLZOO_CLASSIFY_IN",
        "`auto`",
        "where classifiers run: `front` (each HTTP worker), `inference`, `auto` (front on a CPU, "
        "inference on a GPU)",
    ),
    Variable(
        "DLZOO_CONNECTION_SECONDS",
        "`2`",
        "with several front workers, close a keep-alive connection once this old (`0`: never)",
    ),
    Variable(
        "DLZOO_UNTRACED_PATHS",
        "`/classify,/generate_stream,/generation_channel`",
        "paths OpenTelemetry does not trace (empty: all traced)",
    ),
    Variable(
        "DLZOO_MAX_STREAMS",
        "`64`",
        "generation: most streams of one model sharing a step call (more wait)",
    ),
    Variable(
        "DLZOO_CHANNEL_SECONDS",
        "`600`",
        "a front worker's generation channel takes new generations this long, then is replaced",
    ),
    Variable(
        "DLZOO_DRAIN_SECONDS",
        "`30`",
        "on SIGTERM: how long requests in flight and token streams may take to finish",
    ),
    Variable(
        "DLZOO_CUDA_DEVICE", "`0`", "GPU: the device id, counted within `CUDA_VISIBLE_DEVICES`"
    ),
    Variable("DLZOO_GPU_MEM_LIMIT", "none", "GPU: the CUDA memory arena's limit in bytes"),
    Variable(
        "DLZOO_CUDNN_CONV_ALGO_SEARCH", "`HEURISTIC`", "GPU: `EXHAUSTIVE`, `HEURISTIC` or `DEFAULT`"
    ),
    Variable("DLZOO_TENSORRT", "`0`", "GPU: `1` puts TensorRT (FP16, engine cache) before CUDA"),
    Variable(
        "DLZOO_TRT_CACHE", "`~/.cache/dlzoo/tensorrt`", "GPU: the TensorRT engine cache folder"
    ),
)


def _env_number(env: Mapping[str, str], name: str, default, minimum, kind: type, noun: str):
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


def env_int(
    env: Mapping[str, str], name: str, default: int | None, *, minimum: int = 1
) -> int | None:
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


# The hot path and the streams: BentoML's OpenTelemetry middleware makes a span per request even
# when nothing exports them, and per streamed chunk, i.e. per token (load_tests/FINDINGS.md).
UNTRACED_PATHS = ("/classify", "/generate_stream", "/generation_channel")
OPEN_PATHS = ("/livez", "/readyz", "/metrics")  # what probes and scrapers reach without a token


def _paths(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _policy(raw: str) -> VersionPolicy:
    try:
        return VersionPolicy.parse(raw) if raw.strip() else VersionPolicy()
    except ValueError as exc:
        raise ValueError(f"DLZOO_VERSION_POLICY: {exc}") from None


def default_front_workers() -> int:
    """One HTTP worker per core this process may use (a container's CPU quota counts), at most 4.

    Under load a worker's event loop, multipart parsing and preprocessing hold the GIL most of the
    time, so workers scale with cores and more than cores only contend; on a CPU each worker holds
    its own copy of each classifier session, hence the cap (set the variable to go beyond it)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
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
    runtime: RuntimeConfig = RuntimeConfig()
    poll_seconds: float = 2.0
    version_policy: VersionPolicy = VersionPolicy()
    admin_token: str | None = field(default=None, repr=False)  # never logged
    api_token: str | None = field(default=None, repr=False)
    open_paths: tuple[str, ...] = OPEN_PATHS
    max_queue: int = 32
    drain_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        if env_int(env, "DLZOO_INFERENCE_WORKERS", 1) != 1:
            raise ValueError(
                "DLZOO_INFERENCE_WORKERS must be 1: a front worker's generation channel lives in "
                "the Inference worker that opened it, and BentoML spreads calls over workers; "
                "serve more with DLZOO_FRONT_WORKERS, or more replicas"
            )
        return cls(
            models=Path(env.get("DLZOO_MODELS") or "models"),
            max_upload_bytes=env_int(env, "DLZOO_MAX_UPLOAD_BYTES", 10_000_000),
            max_pixels=env_int(env, "DLZOO_MAX_PIXELS", 40_000_000),
            max_batch=env_int(env, "DLZOO_MAX_BATCH", 64),
            max_latency_ms=env_int(env, "DLZOO_MAX_LATENCY_MS", 1_000),
            max_queue=env_int(env, "DLZOO_MAX_QUEUE", 32),
            drain_seconds=env_float(env, "DLZOO_DRAIN_SECONDS", 30.0),
            front_workers=env_int(env, "DLZOO_FRONT_WORKERS", default_front_workers()),
            inference_workers=1,
            max_streams=env_int(env, "DLZOO_MAX_STREAMS", 64),
            channel_seconds=env_float(env, "DLZOO_CHANNEL_SECONDS", 600.0, minimum=0.1),
            poll_seconds=env_float(env, "DLZOO_POLL_SECONDS", 2.0, minimum=0.0),
            version_policy=_policy(env.get("DLZOO_VERSION_POLICY", "")),
            admin_token=env.get("DLZOO_ADMIN_TOKEN") or None,
            api_token=env.get("DLZOO_API_TOKEN") or None,
            open_paths=_paths(env.get("DLZOO_OPEN_PATHS", ",".join(OPEN_PATHS))),
            untraced_paths=_paths(env.get("DLZOO_UNTRACED_PATHS", ",".join(UNTRACED_PATHS))),
            connection_seconds=env_float(env, "DLZOO_CONNECTION_SECONDS", 2.0, minimum=0.0),
            classify_in=env_choice(
                env, "DLZOO_CLASSIFY_IN", "auto", ("auto", "front", "inference")
            ),
            runtime=RuntimeConfig.from_env(env),
        )

    def tracing(self) -> dict[str, Any]:
        """BentoML service config leaving ``untraced_paths`` out of OpenTelemetry's tracing, matched
        exactly (a BentoML config ``services.<name>.tracing.excluded_urls`` wins)."""
        if not self.untraced_paths:
            return {}
        # OpenTelemetry searches these regular expressions in the request's URL without its query
        return {"tracing": {"excluded_urls": [re.escape(p) + "$" for p in self.untraced_paths]}}

    @property
    def drain_grace(self) -> float:
        """How long a leaving version stays loaded after its last use: two polls, so that every
        process that resolves versions has seen it leave before it goes."""
        return 2 * self.poll_seconds + 1.0

    @property
    def classifiers_in_front(self) -> bool:
        """Where classifiers run, decided once for every process of the service."""
        return self.classify_in_front(gpu_expected(self.runtime))

    def classify_in_front(self, on_gpu: bool) -> bool:
        """Whether the HTTP workers run the classifiers themselves.

        On a CPU the hop to the Inference service costs more CPU than the quick models
        (load_tests/FINDINGS.md), so ``auto`` classifies in each front worker. On a GPU one process
        should own the device and see every request (bigger batches, one copy of each session in
        GPU memory), so ``auto`` leaves classification in the Inference service."""
        if self.classify_in == "auto":
            return not on_gpu
        return self.classify_in == "front"

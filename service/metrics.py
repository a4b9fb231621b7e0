"""The service's Prometheus metrics (BentoML serves them at /metrics with its own)."""

from __future__ import annotations

import bentoml

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

INFERENCE_SECONDS = bentoml.metrics.Histogram(
    name="dlzoo_inference_seconds",
    documentation="ONNX Runtime time per call (one call per model per batch)",
    labelnames=["model", "provider"],
    buckets=_BUCKETS,
)
BATCH_SIZE = bentoml.metrics.Histogram(
    name="dlzoo_batch_size",
    documentation="items per ONNX call",
    labelnames=["model", "provider"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
STAGE_SECONDS = bentoml.metrics.Histogram(
    name="dlzoo_stage_seconds",
    documentation="per-request time by stage: queue, preprocess, inference",
    labelnames=["model", "provider", "stage"],
    buckets=_BUCKETS,
)
GEN_STREAMS = bentoml.metrics.Gauge(
    name="dlzoo_generation_streams",
    documentation="generations in progress (waiting or stepping)",
    labelnames=["model"],
    multiprocess_mode="livesum",
)
GEN_TOKENS = bentoml.metrics.Counter(
    name="dlzoo_generated_tokens", documentation="tokens generated", labelnames=["model"]
)
GEN_ENDED = bentoml.metrics.Counter(
    name="dlzoo_generations",
    documentation="generations ended, by reason (length, stop, error, cancelled)",
    labelnames=["model", "reason"],
)
GEN_CHANNELS = bentoml.metrics.Gauge(
    name="dlzoo_generation_channels",
    documentation="generation channels open (one per front worker, two while one is replaced)",
    multiprocess_mode="livesum",
)
FIRST_TOKEN_SECONDS = bentoml.metrics.Histogram(
    name="dlzoo_time_to_first_token_seconds",
    documentation="from a generation's arrival to its first token",
    labelnames=["model"],
    buckets=_BUCKETS,
)
REFUSED = bentoml.metrics.Counter(
    name="dlzoo_refused_requests",
    documentation="model requests refused at once with 503: DLZOO_MAX_QUEUE were waiting in the "
    "worker (by API; /v2 for V2 inference)",
    labelnames=["path"],
)

LAST_INFERENCE = bentoml.metrics.Gauge(
    name="dlzoo_last_inference_timestamp_seconds",
    documentation="when a model version last ran an ONNX call (epoch seconds)",
    labelnames=["model"],
    multiprocess_mode="max",
)

MODEL_READY = bentoml.metrics.Gauge(
    name="dlzoo_model_ready",
    documentation="1 while a model version serves in a process that runs it, else 0",
    labelnames=["model", "version"],
    multiprocess_mode="livemax",
)
MODEL_LOADS = bentoml.metrics.Counter(
    name="dlzoo_model_loads",
    documentation="model version loads by result (ready, failed), in the processes that run them",
    labelnames=["model", "version", "result"],
)
MODEL_LOAD_SECONDS = bentoml.metrics.Histogram(
    name="dlzoo_model_load_seconds",
    documentation="from reading a version's card to its sessions warmed up",
    labelnames=["model"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


def observe_call(ref: str, provider: str | None, items: int, seconds: float) -> None:
    """One ONNX call of ``items`` rows for model ``ref``."""
    INFERENCE_SECONDS.labels(model=ref, provider=provider).observe(seconds)
    BATCH_SIZE.labels(model=ref, provider=provider).observe(items)
    LAST_INFERENCE.labels(model=ref).set_to_current_time()

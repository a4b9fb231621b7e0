"""The BentoML service: endpoints only; the work lives in catalog, imaging and runtime.

Two services in one ``bentoml serve``:

- ``DLZoo`` (the HTTP front, ``service.app:DLZoo``): validates requests, decodes and preprocesses
  uploads (CPU work that scales with front workers), answers errors as 4xx. On a CPU it also runs
  the classifiers itself (``DLZOO_CLASSIFY_IN``, settings.py says why), batching its own requests.
- ``Inference``: owns the other ONNX Runtime sessions (and the classifiers' on a GPU). Classification
  joins concurrent requests (possibly for different models) into batches (service/batching.py); a
  batch runs one ONNX call per model. Language models generate here, in one shared-step loop per model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from typing import Annotated, Any, AsyncGenerator, AsyncIterator, Literal, get_args

import anyio
import bentoml
import numpy as np
from PIL import Image
from bentoml.validators import ContentType
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError
from starlette.responses import JSONResponse, Response, StreamingResponse

from service import generation as textgen
from service import generative as gen
from service import imaging, uploads
from service import runtime as rt
from service.batching import Batcher, Overloaded
from service.card import Task
from service.catalog import Catalog
from service.classify import classify_items
from service.connections import ConnectionMaxAge
from service.errors import BadRequest, ClientError, PayloadTooLarge, Unprocessable, error_for_status
from service.runtime import RuntimeConfig
from service.settings import Settings

log = logging.getLogger("dlzoo")
SETTINGS = Settings.from_env()
uploads.install()  # multipart without URL fetching, 400 for malformed forms

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
INFERENCE_SECONDS = bentoml.metrics.Histogram(
    name="dlzoo_inference_seconds", documentation="ONNX Runtime time per call (one call per model per batch)",
    labelnames=["model", "provider"], buckets=_BUCKETS)
BATCH_SIZE = bentoml.metrics.Histogram(
    name="dlzoo_batch_size", documentation="items per ONNX call",
    labelnames=["model", "provider"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
STAGE_SECONDS = bentoml.metrics.Histogram(
    name="dlzoo_stage_seconds", documentation="per-request time by stage: queue, preprocess, inference",
    labelnames=["model", "provider", "stage"], buckets=_BUCKETS)
GEN_STREAMS = bentoml.metrics.Gauge(
    name="dlzoo_generation_streams", documentation="generations in progress (waiting or stepping)",
    labelnames=["model"], multiprocess_mode="livesum")
GEN_TOKENS = bentoml.metrics.Counter(
    name="dlzoo_generated_tokens", documentation="tokens generated", labelnames=["model"])
GEN_ENDED = bentoml.metrics.Counter(
    name="dlzoo_generations", documentation="generations ended, by reason (length, stop, error, cancelled)",
    labelnames=["model", "reason"])
GEN_CHANNELS = bentoml.metrics.Gauge(
    name="dlzoo_generation_channels", documentation="generation channels open (one per front worker, two while one is replaced)",
    multiprocess_mode="livesum")
FIRST_TOKEN_SECONDS = bentoml.metrics.Histogram(
    name="dlzoo_time_to_first_token_seconds", documentation="from a generation's arrival to its first token",
    labelnames=["model"], buckets=_BUCKETS)


def _range(kind: type, noun: str, low, high, description: str):  # noqa: ANN001, ANN202
    """A number field limited to low..high (OpenAPI minimum/maximum) whose 400 names the whole range.

    Pydantic's own message names only the bound that failed ("less than or equal to 64"); BentoML
    answers a ValidationError with 400 and ``detail: [{loc: [field], msg}]``.
    """
    def check(value, handler):  # noqa: ANN001, ANN202
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("range", "must be {noun} from {low} to {high}, got {value}",
                                      {"noun": noun, "low": low, "high": high, "value": value}) from None
    return Annotated[kind, Field(ge=low, le=high, description=description), WrapValidator(check)]


def IntRange(low: int, high: int, description: str):  # noqa: ANN201, N802 - a type factory
    return _range(int, "an integer", low, high, description)


def FloatRange(low: float, high: float, description: str):  # noqa: ANN201, N802 - a type factory
    return _range(float, "a number", low, high, description)


StopString = Annotated[str, Field(min_length=1, max_length=textgen.MAX_STOP_CHARS)]


class GenerateRequest(BaseModel):
    """The body of /generate and /generate_stream (one definition for both)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option is a 400, not silently ignored

    model: str = Field("lstm", description="a language model (rnn, lstm, gru), or name@version")
    prompt: str = Field("", max_length=textgen.MAX_PROMPT_CHARS,
                        description="text to continue; characters outside the vocabulary are read as "
                                    "unknown and listed in unknown_chars; empty starts a new paragraph")
    max_new_tokens: IntRange(1, textgen.MAX_NEW_TOKENS, "characters to generate at most") = 200
    temperature: FloatRange(0.0, textgen.MAX_TEMPERATURE, "0 = greedy; higher = more random") = 0.8
    top_k: IntRange(1, 1_000_000, "sample among the k most likely (at most the vocabulary size)") | None = None
    top_p: FloatRange(0.0, 1.0, "sample among the most likely tokens whose probability reaches p") = 1.0
    seed: IntRange(0, textgen.SEED_LIMIT - 1, "fixes the sampling; drawn (and returned) if absent") | None = None
    stop: list[StopString] = Field([], max_length=textgen.MAX_STOP_STRINGS,
                                   description="end where one of these first appears (not included)")


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option is a 400, not silently ignored

    model: str = Field("gan", description="a vae or gan model, or name@version")
    count: IntRange(1, gen.MAX_COUNT, "how many images") = 16
    seed: IntRange(0, gen.SEED_LIMIT - 1, "fixes the latents; drawn (and returned) if absent") | None = None
    format: Literal["png", "json"] = Field("png", description="png grid, or json arrays")
    columns: IntRange(1, gen.MAX_COLUMNS, "grid columns (default: a square grid)") | None = None
    scale: IntRange(1, gen.MAX_SCALE, "nearest-neighbour enlargement") = 1


class InterpolateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("gan", description="a vae or gan model, or name@version")
    seed_from: IntRange(0, gen.SEED_LIMIT - 1, "start: the first latent of this seed (drawn if absent)") | None = None
    seed_to: IntRange(0, gen.SEED_LIMIT - 1, "end (drawn if absent)") | None = None
    steps: IntRange(2, gen.MAX_STEPS, "frames, endpoints included") = 8
    method: Literal["lerp", "slerp"] = Field("slerp", description="straight line, or great circle")
    format: Literal["png", "json"] = Field("png", description="png strip, or json arrays")
    scale: IntRange(1, gen.MAX_SCALE, "nearest-neighbour enlargement") = 1


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("seq2seq", description="a seq2seq model, or name@version")
    text: str = Field(..., min_length=1, max_length=textgen.MAX_TRANSLATE_CHARS,
                      description="the source text (the model's card may allow fewer characters)")
    beam_width: IntRange(1, textgen.MAX_BEAM_WIDTH, "1 = greedy") = 4
    num_return: IntRange(1, textgen.MAX_BEAM_WIDTH, "candidates to return, at most beam_width") | None = None
    max_length: IntRange(1, 1000, "output tokens at most (default: the card's max_target_len)") | None = None


def _line(**fields: Any) -> str:
    """One event between the services: a JSON line, ASCII only, so a chunk boundary never splits a
    character (BentoML's client decodes each network chunk on its own)."""
    return json.dumps(fields, ensure_ascii=True) + "\n"


def _sse(data: dict[str, Any], event: str | None = None) -> str:
    return (f"event: {event}\n" if event else "") + f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _untraced() -> dict[str, Any]:
    """Service config: the paths of DLZOO_UNTRACED_PATHS (settings.py says why) left out of
    OpenTelemetry's tracing, matched exactly. A default only: a BentoML config setting
    ``services.<name>.tracing.excluded_urls`` wins, and DLZOO_UNTRACED_PATHS="" traces everything."""
    if not SETTINGS.untraced_paths:
        return {}
    # OpenTelemetry searches these regular expressions in the request's URL without its query
    return {"tracing": {"excluded_urls": [re.escape(p) + "$" for p in SETTINGS.untraced_paths]}}


class Classifier:
    """Classification over a catalog's classifier sessions, with its metrics: continuous batching
    (service/batching.py: deliberately not BentoML's adaptive batching; the module says why), a
    batch may mix models. The Inference service has one; so does each front worker when it runs the
    classifiers itself (DLZOO_CLASSIFY_IN)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.batcher = Batcher(self._run, max_batch=SETTINGS.max_batch,
                               max_wait=SETTINGS.max_latency_ms / 1e3, name="classify")

    async def classify(self, item: dict[str, Any]) -> dict[str, Any]:
        """item: {model: "name@version", pixels: (C, H, W) float32, top_k, sent: epoch seconds};
        the result, or {error, status} for the caller to raise."""
        try:
            return await self.batcher.submit(item)
        except Overloaded as exc:
            return {"error": f"overloaded: the request {exc} (DLZOO_MAX_LATENCY_MS)", "status": 503}

    def _run(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results, calls = classify_items(self.catalog, items)
        for call in calls:
            INFERENCE_SECONDS.labels(model=call.model, provider=call.provider).observe(call.seconds)
            BATCH_SIZE.labels(model=call.model, provider=call.provider).observe(call.items)
        for r in results:
            if "error" not in r:
                labels = {"model": f"{r['model']}@{r['version']}", "provider": r["provider"]}
                STAGE_SECONDS.labels(stage="queue", **labels).observe(r["timings_ms"]["queue"] / 1e3)
                STAGE_SECONDS.labels(stage="inference", **labels).observe(r["timings_ms"]["inference"] / 1e3)
        return results


@bentoml.service(
    name="dlzoo-inference",
    workers=SETTINGS.inference_workers,
    # BentoML gives its client of this service the same timeout for a whole call, body included,
    # which would end a generation channel after it; calls from the front are still bounded by
    # the front's own 60 s, which cancels them. Channels are replaced long before (DLZOO_CHANNEL_SECONDS).
    traffic={"timeout": 3600},
    # The front keeps one connection pool to this service; BentoML's client recycles it after 100
    # requests or 300 s by default, which fails requests in flight under load.
    runner_connection={"max_requests": 1_000_000_000, "max_age": 1e9},
    # Its callers are the front, whose access log already has a line per request; one more line per
    # internal call cost ~4% of this process's CPU under load (py-spy) and doubled the log.
    logging={"access": {"enabled": False}},
    **_untraced(),
)
class Inference:
    def __init__(self) -> None:
        runtime = RuntimeConfig.from_env()
        # Classifiers run here unless the front runs them (DLZOO_CLASSIFY_IN; Settings.classify_in_front).
        elsewhere = SETTINGS.classify_in_front(rt.gpu_expected(runtime))
        tasks = set(get_args(Task)) - {"classify"} if elsewhere else None
        self.catalog = Catalog(SETTINGS.models, runtime=runtime, tasks=tasks)
        self.classifier = Classifier(self.catalog)
        self.schedulers: dict[str, textgen.StepScheduler] = {}  # model ref -> its shared-step loop
        self.streams: dict[str, tuple[textgen.StepScheduler, textgen.Stream]] = {}  # id -> in progress
        self.channels: dict[str, textgen.Channel] = {}
        self.wants_tokens: dict[str, bool] = {}  # channel streams that only want their end (/generate)

    def __is_ready__(self) -> bool:
        return True  # __init__ has opened and warmed up every session by now

    @bentoml.api
    async def classify(self, item: dict[str, Any]) -> dict[str, Any]:
        """item: {model: "name@version", pixels: (C, H, W) float32, top_k, sent: epoch seconds}."""
        return await self.classifier.classify(item)

    @bentoml.api
    def models(self) -> list[dict[str, Any]]:
        return self.catalog.summary()

    # Generative APIs (service/generative.py): not batchable, a request is already one ONNX call for
    # all its images. They answer raw arrays; the front renders PNG/JSON (CPU work off this process).
    # A client error comes back as {error, status} like classify's, for the front to raise.
    @bentoml.api
    def sample(self, model: str, count: int, seed: int | None = None) -> dict[str, Any]:
        return self._generate(model, gen.GENERATIVE_TASKS, lambda e: gen.sample(e, count, seed))

    @bentoml.api
    def reconstruct(self, model: str, pixels: Any) -> dict[str, Any]:
        """pixels: (N, C, H, W) float32 in [0, 1], preprocessed by the front with the card's recipe."""
        return self._generate(model, ("vae",), lambda e: gen.reconstruct(e, pixels))

    @bentoml.api
    def interpolate(self, model: str, seed_from: int, seed_to: int, steps: int,
                    method: str = "slerp") -> dict[str, Any]:
        return self._generate(model, gen.GENERATIVE_TASKS,
                              lambda e: gen.interpolate(e, seed_from, seed_to, steps, method))

    def _generate(self, model: str, tasks, work) -> dict[str, Any]:  # noqa: ANN001
        try:
            entry = self.catalog.resolve(model, tasks)
        except ClientError as exc:
            return {"error": str(exc), "status": exc.status}
        t0 = time.perf_counter()
        out = work(entry)
        seconds = time.perf_counter() - t0
        INFERENCE_SECONDS.labels(model=entry.ref, provider=entry.provider).observe(seconds)
        return {"model": entry.name, "version": entry.version, "provider": entry.provider,
                "images": out.images, "latents": out.latents, "seeds": out.seeds, "extra": out.extra,
                "inference_ms": round(seconds * 1e3, 3)}

    # --- language models and seq2seq (service/generation.py) -----------------------------------
    # Two ways for the front to follow generations, both fed by the same per-model shared-step loop:
    # - a channel (the default, one Inference worker): the front keeps one long-lived stream from
    #   ``generation_channel`` per front worker and starts generations on it with
    #   ``start_generation``; each step's events for all of the channel's streams go out in one
    #   write. Per token this saves an HTTP write in each service and a pass through BentoML's
    #   middleware stack, which dominated the CPU time per token when each generation had a
    #   stream of its own (measured with py-spy; see BENCHMARKS.md).
    # - ``generate_events``, one stream per generation: with several Inference workers BentoML's
    #   client spreads calls over them, so a generation may land on a worker without the channel.
    # Lines are JSON, ASCII only, so a network chunk boundary never splits a character.

    def _open_stream(self, model: str, prompt: str, max_new_tokens: int, temperature: float,
                     top_k: int | None, top_p: float, seed: int | None, stop: list[str] | None,
                     sink: textgen.Channel | None = None, stream_id: str | None = None) -> textgen.Stream:
        """Resolve the model (ClientError if it cannot generate), make the stream, join its loop."""
        entry = self.catalog.resolve(model, textgen.LM_TASKS)
        scheduler = self.schedulers.get(entry.ref)
        if scheduler is None:
            scheduler = self.schedulers[entry.ref] = textgen.StepScheduler(
                textgen.LanguageModel(entry), max_active=SETTINGS.max_streams, on_step=self._observe_step)
        stream = scheduler.model.stream(prompt, max_new_tokens=max_new_tokens, seed=seed, stop=stop or (),
                                        sampling=textgen.Sampling(temperature, top_k, top_p))
        if stream_id is not None:
            stream.id = stream_id
        if sink is not None:
            stream.sink = sink
            sink.streams[stream.id] = stream
        self.streams[stream.id] = (scheduler, stream)
        GEN_STREAMS.labels(model=entry.ref).inc()
        scheduler.submit(stream)
        return stream

    def _start_info(self, stream: textgen.Stream) -> dict[str, Any]:
        entry = self.streams[stream.id][0].model.entry
        return {"event": "start", "id": stream.id, "model": entry.name, "version": entry.version,
                "provider": entry.provider, "seed": stream.seed, "prompt_tokens": len(stream.prompt),
                "unknown_chars": stream.unknown_chars}

    def _event_lines(self, stream: textgen.Stream, event: textgen.Event, tokens: bool) -> list[str]:
        """A stream's event as lines: a token (if ``tokens``), then done or error at its end."""
        lines = []
        if event.index == 1 and stream.first_token is not None and stream.id in self.streams:
            ref = self.streams[stream.id][0].model.entry.ref
            FIRST_TOKEN_SECONDS.labels(model=ref).observe(stream.first_token - stream.created)
        if tokens and event.error is None and (event.text or event.finish_reason is None):
            lines.append(_line(event="token", id=stream.id, text=event.text, index=event.index))
        if event.error is not None:
            lines.append(_line(event="error", id=stream.id, status=500, detail=event.error))
        elif event.finish_reason is not None:
            done = {"finish_reason": event.finish_reason, "tokens": len(stream.tokens),
                    "timings_ms": stream.timings_ms()}
            if not tokens:
                done["text"] = stream.text
            lines.append(_line(event="done", id=stream.id, **done))
        if event.finish_reason is not None:
            self._ended(stream)
        return lines

    def _ended(self, stream: textgen.Stream) -> None:
        scheduler, _ = self.streams.pop(stream.id, (None, None))
        self.wants_tokens.pop(stream.id, None)
        if scheduler is None:
            return  # counted already
        if not stream.done:
            scheduler.cancel(stream)
        ref = scheduler.model.entry.ref
        GEN_STREAMS.labels(model=ref).dec()
        GEN_TOKENS.labels(model=ref).inc(len(stream.tokens))
        GEN_ENDED.labels(model=ref, reason=stream.finish_reason or "cancelled").inc()

    @bentoml.api
    async def generation_channel(self) -> AsyncGenerator[str, None]:
        """A long-lived stream of JSON lines for many generations: ``channel`` (its id) first, then
        each step's events of all generations started on it, tagged with their ids; a ``ping`` after
        10 s without events. Closing it cancels its unfinished generations."""
        channel = textgen.Channel()
        self.channels[channel.id] = channel
        GEN_CHANNELS.inc()
        try:
            yield _line(event="channel", id=channel.id)
            async for items in channel.batches(idle=10.0):
                lines = [line for stream, event in items
                         for line in self._event_lines(stream, event, self.wants_tokens.get(stream.id, True))]
                yield "".join(lines) or _line(event="ping")
        finally:
            GEN_CHANNELS.dec()
            self.channels.pop(channel.id, None)
            for stream in list(channel.streams.values()):
                self._ended(stream)

    @bentoml.api
    async def close_channel(self, channel: str) -> bool:
        """End a channel's stream (the front retires it); its unfinished generations are cancelled.
        Closing the stream from the front's side does not reach here (see cancel_generation)."""
        sink = self.channels.get(channel)
        if sink is not None:
            sink.close()
        return sink is not None

    @bentoml.api
    async def start_generation(self, channel: str, stream_id: str, model: str, prompt: str,
                               max_new_tokens: int, temperature: float, top_k: int | None = None,
                               top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None,
                               tokens: bool = True) -> dict[str, Any]:
        """Start a generation whose events go to ``channel`` under ``stream_id`` (chosen by the
        caller, so that it can listen before the first event can arrive). Answers the start
        event, or {error, status}."""
        sink = self.channels.get(channel)
        if sink is None:
            return {"error": "generation channel unknown to this inference worker", "status": 503}
        if not tokens:
            self.wants_tokens[stream_id] = False
        try:
            stream = self._open_stream(model, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop,
                                       sink=sink, stream_id=stream_id)
        except ClientError as exc:
            self.wants_tokens.pop(stream_id, None)
            return {"error": str(exc), "status": exc.status}
        return self._start_info(stream)

    @bentoml.api
    async def generate_events(self, model: str, prompt: str, max_new_tokens: int, temperature: float,
                              top_k: int | None = None, top_p: float = 1.0, seed: int | None = None,
                              stop: list[str] | None = None, tokens: bool = True) -> AsyncGenerator[str, None]:
        """One generation as JSON lines: ``start``; a ``token`` per token (if ``tokens``); ``done``
        (with the whole text unless ``tokens``) or ``error``."""
        try:
            stream = self._open_stream(model, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop)
        except ClientError as exc:
            yield _line(event="error", status=exc.status, detail=str(exc))
            return
        scheduler = self.streams[stream.id][0]
        try:
            yield _line(**self._start_info(stream))
            async for events in scheduler.events(stream):
                lines = [line for event in events for line in self._event_lines(stream, event, tokens)]
                if lines:
                    yield "".join(lines)  # one write for everything that piled up
        finally:
            self._ended(stream)

    @bentoml.api
    async def cancel_generation(self, stream_id: str) -> bool:
        """Stop a generation whose client has gone (the front calls this); False if already over.

        Closing a generation's own stream is not enough: BentoML's client leaves the connection
        to this service open after its reader is closed, so the generation would run to its end."""
        scheduler, stream = self.streams.get(stream_id, (None, None))
        return scheduler is not None and scheduler.cancel(stream)

    def _observe_step(self, entry, items: int, seconds: float) -> None:  # noqa: ANN001
        INFERENCE_SECONDS.labels(model=entry.ref, provider=entry.provider).observe(seconds)
        BATCH_SIZE.labels(model=entry.ref, provider=entry.provider).observe(items)

    @bentoml.api
    def translate(self, model: str, text: str, beam_width: int, num_return: int,
                  max_length: int | None = None) -> dict[str, Any]:
        """Greedy or beam-search decoding of one text; {error, status} for a client error."""
        try:
            entry = self.catalog.resolve(model, textgen.SEQ2SEQ_TASKS)
            translator = textgen.Translator(entry)
            t0 = time.perf_counter()
            out = translator.translate(text, beam_width=beam_width, num_return=num_return,
                                       max_length=max_length)
        except ClientError as exc:
            return {"error": str(exc), "status": exc.status}
        except textgen.TextTooLong as exc:
            return {"error": str(exc), "status": 400}
        seconds = time.perf_counter() - t0
        INFERENCE_SECONDS.labels(model=entry.ref, provider=entry.provider).observe(seconds)
        return {"model": entry.name, "version": entry.version, "provider": entry.provider, **out,
                "timings_ms": {"total": round(seconds * 1e3, 3)}}


async def _json_lines(chunks: AsyncIterator[str]) -> AsyncIterator[list[dict[str, Any]]]:
    """The complete JSON lines in each chunk of a stream, as lists (a line may span chunks)."""
    buffer = ""
    async for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split("\n")
        events = [json.loads(line) for line in complete if line]
        if events:
            yield events


async def _prepend(first: list, rest: AsyncIterator) -> AsyncIterator:
    try:
        if first:
            yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()


class Relay:
    """The front's end of a generation channel: reads Inference's ``generation_channel`` in a
    background task and hands each generation its events (in lists, as they arrived)."""

    MAX_AGE = SETTINGS.channel_seconds  # then new generations start on a new channel

    def __init__(self) -> None:
        self.id: str | None = None
        self.closed = False
        self.retiring = False  # takes no new generations; closes after its last one
        self.opened = time.monotonic()
        self.queues: dict[str, asyncio.Queue] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closer: asyncio.Task | None = None
        self._inference = None  # BentoML's client of the Inference service

    def retire(self) -> None:
        self.retiring = True
        if not self.queues:
            self.close()

    def close(self) -> None:
        """End the channel (Inference cancels any generation still on it); the reader ends when
        Inference ends the stream."""
        self.retiring = True
        if self.id is not None and self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(
                self._inference.to_async.close_channel(channel=self.id), name="dlzoo-relay-close")

    @classmethod
    async def open(cls, inference) -> Relay:  # noqa: ANN001 - BentoML's client of the Inference service
        relay = cls()
        relay._inference = inference
        relay._task = asyncio.get_running_loop().create_task(relay._read(inference), name="dlzoo-relay")
        with anyio.move_on_after(30):
            await relay._ready.wait()
        if relay.id is None:
            relay.closed = True
            relay._task.cancel()
            raise error_for_status(503, "could not open a generation channel to the inference service")
        return relay

    def listen(self, stream_id: str) -> asyncio.Queue:
        self.queues[stream_id] = queue = asyncio.Queue()
        return queue

    def forget(self, stream_id: str) -> None:
        self.queues.pop(stream_id, None)
        if self.retiring and not self.queues:
            self.close()

    async def events(self, stream_id: str, queue: asyncio.Queue) -> AsyncIterator[list[dict[str, Any]]]:
        try:
            while True:
                events = await queue.get()
                while not queue.empty():
                    events = events + queue.get_nowait()
                yield events
        finally:
            self.forget(stream_id)

    async def _read(self, inference) -> None:  # noqa: ANN001
        lines = inference.to_async.generation_channel()
        try:
            async for events in _json_lines(lines):
                mine: dict[str, list[dict[str, Any]]] = {}
                for event in events:
                    if event["event"] == "channel":
                        self.id = event["id"]
                        self._ready.set()
                    elif event["event"] != "ping":
                        mine.setdefault(event.pop("id"), []).append(event)
                for stream_id, group in mine.items():
                    queue = self.queues.get(stream_id)
                    if queue is not None:  # else its client has gone
                        queue.put_nowait(group)
        except Exception:  # noqa: BLE001 - logged; every generation on the channel is told below
            log.exception("generation channel %s lost", self.id)
        finally:
            self.closed = True
            self._ready.set()
            for queue in self.queues.values():
                queue.put_nowait([{"event": "error", "status": 502,
                                   "detail": "lost the channel to the inference service; try again"}])
            with anyio.CancelScope(shield=True):
                await lines.aclose()


@bentoml.service(
    name="dlzoo", workers=SETTINGS.front_workers, traffic={"timeout": 60},
    **_untraced(),
)
class DLZoo:
    inference = bentoml.depends(Inference)

    def __init__(self) -> None:
        # This process validates and preprocesses; the Inference service runs the graphs, except
        # the classifiers when this process runs them itself (DLZOO_CLASSIFY_IN: on a CPU by default).
        runtime = RuntimeConfig.from_env()
        self.classifier: Classifier | None = None
        if SETTINGS.classify_in_front(rt.gpu_expected(runtime)):
            self.catalog = Catalog(SETTINGS.models, runtime=runtime, tasks=["classify"])
            self.classifier = Classifier(self.catalog)
        else:
            self.catalog = Catalog(SETTINGS.models, runtime=None)  # cards and checksums only
        self._relay_channel: Relay | None = None
        self._relay_lock = asyncio.Lock()

    def __is_ready__(self) -> bool:
        return True  # /readyz also waits for the Inference service

    @bentoml.api(route="/models")
    async def models(self) -> list[dict[str, Any]]:
        """Every model version: card summary, status (and the reason if it failed), provider."""
        listing = await self.inference.to_async.models()
        if self.classifier is None:
            return listing
        # The classifiers' sessions (status, provider) are this process's, not the Inference service's.
        mine = {(e.name, e.version): e.summary() for e in self.catalog.entries
                if e.card is not None and e.card.task == "classify"}
        return [mine.get((m["name"], m["version"]), m) for m in listing]

    @bentoml.api(route="/classify")
    async def classify(
        self,
        image: Annotated[uploads.Upload, Field(description="the image file (PNG, JPEG, BMP, GIF, WebP, TIFF)")],
        model: Annotated[str, Field(description="classifier name, or name@version")] = "lenet5",
        top_k: Annotated[int, Field(description="how many classes to return, 1..number of classes")] = 5,
    ) -> dict[str, Any]:
        """Classify one uploaded image (multipart/form-data)."""
        entry = self.catalog.resolve(model, ["classify"])
        card = entry.card
        n = len(card.labels)
        if not 1 <= top_k <= n:
            raise BadRequest(f"top_k: must be between 1 and {n} for {entry.name}, got {top_k}")
        t0 = time.perf_counter()
        pixels = await anyio.to_thread.run_sync(self._prepare, image, card.preprocess)
        preprocess = time.perf_counter() - t0
        item = {"model": entry.ref, "pixels": pixels, "top_k": top_k, "sent": time.time()}
        if self.classifier is not None:
            result = await self.classifier.classify(item)
        else:
            result = await self.inference.to_async.classify(item=item)
        if "error" in result:
            raise error_for_status(result["status"], result["error"])
        STAGE_SECONDS.labels(model=entry.ref, provider=result["provider"], stage="preprocess").observe(preprocess)
        result["timings_ms"]["preprocess"] = round(preprocess * 1e3, 3)
        return result

    # --- generative models -------------------------------------------------------------------
    # The front validates (fields by pydantic, model and task from the cards), relays to Inference,
    # which runs the graphs, and renders the answer here. PNG answers are starlette Responses built
    # from our own bytes (image/png, seeds in headers): BentoML 1.4 passes a Response through
    # unchanged (_bentoml_impl/server/app.py), while a returned PIL image would be re-encoded.

    @bentoml.api(route="/sample", input_spec=SampleRequest)
    async def sample(self, **request: Any) -> Image.Image:
        """Images from the prior: a PNG grid (seed in the X-Seed header), or {images, latents, seed}."""
        r = SampleRequest.model_construct(**request)
        entry = self.catalog.resolve(r.model, gen.GENERATIVE_TASKS)
        out = await self._generated(self.inference.to_async.sample(model=entry.ref, count=r.count, seed=r.seed))
        if r.format == "json":
            return JSONResponse({**self._meta(out), "seed": out["seeds"]["seed"],
                                 "images": gen.to_lists(out["images"]), "latents": out["latents"].tolist()})
        return await self._png(out, r.columns, r.scale)

    @bentoml.api(route="/reconstruct")
    async def reconstruct(
        self,
        image: Annotated[uploads.Upload, Field(description="the image file (PNG, JPEG, BMP, GIF, WebP, TIFF)")],
        model: Annotated[str, Field(description="a vae model, or name@version")] = "vae",
        format: Annotated[Literal["png", "json"], Field(description="png: input beside reconstruction; "
                                                                     "json: latent stats and arrays")] = "png",
        scale: IntRange(1, gen.MAX_SCALE, "nearest-neighbour enlargement") = 1,
    ) -> Image.Image:
        """A VAE's view of an upload (multipart/form-data) beside its reconstruction from the posterior mean."""
        entry = self.catalog.resolve(model, ["vae"])
        if entry.card.preprocess is None:
            raise Unprocessable(f"model: {entry.ref} has no preprocess in its card, so it cannot take uploads")
        pixels = await anyio.to_thread.run_sync(self._prepare, image, entry.card.preprocess)
        out = await self._generated(self.inference.to_async.reconstruct(model=entry.ref, pixels=pixels[None]))
        if format == "json":
            extra = out["extra"]
            return JSONResponse({**self._meta(out), "mean": extra["mean"][0].tolist(),
                                 "logvar": extra["logvar"][0].tolist(),
                                 "reconstruction_error": {"mse": float(extra["mse"][0])},
                                 "input": gen.to_lists(pixels[None])[0],
                                 "reconstruction": gen.to_lists(out["images"])[0]})
        out["images"] = np.concatenate([pixels[None], out["images"]])  # input, reconstruction
        return await self._png(out, 2, scale)

    @bentoml.api(route="/interpolate", input_spec=InterpolateRequest)
    async def interpolate(self, **request: Any) -> Image.Image:
        """Decoded points on the path between two seeds' latents: a PNG strip (seeds in headers)."""
        r = InterpolateRequest.model_construct(**request)
        entry = self.catalog.resolve(r.model, gen.GENERATIVE_TASKS)
        seed_from = gen.draw_seed() if r.seed_from is None else r.seed_from
        seed_to = gen.draw_seed() if r.seed_to is None else r.seed_to
        out = await self._generated(self.inference.to_async.interpolate(
            model=entry.ref, seed_from=seed_from, seed_to=seed_to, steps=r.steps, method=r.method))
        if r.format == "json":
            return JSONResponse({**self._meta(out), **out["seeds"], "method": r.method,
                                 "images": gen.to_lists(out["images"]), "latents": out["latents"].tolist()})
        return await self._png(out, r.steps, r.scale)

    # --- language models and seq2seq -----------------------------------------------------------
    # The front validates (pydantic for fields, the cards for model, task and vocabulary size) and
    # relays to Inference, whose shared-step loop generates. Inference answers JSON lines; the front
    # turns them into the response: one JSON object, or Server-Sent Events.

    @bentoml.api(route="/generate", input_spec=GenerateRequest)
    async def generate(self, **request: Any) -> dict[str, Any]:
        """Continue a prompt with a character language model: {text, tokens, finish_reason, ...}."""
        start, events, close = await self._generation(request, tokens=False)
        try:
            async for chunk in events:
                for event in chunk:
                    if event["event"] == "error":
                        raise error_for_status(event["status"], event["detail"])
                    if event["event"] == "done":
                        return {**{k: start[k] for k in ("model", "version", "provider", "seed", "unknown_chars")},
                                "text": event["text"], "tokens": event["tokens"],
                                "finish_reason": event["finish_reason"], "timings_ms": event["timings_ms"]}
        finally:
            await close()
        raise error_for_status(502, "the inference service ended the generation without an answer")

    @bentoml.api(route="/generate_stream", input_spec=GenerateRequest)
    async def generate_stream(self, **request: Any) -> Annotated[str, ContentType("text/event-stream")]:
        """The same generation as Server-Sent Events: ``event: start`` (model, seed, unknown_chars),
        one ``data: {text, index}`` per token as soon as it exists, then ``event: done``
        (finish_reason, tokens, timings_ms) or ``event: error`` (status, detail). Request errors
        are answered with a 4xx before the stream starts."""
        start, events, close = await self._generation(request, tokens=True)

        async def sse() -> AsyncIterator[str]:
            finished = False
            try:
                yield _sse({k: v for k, v in start.items() if k not in ("event", "id")}, "start")
                async for chunk in events:
                    out = []
                    for event in chunk:
                        kind = event.pop("event")
                        event.pop("id", None)
                        if kind != "token":
                            finished = True
                            out.append(_sse(event, kind))
                        elif event["text"]:
                            out.append(_sse(event))
                    yield "".join(out)  # one write for the tokens that arrived together
                if not finished:
                    yield _sse({"status": 502, "detail": "the inference service ended the stream early"}, "error")
            except Exception:  # noqa: BLE001 - after the first byte the status is sent: say it in the stream
                log.exception("generation stream failed")
                yield _sse({"status": 500, "detail": "generation failed; see the server log"}, "error")
            finally:
                # A client gone: starlette cancels this task; the shield lets the clean-up finish.
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await close()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Seed": str(start["seed"]),
                   "X-Model": f"{start['model']}@{start['version']}"}
        return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)

    async def _generation(self, request: dict[str, Any], tokens: bool):  # noqa: ANN202
        """Start a generation: (start event, lists of its later events up to done/error, close).

        ``close()`` cancels the generation if it has not ended (a client gone). Request errors
        raise their 4xx here, before any answer has begun."""
        entry = self.catalog.resolve(request["model"], textgen.LM_TASKS)
        vocab = len(entry.card.vocab.tokens)
        if request["top_k"] is not None and request["top_k"] > vocab:
            raise BadRequest(f"top_k: must be an integer from 1 to {vocab} (the vocabulary of {entry.ref}), "
                             f"got {request['top_k']}")
        request = {**request, "model": entry.ref, "tokens": tokens}
        if SETTINGS.inference_workers == 1:
            relay = await self._relay()
            stream_id = secrets.token_hex(8)
            queue = relay.listen(stream_id)
            try:
                start = await self.inference.to_async.start_generation(channel=relay.id, stream_id=stream_id,
                                                                       **request)
                if "error" in start:
                    raise error_for_status(start["status"], start["error"])
            except BaseException:
                relay.forget(stream_id)
                raise
            events = relay.events(stream_id, queue)
        else:
            events = self._own_stream(request)
            first, *rest = await anext(events)
            if first["event"] == "error":
                await events.aclose()
                raise error_for_status(first["status"], first["detail"])
            start, events = first, _prepend(rest, events)
        ended = False

        async def until_end() -> AsyncIterator[list[dict[str, Any]]]:
            nonlocal ended
            async for chunk in events:
                ended = any(e["event"] in ("done", "error") for e in chunk)
                yield chunk
                if ended:
                    return

        async def close() -> None:
            await events.aclose()
            if not ended:
                await self.inference.to_async.cancel_generation(stream_id=start["id"])

        return start, until_end(), close

    async def _relay(self) -> Relay:
        """This worker's generation channel to Inference, opened on first use and after a loss."""
        async with self._relay_lock:
            relay = self._relay_channel
            if relay is not None and not relay.closed and time.monotonic() - relay.opened > Relay.MAX_AGE:
                relay.retire()  # the generations on it finish there
            if relay is None or relay.closed or relay.retiring:
                self._relay_channel = relay = await Relay.open(self.inference)
            return relay

    async def _own_stream(self, request: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        """A generation on a stream of its own (several Inference workers): its JSON lines, in lists."""
        lines = self.inference.to_async.generate_events(**request)
        try:
            async for events in _json_lines(lines):
                yield events
        finally:
            await lines.aclose()

    @bentoml.api(route="/translate", input_spec=TranslateRequest)
    async def translate(self, **request: Any) -> dict[str, Any]:
        """Seq2seq (date normalization): {output, score, candidates: [{text, log_prob, complete}]}.

        ``beam_width`` 1 is greedy decoding; wider beams return candidates best first (complete
        ones, ending in end-of-sequence, before cut-off ones), and the best is never worse than
        greedy's. Characters outside the vocabulary are read as unknown and listed."""
        entry = self.catalog.resolve(request["model"], textgen.SEQ2SEQ_TASKS)
        beam_width = request["beam_width"]
        num_return = beam_width if request["num_return"] is None else request["num_return"]
        if num_return > beam_width:
            raise BadRequest(f"num_return: must be an integer from 1 to beam_width ({beam_width}), got {num_return}")
        limit = int(entry.card.training.get("max_source_len", textgen.MAX_TRANSLATE_CHARS))
        if len(request["text"]) > limit:
            raise BadRequest(f"text: must be 1 to {limit} characters for {entry.ref} (its card's "
                             f"max_source_len), got {len(request['text'])}")
        out = await self.inference.to_async.translate(model=entry.ref, text=request["text"],
                                                       beam_width=beam_width, num_return=num_return,
                                                       max_length=request["max_length"])
        if "error" in out:
            raise error_for_status(out["status"], out["error"])
        return out

    @staticmethod
    async def _generated(call) -> dict[str, Any]:  # noqa: ANN001
        out = await call
        if "error" in out:
            raise error_for_status(out["status"], out["error"])
        return out

    @staticmethod
    def _meta(out: dict[str, Any]) -> dict[str, Any]:
        return {"model": out["model"], "version": out["version"], "provider": out["provider"]}

    @staticmethod
    async def _png(out: dict[str, Any], columns: int | None, scale: int) -> Response:
        data = await anyio.to_thread.run_sync(gen.to_png, out["images"], columns, scale)
        headers = {f"X-{k.replace('_', '-').title()}": str(v) for k, v in out["seeds"].items()}
        headers["X-Model"] = f"{out['model']}@{out['version']}"
        return Response(data, media_type="image/png", headers=headers)

    @staticmethod
    def _prepare(upload: uploads.Upload, preprocess) -> np.ndarray:
        size = len(upload.data)
        if size > SETTINGS.max_upload_bytes:
            raise PayloadTooLarge(f"image: {size} bytes is over the limit of "
                                  f"{SETTINGS.max_upload_bytes} bytes (DLZOO_MAX_UPLOAD_BYTES)")
        return imaging.preprocess_upload(upload.data, preprocess, max_bytes=SETTINGS.max_upload_bytes,
                                         max_pixels=SETTINGS.max_pixels)


def _fix_media_types(service) -> None:  # noqa: ANN001 - a BentoML service class
    """Work out each API's response media type once.

    BentoML 1.4 derives the media type of a response from the output's JSON schema, building a new
    pydantic TypeAdapter for it on every response (``IOMixin.mime_type``, called by
    ``to_http_response``): ~20% of the Inference process's CPU and ~7% of the front's under load
    (py-spy, resnet18 at 32 clients). The answer depends on the type alone, so it is computed here
    once and stored where BentoML looks first (``media_type``)."""
    for method in service.apis.values():
        spec = method.output_spec
        if spec.media_type is None:
            spec.media_type = spec.mime_type()


_fix_media_types(Inference)
_fix_media_types(DLZoo)

# Refuse oversized bodies before reading them (the form fields add a little to the file's size).
DLZoo.add_asgi_middleware(uploads.BodyLimit, limit=SETTINGS.max_upload_bytes + 64 * 1024)


class GetAsPost:
    """ASGI middleware: ``GET /models`` is answered as ``POST /models`` with an empty JSON body.

    BentoML routes every API as POST; listing models is a read and should be a GET (the design's
    one exception), so the request is rewritten before BentoML's router sees it.
    """

    def __init__(self, app, paths: tuple[str, ...]):  # noqa: ANN001
        self.app, self.paths = app, paths

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in self.paths:
            scope = {**scope, "method": "POST", "headers": [
                *[(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")],
                (b"content-type", b"application/json"), (b"content-length", b"2")]}
            sent = False

            async def receive_empty():  # noqa: ANN202
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": b"{}", "more_body": False}
                return await receive()

            return await self.app(scope, receive_empty, send)
        return await self.app(scope, receive, send)


DLZoo.add_asgi_middleware(GetAsPost, paths=("/models",))
if SETTINGS.front_workers > 1:  # with one worker there is nowhere else for a connection to go
    DLZoo.add_asgi_middleware(ConnectionMaxAge, max_age=SETTINGS.connection_seconds)

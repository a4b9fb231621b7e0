"""The generation channel between the services, both ends.

Each front worker keeps one long-lived stream (a channel) from the Inference service and starts
generations on it; every step's events for all of the channel's generations cross in one write, as
JSON lines tagged with the generation's id. Per token this saves an HTTP write in each service and a
pass through BentoML's middleware stack, which one stream per generation would cost.

- Inference side: :class:`Channel` (one channel's queue of events) and :class:`StreamHub` (the
  shared-step loops of service/sequence.py, the generations in progress, the channels).
- Front side: :class:`ChannelReader` (reads one channel, hands each generation its events) and
  :class:`StreamClient` (this worker's channel, replaced every ``channel_seconds``).

Lines are JSON, ASCII only, so a network chunk boundary never splits a character (BentoML's client
decodes each chunk on its own). One Inference worker: a channel lives in the worker that opened
it, and BentoML's client would spread calls over several (Settings refuses more).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import anyio

from service import sequence
from service.errors import ClientError, Failure, ServiceUnavailableError, error_for_status, unwrap
from service.metrics import (
    FIRST_TOKEN_SECONDS,
    GEN_CHANNELS,
    GEN_ENDED,
    GEN_STREAMS,
    GEN_TOKENS,
    observe_call,
)
from service.repository import Catalog, Entry
from service.sampling import Sampling

log = logging.getLogger("dlzoo.streams")
IDLE_SECONDS = 10.0  # a channel with no events sends a ping this often, so it never times out


def line(**fields: Any) -> str:
    return json.dumps(fields, ensure_ascii=True) + "\n"


async def json_lines(chunks: AsyncIterator[str]) -> AsyncIterator[list[dict[str, Any]]]:
    """The complete JSON lines in each chunk of a stream, as lists (a line may span chunks)."""
    buffer = ""
    async for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split("\n")
        events = [json.loads(text) for text in complete if text]
        if events:
            yield events


# --- the Inference side -------------------------------------------------------------------------


class Channel:
    """One channel's events for many streams: the scheduler puts each step's events for all of
    this channel's streams at once, and the reader takes whatever has piled up in one go."""

    def __init__(self) -> None:
        self.id = secrets.token_hex(8)
        self.queue: asyncio.Queue[list[tuple[sequence.Stream, sequence.Event]] | None] = (
            asyncio.Queue()
        )
        self.streams: dict[str, sequence.Stream] = {}  # the unfinished streams delivering here

    def put(self, items: list[tuple[sequence.Stream, sequence.Event]]) -> None:
        self.queue.put_nowait(items)

    def close(self) -> None:
        """End :meth:`batches` once what was delivered before has been read."""
        self.queue.put_nowait(None)

    async def batches(
        self, idle: float
    ) -> AsyncIterator[list[tuple[sequence.Stream, sequence.Event]]]:
        """Everything delivered since the last batch; an empty batch after ``idle`` seconds
        without events (a heartbeat that keeps an idle line from timing out)."""
        while True:
            try:
                items = await asyncio.wait_for(self.queue.get(), idle)
            except TimeoutError:
                yield []
                continue
            closed = items is None
            items = items or []
            while not self.queue.empty():
                more = self.queue.get_nowait()
                closed = closed or more is None
                items = items + (more or [])
            for stream, event in items:
                if event.finish_reason is not None:
                    self.streams.pop(stream.id, None)
            if items:
                yield items
            if closed:
                return


@dataclass(frozen=True)
class GenerationRequest:
    """A generation as the front hands it over: the model already resolved to ``name@version``."""

    model: str
    prompt: str
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float
    seed: int | None
    stop: list[str]
    tokens: bool  # False: only the end, with the whole text (/generate)
    alternatives: int = 0  # with each token, this many most likely characters (0: none)


class StreamHub:
    """The Inference service's generations: one shared-step loop per model, the streams in
    progress and the channels they go out on."""

    def __init__(self, catalog: Catalog, max_streams: int) -> None:
        self.catalog = catalog
        self.max_streams = max_streams
        self.schedulers: dict[Entry, sequence.StepScheduler] = {}  # a version's loop
        self.streams: dict[str, tuple[sequence.StepScheduler, sequence.Stream]] = {}
        self.held: dict[str, Entry] = {}  # stream id -> the version it runs on, held until it ends
        self.channels: dict[str, Channel] = {}
        self.quiet: set[str] = set()  # streams that only want their end

    async def channel_lines(self) -> AsyncIterator[str]:
        """A channel: its id first, then each step's events as JSON lines; a ping after
        ``IDLE_SECONDS`` without events. Closing it cancels its unfinished generations."""
        channel = Channel()
        self.channels[channel.id] = channel
        GEN_CHANNELS.inc()
        try:
            yield line(event="channel", id=channel.id)
            async for items in channel.batches(idle=IDLE_SECONDS):
                lines = [text for stream, event in items for text in self._lines(stream, event)]
                yield "".join(lines) or line(event="ping")
        finally:
            GEN_CHANNELS.dec()
            self.channels.pop(channel.id, None)
            for stream in list(channel.streams.values()):
                self._ended(stream)

    def close_channel(self, channel_id: str) -> bool:
        channel = self.channels.get(channel_id)
        if channel is not None:
            channel.close()
        return channel is not None

    def start(self, channel_id: str, stream_id: str, request: GenerationRequest) -> dict[str, Any]:
        """Start a generation whose events go to the channel under ``stream_id`` (chosen by the
        front, so that it listens before the first event can arrive): the start event, or a
        failure answer."""
        channel = self.channels.get(channel_id)
        if channel is None:
            return Failure(503, "generation channel unknown to this inference worker").answer()
        try:
            entry = self.catalog.loaded(request.model)
        except (ClientError, ServiceUnavailableError) as exc:
            return Failure.of(exc).answer()
        scheduler = self.schedulers.get(entry)
        if scheduler is None:
            scheduler = self.schedulers[entry] = sequence.StepScheduler(
                sequence.LanguageModel(entry), max_active=self.max_streams, on_step=self._observe
            )
        stream = scheduler.model.stream(
            request.prompt,
            max_new_tokens=request.max_new_tokens,
            seed=request.seed,
            stop=request.stop,
            sampling=Sampling(request.temperature, request.top_k, request.top_p),
            alternatives=request.alternatives,
        )
        stream.id, stream.sink = stream_id, channel
        self.catalog.acquire(entry)  # a stream ends on the version it began on
        self.held[stream.id] = entry
        channel.streams[stream.id] = stream
        self.streams[stream.id] = (scheduler, stream)
        if not request.tokens:
            self.quiet.add(stream.id)
        GEN_STREAMS.labels(model=entry.ref).inc()
        scheduler.submit(stream)
        return {
            "event": "start",
            "id": stream.id,
            "model": entry.name,
            "version": entry.version,
            "provider": entry.provider,
            "seed": stream.seed,
            "prompt_tokens": len(stream.prompt),
            "unknown_chars": stream.unknown_chars,
        }

    def forget_freed(self) -> None:
        """Close the loops of versions whose sessions were freed (their last stream has ended)."""
        for entry, scheduler in list(self.schedulers.items()):
            if not entry.sessions and scheduler.idle:
                scheduler.close()
                del self.schedulers[entry]

    def cancel(self, stream_id: str) -> bool:
        scheduler, stream = self.streams.get(stream_id, (None, None))
        return scheduler is not None and scheduler.cancel(stream)

    def _lines(self, stream: sequence.Stream, event: sequence.Event) -> list[str]:
        """A stream's event as lines: a token (unless it only wants its end), then done or error."""
        lines = []
        if event.index == 1 and stream.first_token is not None and stream.id in self.streams:
            ref = self.streams[stream.id][0].model.entry.ref
            FIRST_TOKEN_SECONDS.labels(model=ref).observe(stream.first_token - stream.created)
        tokens = stream.id not in self.quiet
        if tokens and event.error is None and (event.text or event.finish_reason is None):
            extra = {} if event.alternatives is None else {"alternatives": event.alternatives}
            lines.append(
                line(event="token", id=stream.id, text=event.text, index=event.index, **extra)
            )
        if event.error is not None:
            lines.append(line(event="error", id=stream.id, status=500, detail=event.error))
        elif event.finish_reason is not None:
            done = {
                "finish_reason": event.finish_reason,
                "tokens": len(stream.tokens),
                "timings_ms": stream.timings_ms(),
            }
            if not tokens:
                done["text"] = stream.text
                if stream.alternatives:  # the tokens of the answer's text, not a stop string's
                    done["alternatives"] = [
                        alts for end, alts in stream.choices if end <= len(stream.text)
                    ]
            lines.append(line(event="done", id=stream.id, **done))
        if event.finish_reason is not None:
            self._ended(stream)
        return lines

    def _ended(self, stream: sequence.Stream) -> None:
        scheduler, _ = self.streams.pop(stream.id, (None, None))
        self.quiet.discard(stream.id)
        held = self.held.pop(stream.id, None)
        if held is not None:
            self.catalog.release(held)
        if scheduler is None:
            return  # counted already
        if not stream.done:
            scheduler.cancel(stream)
        ref = scheduler.model.entry.ref
        GEN_STREAMS.labels(model=ref).dec()
        GEN_TOKENS.labels(model=ref).inc(len(stream.tokens))
        GEN_ENDED.labels(model=ref, reason=stream.finish_reason or "cancelled").inc()

    @staticmethod
    def _observe(entry, items: int, seconds: float) -> None:
        observe_call(entry.ref, entry.provider, items, seconds)


# --- the front side -----------------------------------------------------------------------------


class ChannelReader:
    """The front's end of a channel: reads it in a background task and hands each generation its
    events (in lists, as they arrived)."""

    def __init__(self, inference) -> None:
        self.inference = inference  # BentoML's client of the Inference service
        self.id: str | None = None
        self.closed = False
        self.retiring = False  # takes no new generations; closes after its last one
        self.opened = time.monotonic()
        self.queues: dict[str, asyncio.Queue] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closer: asyncio.Task | None = None

    @classmethod
    async def open(cls, inference) -> ChannelReader:
        reader = cls(inference)
        reader._task = asyncio.get_running_loop().create_task(reader._read(), name="dlzoo-channel")
        with anyio.move_on_after(30):
            await reader._ready.wait()
        if reader.id is None:
            reader.closed = True
            reader._task.cancel()
            raise error_for_status(
                503, "could not open a generation channel to the inference service"
            )
        return reader

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
                self.inference.to_async.close_channel(channel=self.id), name="dlzoo-channel-close"
            )

    def end_all(self, status: int, detail: str) -> None:
        """End every generation on this channel with an error event, and the channel."""
        for queue in self.queues.values():
            queue.put_nowait([{"event": "error", "status": status, "detail": detail}])
        self.close()

    def listen(self, stream_id: str) -> asyncio.Queue:
        self.queues[stream_id] = queue = asyncio.Queue()
        return queue

    def forget(self, stream_id: str) -> None:
        self.queues.pop(stream_id, None)
        if self.retiring and not self.queues:
            self.close()

    async def events(
        self, stream_id: str, queue: asyncio.Queue
    ) -> AsyncIterator[list[dict[str, Any]]]:
        try:
            while True:
                events = await queue.get()
                while not queue.empty():
                    events = events + queue.get_nowait()
                yield events
        finally:
            self.forget(stream_id)

    async def _read(self) -> None:
        lines = self.inference.to_async.generation_channel()
        try:
            async for events in json_lines(lines):
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
        except Exception:  # logged; every generation on the channel is told below
            log.exception("generation channel %s lost", self.id)
        finally:
            self.closed = True
            self._ready.set()
            for queue in self.queues.values():
                lost = {
                    "event": "error",
                    "status": 502,
                    "detail": "lost the channel to the inference service; try again",
                }
                queue.put_nowait([lost])
            with anyio.CancelScope(shield=True):
                await lines.aclose()


Events = AsyncIterator[list[dict[str, Any]]]


class StreamClient:
    """A front worker's generations: started on its channel, which is replaced every
    ``channel_seconds`` (BentoML's client gives a whole internal call the service's timeout)."""

    def __init__(self, inference, channel_seconds: float) -> None:
        self.inference = inference
        self.channel_seconds = channel_seconds
        self._reader: ChannelReader | None = None
        self._readers: weakref.WeakSet[ChannelReader] = weakref.WeakSet()  # retiring ones too
        self._lock = asyncio.Lock()

    def end_all(self, status: int, detail: str) -> None:
        """End every generation of this worker with an error event (shutting down)."""
        for reader in list(self._readers):
            reader.end_all(status, detail)

    async def _channel(self) -> ChannelReader:
        """This worker's channel, opened on first use, after a loss and when it is old."""
        async with self._lock:
            reader = self._reader
            if (
                reader is not None
                and not reader.closed
                and time.monotonic() - reader.opened > self.channel_seconds
            ):
                reader.retire()  # the generations on it finish there
            if reader is None or reader.closed or reader.retiring:
                self._reader = reader = await ChannelReader.open(self.inference)
                self._readers.add(reader)
            return reader

    async def start(
        self, request: GenerationRequest
    ) -> tuple[dict[str, Any], Events, Callable[[], Awaitable[None]]]:
        """Start a generation: (start event, lists of its later events up to done or error, close).

        ``close()`` cancels the generation if it has not ended (a client gone). Request errors
        raise their 4xx here, before any answer has begun."""
        reader = await self._channel()
        stream_id = secrets.token_hex(8)
        queue = reader.listen(stream_id)
        try:
            start = unwrap(
                await self.inference.to_async.start_generation(
                    channel=reader.id, stream_id=stream_id, request=asdict(request)
                )
            )
        except BaseException:
            reader.forget(stream_id)
            raise
        events = reader.events(stream_id, queue)
        ended = False

        async def until_end() -> Events:
            nonlocal ended
            async for chunk in events:
                ended = any(e["event"] in ("done", "error") for e in chunk)
                yield chunk
                if ended:
                    return

        async def close() -> None:
            await events.aclose()
            if not ended:
                await self.inference.to_async.cancel_generation(stream_id=stream_id)

        return start, until_end(), close

"""The Inference service: the ONNX Runtime sessions of the generative and sequence models (and the
classifiers' on a GPU; ``Settings.classifiers_in_front``). The front resolves every request to a
``name@version`` and this service trusts it; a client error comes back as a failure answer
(service/errors.py), which the front raises as its HTTP error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, get_args

import anyio
import bentoml

from service import drain, graphs, latent, seq2seq
from service.bentoml_compat import install_request_timeout
from service.card import Task
from service.classify import LocalClassifier
from service.errors import ClientError, Failure, ServiceUnavailableError
from service.metrics import INFERENCE_SECONDS
from service.repository import Catalog, Entry
from service.settings import Settings
from service.streams import GenerationRequest, StreamHub

SETTINGS = Settings.from_env()
log = logging.getLogger("dlzoo")
# BentoML keeps each request's timeout timer, and what it holds, until the timeout (3,600 s here):
# cancelled once the answer starts instead (both services; service/bentoml_compat.py, item 8).
install_request_timeout()


@bentoml.service(
    name="dlzoo-inference",
    workers=1,  # a generation channel lives in the worker that opened it (Settings says more)
    # BentoML gives its client of this service one timeout for a whole call, body included: the
    # generation channels run long, and are replaced before this (DLZOO_CHANNEL_SECONDS).
    traffic={"timeout": 3600},
    # BentoML's client recycles its connection pool after 100 requests or 300 s by default, which
    # fails requests in flight under load.
    runner_connection={"max_requests": 1_000_000_000, "max_age": 1e9},
    # The front's access log already has a line per request.
    logging={"access": {"enabled": False}},
    **SETTINGS.tracing(),
)
class Inference:
    def __init__(self) -> None:
        elsewhere = SETTINGS.classifiers_in_front
        tasks = set(get_args(Task)) - {"classify"} if elsewhere else None
        self.catalog = Catalog(
            SETTINGS.models,
            runtime=SETTINGS.runtime,
            tasks=tasks,
            policy=SETTINGS.version_policy,
            grace=SETTINGS.drain_grace,
        )
        self.classifier = LocalClassifier(
            self.catalog, SETTINGS.max_batch, SETTINGS.max_latency_ms / 1e3
        )
        self.hub = StreamHub(self.catalog, SETTINGS.max_streams)
        self.translators: dict[Entry, seq2seq.Translator] = {}  # a version's graphs

    def __is_ready__(self) -> bool:
        return True  # __init__ has opened and warmed up every session by now

    @bentoml.on_startup
    async def _drain_on_sigterm(self) -> None:
        drain.on_sigterm(self._drain)

    async def _drain(self, exit_server: drain.ExitServer) -> None:
        """SIGTERM (service/drain.py): serve the fronts until nothing is in flight, then go."""
        await drain.until_idle(SETTINGS.drain_seconds + 5)
        exit_server()

    @bentoml.on_startup
    async def _start_polling(self) -> None:
        if SETTINGS.poll_seconds > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="dlzoo-poll")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(SETTINGS.poll_seconds)
            try:
                await self._rescan()
            except Exception:  # one bad scan must not stop the next
                log.exception("repository scan failed")

    @bentoml.api
    async def reload(self) -> list[str]:
        """Scan the repository now (loads run in a thread, one at a time); what changed."""
        return await self._rescan()

    async def _rescan(self) -> list[str]:
        changes = await anyio.to_thread.run_sync(self.catalog.scan)
        for entry in [e for e in self.translators if not e.sessions]:
            del self.translators[entry]  # the version was freed
        self.hub.forget_freed()
        return changes

    @bentoml.api
    async def classify(self, item: dict[str, Any]) -> dict[str, Any]:
        """item: service.classify.Item."""
        return await self.classifier.classify(item)

    @bentoml.api
    def models(self) -> list[dict[str, Any]]:
        return self.catalog.summary()

    @bentoml.api
    async def run_graph(self, model: str, role: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """The V2 routes' graphs that run here: graph ``role`` of ``model`` (name@version) on
        tensors the front checked against the card (service/graphs.py); the version is held while
        it runs, and a classifier's rows join ``classify``'s batcher."""
        return await graphs.run(self.catalog, self.classifier, model, role, inputs)

    # --- VAE and GAN (service/latent.py): raw arrays; the front renders PNG or JSON -------------

    @bentoml.api
    def sample(self, model: str, count: int, seed: int | None = None) -> dict[str, Any]:
        return self._pictures(model, lambda e: latent.sample(e, count, seed))

    @bentoml.api
    def reconstruct(self, model: str, pixels: Any) -> dict[str, Any]:
        """pixels: (N, C, H, W) float32 in [0, 1], preprocessed by the front (the card's recipe)."""
        return self._pictures(model, lambda e: latent.reconstruct(e, pixels))

    @bentoml.api
    def interpolate(
        self, model: str, seed_from: int, seed_to: int, steps: int, method: str = "slerp"
    ) -> dict[str, Any]:
        return self._pictures(
            model, lambda e: latent.interpolate(e, seed_from, seed_to, steps, method)
        )

    def _pictures(self, model: str, work: Callable[[Entry], latent.Images]) -> dict[str, Any]:
        try:
            entry = self.catalog.loaded(model)
        except (ClientError, ServiceUnavailableError) as exc:
            return Failure.of(exc).answer()
        with self.catalog.hold(entry):
            t0 = time.perf_counter()
            out = work(entry)
            seconds = time.perf_counter() - t0
        INFERENCE_SECONDS.labels(model=entry.ref, provider=entry.provider).observe(seconds)
        return {
            "model": entry.name,
            "version": entry.version,
            "provider": entry.provider,
            "images": out.images,
            "latents": out.latents,
            "seeds": out.seeds,
            "extra": out.extra,
            "inference_ms": round(seconds * 1e3, 3),
        }

    # --- language models (service/streams.py, service/sequence.py) and seq2seq ------------------

    @bentoml.api
    async def generation_channel(self) -> AsyncGenerator[str, None]:
        """A front worker's channel: JSON lines of every generation started on it."""
        async with contextlib.aclosing(self.hub.channel_lines()) as lines:
            async for chunk in lines:
                yield chunk

    @bentoml.api
    async def close_channel(self, channel: str) -> bool:
        """End a channel; its unfinished generations are cancelled."""
        return self.hub.close_channel(channel)

    @bentoml.api
    async def start_generation(
        self, channel: str, stream_id: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        """request: a streams.GenerationRequest; answers the start event or a failure."""
        return self.hub.start(channel, stream_id, GenerationRequest(**request))

    @bentoml.api
    async def cancel_generation(self, stream_id: str) -> bool:
        """Stop a generation whose client has gone; False if it had ended. (Closing the front's
        end of a stream does not reach here: BentoML's client keeps the connection open.)"""
        return self.hub.cancel(stream_id)

    @bentoml.api
    def translate(
        self,
        model: str,
        text: str,
        beam_width: int,
        num_return: int,
        max_length: int | None = None,
        attention: bool = False,
    ) -> dict[str, Any]:
        """Greedy or beam-search decoding of one text (its length checked by the front)."""
        try:
            entry = self.catalog.loaded(model)
        except (ClientError, ServiceUnavailableError) as exc:
            return Failure.of(exc).answer()
        translator = self.translators.get(entry)
        if translator is None:
            translator = self.translators[entry] = seq2seq.Translator(entry)
        with self.catalog.hold(entry):
            t0 = time.perf_counter()
            out = translator.translate(
                text,
                beam_width=beam_width,
                num_return=num_return,
                max_length=max_length,
                attention=attention,
            )
            seconds = time.perf_counter() - t0
        INFERENCE_SECONDS.labels(model=entry.ref, provider=entry.provider).observe(seconds)
        return {
            "model": entry.name,
            "version": entry.version,
            "provider": entry.provider,
            **out,
            "timings_ms": {"total": round(seconds * 1e3, 3)},
        }


Inference.add_asgi_middleware(drain.InFlight)  # what a drain waits for

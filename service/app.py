"""The HTTP front, ``bentoml serve service.app:DLZoo``: thin endpoints (parse, resolve, call).

It validates requests, decodes and preprocesses uploads with the card's recipe, resolves each
request's model to one ``name@version`` and hands it to where it runs: classifiers in this process
on a CPU (service/classify.py), the rest in the Inference service (service/inference.py). Client
mistakes are 4xx whose message names the field. The Open Inference Protocol is service/v2.py.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Annotated, Any, Literal

import anyio
import bentoml
import numpy as np
from bentoml.validators import ContentType
from PIL import Image
from pydantic import Field
from starlette.responses import StreamingResponse

from service import auth, drain, imaging, latent, pictures, playground, seq2seq, sequence, v2
from service.admission import Admission
from service.bentoml_compat import (
    GetAsPost,
    Upload,
    fix_media_types,
    install_error_answers,
    install_multipart,
    install_outermost,
    stop_listening,
)
from service.classify import Classifier, LocalClassifier, RemoteClassifier
from service.errors import BadRequest, NotFoundError, Unprocessable, unwrap
from service.events import server_sent_events, whole_answer
from service.inference import SETTINGS, Inference
from service.live import FrontRepository
from service.metrics import STAGE_SECONDS
from service.middleware import BodyLimit, ConnectionMaxAge
from service.openapi import OpenAPIDocument
from service.repository import Catalog
from service.schemas import (
    MAX_TRANSLATE_CHARS,
    GenerateRequest,
    InterpolateRequest,
    ModelRef,
    SampleRequest,
    Scale,
    TranslateRequest,
    draw_seed,
)
from service.streams import GenerationRequest, StreamClient

install_multipart()  # file fields take uploaded files only (never a URL), 400 for malformed forms
install_error_answers()  # every error one JSON object, {"error": ...} (service/errors.py)
ImageField = Annotated[Upload, Field(description="the image (PNG, JPEG, BMP, GIF, WebP, TIFF)")]


@bentoml.asgi_app(v2.APP, path="/", name="v2")  # /v2/...: the Open Inference Protocol
@bentoml.asgi_app(playground.APP, path="/", name="playground")  # /ui, card pictures
@bentoml.service(
    name="dlzoo",
    workers=SETTINGS.front_workers,
    traffic={"timeout": 60},
    **SETTINGS.tracing(),
)
class DLZoo:
    inference = bentoml.depends(Inference)

    def __init__(self) -> None:
        self.classifier: Classifier
        live = {"policy": SETTINGS.version_policy, "grace": SETTINGS.drain_grace, "adopts": True}
        if SETTINGS.classifiers_in_front:
            self.catalog = Catalog(SETTINGS.models, SETTINGS.runtime, ["classify"], **live)
            max_wait = SETTINGS.max_latency_ms / 1e3
            self.classifier = LocalClassifier(self.catalog, SETTINGS.max_batch, max_wait)
        else:
            self.catalog = Catalog(SETTINGS.models, None, **live)  # cards only
            self.classifier = RemoteClassifier(self.inference)
        self.live = FrontRepository(self.catalog, self.inference, SETTINGS.poll_seconds)
        self.streams = StreamClient(self.inference, SETTINGS.channel_seconds)
        self.draining = False

    @bentoml.on_startup
    def _follow_repository(self) -> None:
        self.live.start()

    @bentoml.on_startup
    async def _drain_on_sigterm(self) -> None:
        drain.on_sigterm(self._drain)

    async def _drain(self, exit_server: drain.ExitServer) -> None:
        """SIGTERM (service/drain.py): not ready, no new connections, in flight finishes."""
        self.draining = True
        stop_listening()
        exit_server()
        await asyncio.sleep(SETTINGS.drain_seconds)
        self.streams.end_all(503, "the server is shutting down; generate again (another replica)")

    def __is_ready__(self) -> bool:
        return self.live.synced and not self.draining  # /readyz also waits for Inference

    @bentoml.api(route="/admin/reload")
    async def admin_reload(self, ctx: bentoml.Context) -> dict[str, Any]:
        """Rescan the repository now; what changed. Needs DLZOO_ADMIN_TOKEN as a Bearer token."""
        if SETTINGS.admin_token is None:
            raise NotFoundError("/admin/reload: not enabled (set DLZOO_ADMIN_TOKEN)")
        if not auth.bearer_ok(ctx.request, SETTINGS.admin_token):
            ctx.response.status_code = 401  # with a ctx parameter BentoML takes the status from it
            ctx.response.headers.update(auth.CHALLENGE)
            return auth.REFUSAL
        return await self.live.reload()

    @bentoml.api(route="/models")
    async def models(self) -> list[dict[str, Any]]:
        """Every model version: card summary, status (and the reason if it failed), provider."""
        return await self.live.listing()

    @bentoml.api(route="/classify")
    async def classify(
        self,
        image: ImageField,
        model: Annotated[str, ModelRef("classifier name, or name@version")] = "lenet5",
        top_k: Annotated[
            int, Field(description="how many classes to return (1..classes)", strict=True)
        ] = 5,
    ) -> dict[str, Any]:
        """Classify one uploaded image (multipart/form-data)."""
        entry = self.catalog.resolve(model, ("classify",))
        n = len(entry.card.labels)
        if not 1 <= top_k <= n:
            raise BadRequest(f"top_k: must be between 1 and {n} for {entry.name}, got {top_k}")
        t0 = time.perf_counter()
        pixels = await self._pixels(image, entry.card.preprocess)
        preprocess = time.perf_counter() - t0
        item = {"model": entry.ref, "pixels": pixels, "top_k": top_k, "sent": time.time()}
        result = unwrap(await self.classifier.classify(item))
        STAGE_SECONDS.labels(entry.ref, result["provider"], "preprocess").observe(preprocess)
        result["timings_ms"]["preprocess"] = round(preprocess * 1e3, 3)
        return result

    # --- VAE and GAN: Inference runs the graphs, the front renders (service/pictures.py) ------

    @bentoml.api(route="/sample", input_spec=SampleRequest)
    async def sample(self, **request: Any) -> Image.Image:
        """Images from the prior: a PNG grid (seed in the X-Seed header), or JSON arrays."""
        r = SampleRequest.model_construct(**request)
        entry = self.catalog.resolve(r.model, latent.GENERATIVE_TASKS)
        out = unwrap(
            await self.inference.to_async.sample(model=entry.ref, count=r.count, seed=r.seed)
        )
        if r.format == "json":
            return pictures.arrays(out, seed=out["seeds"]["seed"])
        return await pictures.png(out, r.columns, r.scale)

    @bentoml.api(route="/reconstruct")
    async def reconstruct(
        self,
        image: ImageField,
        model: Annotated[str, ModelRef("a vae model, or name@version")] = "vae",
        format: Annotated[
            Literal["png", "json"],
            Field(description="png: input beside reconstruction; json: latent stats and arrays"),
        ] = "png",
        scale: Scale = 1,
    ) -> Image.Image:
        """An upload as a VAE sees it, beside its reconstruction from the posterior mean."""
        entry = self.catalog.resolve(model, ("vae",))
        if entry.card.preprocess is None:
            raise Unprocessable(
                f"model: {entry.ref} has no preprocess in its card, so it cannot take uploads"
            )
        pixels = await self._pixels(image, entry.card.preprocess)
        out = unwrap(
            await self.inference.to_async.reconstruct(model=entry.ref, pixels=pixels[None])
        )
        if format == "json":
            return pictures.reconstruction(out, pixels)
        out["images"] = np.concatenate([pixels[None], out["images"]])  # input, reconstruction
        return await pictures.png(out, 2, scale)

    @bentoml.api(route="/interpolate", input_spec=InterpolateRequest)
    async def interpolate(self, **request: Any) -> Image.Image:
        """Decoded points on the path between two seeds' latents: a PNG strip (seeds in headers)."""
        r = InterpolateRequest.model_construct(**request)
        entry = self.catalog.resolve(r.model, latent.GENERATIVE_TASKS)
        seeds = {
            "seed_from": draw_seed() if r.seed_from is None else r.seed_from,
            "seed_to": draw_seed() if r.seed_to is None else r.seed_to,
        }
        out = unwrap(
            await self.inference.to_async.interpolate(
                model=entry.ref, steps=r.steps, method=r.method, **seeds
            )
        )
        if r.format == "json":
            return pictures.arrays(out, **out["seeds"], method=r.method)
        return await pictures.png(out, r.steps, r.scale)

    # --- language models and seq2seq: Inference generates (service/streams.py) -----------------

    @bentoml.api(route="/generate", input_spec=GenerateRequest)
    async def generate(self, **request: Any) -> dict[str, Any]:
        """Continue a prompt with a character language model: {text, tokens, finish_reason, ...}."""
        return await whole_answer(*await self._generation(request, tokens=False))

    @bentoml.api(route="/generate_stream", input_spec=GenerateRequest)
    async def generate_stream(
        self, **request: Any
    ) -> Annotated[str, ContentType("text/event-stream")]:
        """The same generation as Server-Sent Events: ``event: start`` (model, seed, unknown_chars),
        one ``data: {text, index}`` per token as soon as it exists, then ``event: done``
        (finish_reason, tokens, timings_ms) or ``event: error`` (status, detail). Request errors
        are answered with a 4xx before the stream starts."""
        start, events, close = await self._generation(request, tokens=True)
        headers = {
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Seed": str(start["seed"]),
            "X-Model": f"{start['model']}@{start['version']}",
        }
        body = server_sent_events(start, events, close)
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    async def _generation(self, request: dict[str, Any], tokens: bool):
        entry = self.catalog.resolve(request["model"], sequence.LM_TASKS)
        vocab = len(entry.card.vocab.tokens)
        if request["top_k"] is not None and request["top_k"] > vocab:
            raise BadRequest(
                f"top_k: must be an integer from 1 to {vocab} (the vocabulary of {entry.ref}), "
                f"got {request['top_k']}"
            )
        return await self.streams.start(
            GenerationRequest(**{**request, "model": entry.ref, "tokens": tokens})
        )

    @bentoml.api(route="/translate", input_spec=TranslateRequest)
    async def translate(self, **request: Any) -> dict[str, Any]:
        """Seq2seq (date normalization): {output, score, candidates: [{text, log_prob, complete}]}.

        ``beam_width`` 1 is greedy decoding; wider beams return candidates best first (complete
        ones, ending in end-of-sequence, before cut-off ones), and the best is never worse than
        greedy's. Characters outside the vocabulary are read as unknown and listed."""
        r = TranslateRequest.model_construct(**request)
        entry = self.catalog.resolve(r.model, seq2seq.SEQ2SEQ_TASKS)
        num_return = r.beam_width if r.num_return is None else r.num_return
        if num_return > r.beam_width:
            raise BadRequest(
                f"num_return: must be an integer from 1 to beam_width ({r.beam_width}), "
                f"got {num_return}"
            )
        limit = int(entry.card.training.get("max_source_len", MAX_TRANSLATE_CHARS))
        if len(r.text) > limit:
            raise BadRequest(
                f"text: must be 1 to {limit} characters for {entry.ref} (its card's "
                f"max_source_len), got {len(r.text)}"
            )
        if r.attention:
            seq2seq.check_attention(entry.card)  # a graph exported before attention was: 422
        options = {"beam_width": r.beam_width, "num_return": num_return, "max_length": r.max_length}
        options["attention"] = r.attention
        return unwrap(
            await self.inference.to_async.translate(model=entry.ref, text=r.text, **options)
        )

    async def _pixels(self, image: Upload, preprocess) -> np.ndarray:
        """An upload decoded safely and preprocessed with the card's recipe: (C, H, W) in [0, 1]."""
        limits = {"max_bytes": SETTINGS.max_upload_bytes, "max_pixels": SETTINGS.max_pixels}
        work = functools.partial(imaging.preprocess_upload, image.data, preprocess, **limits)
        return await anyio.to_thread.run_sync(work)


fix_media_types(Inference)
fix_media_types(DLZoo)
# Refuse oversized bodies before reading them (the form fields add a little to the file's size).
DLZoo.add_asgi_middleware(BodyLimit, limit=SETTINGS.max_upload_bytes + 64 * 1024)
DLZoo.add_asgi_middleware(GetAsPost, paths=("/models",))  # listing models is a read
if SETTINGS.api_token is not None:
    DLZoo.add_asgi_middleware(
        auth.BearerAuth, token=SETTINGS.api_token, open_paths=SETTINGS.open_paths
    )
# A model request that cannot be answered in time: 503 at once (service/admission.py).
MODEL_APIS = tuple(
    api.route for api in DLZoo.apis.values() if api.route not in ("/models", "/admin/reload")
)
install_outermost(  # before BentoML's own middlewares: a refusal costs as little as it can
    "dlzoo",
    Admission,
    limit=SETTINGS.max_queue,
    max_wait=SETTINGS.max_latency_ms / 1e3,
    apis=MODEL_APIS,
    long_apis=("/generate",),  # answers when the whole generation is done
)
open_paths = SETTINGS.open_paths if SETTINGS.api_token is not None else None
DLZoo.add_asgi_middleware(OpenAPIDocument, service=DLZoo, open_paths=open_paths)  # /docs.json
if SETTINGS.front_workers > 1:  # with one worker there is nowhere else for a connection to go
    DLZoo.add_asgi_middleware(ConnectionMaxAge, max_age=SETTINGS.connection_seconds)

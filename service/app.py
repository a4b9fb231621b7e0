"""The BentoML service: endpoints only; the work lives in catalog, imaging and runtime.

Two services in one ``bentoml serve``:

- ``DLZoo`` (the HTTP front, ``service.app:DLZoo``): validates requests, decodes and preprocesses
  uploads (CPU work that scales with front workers), answers errors as 4xx.
- ``Inference``: owns the ONNX Runtime sessions. Its ``classify_batch`` is a batchable API, so
  BentoML's adaptive batching groups concurrent requests (possibly for different models) into one
  call; the method groups them by model and runs one ONNX call per group. A batchable API takes one
  argument, so each item carries its own options (model, top_k).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import bentoml
import numpy as np
from PIL import Image
from pydantic import Field, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError
from starlette.responses import JSONResponse, Response

from service import generative as gen
from service import imaging, uploads
from service.catalog import Catalog
from service.classify import classify_items
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


def IntRange(low: int, high: int, description: str):  # noqa: ANN201, N802 - a type factory
    """An int field limited to low..high (OpenAPI minimum/maximum) whose 400 names the whole range.

    Pydantic's own message names only the bound that failed ("less than or equal to 64"); BentoML
    answers a ValidationError with 400 and ``detail: [{loc: [field], msg}]``.
    """
    def check(value, handler):  # noqa: ANN001, ANN202
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("range", "must be an integer from {low} to {high}, got {value}",
                                      {"low": low, "high": high, "value": value}) from None
    return Annotated[int, Field(ge=low, le=high, description=description), WrapValidator(check)]


@bentoml.service(
    name="dlzoo-inference",
    workers=SETTINGS.inference_workers,
    traffic={"timeout": 60},
    # The front keeps one connection pool to this service; BentoML's client recycles it after 100
    # requests or 300 s by default, which fails requests in flight under load.
    runner_connection={"max_requests": 1_000_000_000, "max_age": 1e9},
)
class Inference:
    def __init__(self) -> None:
        self.catalog = Catalog(SETTINGS.models, runtime=RuntimeConfig.from_env())

    def __is_ready__(self) -> bool:
        return True  # __init__ has opened and warmed up every session by now

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.max_batch, max_latency_ms=SETTINGS.max_latency_ms)
    def classify_batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """items: {model: "name@version", pixels: (C, H, W) float32, top_k, sent: epoch seconds}."""
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

    @bentoml.api
    def models(self) -> list[dict[str, Any]]:
        return self.catalog.summary()

    # Generative APIs (service/generative.py): not batchable, a request is already one ONNX call for
    # all its images. They answer raw arrays; the front renders PNG/JSON (CPU work off this process).
    # A client error comes back as {error, status} like classify_batch's, for the front to raise.
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


@bentoml.service(name="dlzoo", workers=SETTINGS.front_workers, traffic={"timeout": 60})
class DLZoo:
    inference = bentoml.depends(Inference)

    def __init__(self) -> None:
        # Cards and checksums only: this process preprocesses, the Inference service runs graphs.
        self.catalog = Catalog(SETTINGS.models, runtime=None)

    def __is_ready__(self) -> bool:
        return True  # /readyz also waits for the Inference service

    @bentoml.api(route="/models")
    async def models(self) -> list[dict[str, Any]]:
        """Every model version: card summary, status (and the reason if it failed), provider."""
        return await self.inference.to_async.models()

    @bentoml.api(route="/classify")
    async def classify(
        self,
        image: Annotated[Path, Field(description="the image file (PNG, JPEG, BMP, GIF, WebP, TIFF)")],
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
        [result] = await self.inference.to_async.classify_batch(
            [{"model": entry.ref, "pixels": pixels, "top_k": top_k, "sent": time.time()}])
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

    @bentoml.api(route="/sample")
    async def sample(
        self,
        model: Annotated[str, Field(description="a vae or gan model, or name@version")] = "gan",
        count: IntRange(1, gen.MAX_COUNT, "how many images") = 16,
        seed: IntRange(0, gen.SEED_LIMIT - 1, "fixes the latents; drawn (and returned) if absent") | None = None,
        format: Annotated[Literal["png", "json"], Field(description="png grid, or json arrays")] = "png",
        columns: IntRange(1, gen.MAX_COLUMNS, "grid columns (default: a square grid)") | None = None,
        scale: IntRange(1, gen.MAX_SCALE, "nearest-neighbour enlargement") = 1,
    ) -> Image.Image:
        """Images from the prior: a PNG grid (seed in the X-Seed header), or {images, latents, seed}."""
        entry = self.catalog.resolve(model, gen.GENERATIVE_TASKS)
        out = await self._generated(self.inference.to_async.sample(model=entry.ref, count=count, seed=seed))
        if format == "json":
            return JSONResponse({**self._meta(out), "seed": out["seeds"]["seed"],
                                 "images": gen.to_lists(out["images"]), "latents": out["latents"].tolist()})
        return await self._png(out, columns, scale)

    @bentoml.api(route="/reconstruct")
    async def reconstruct(
        self,
        image: Annotated[Path, Field(description="the image file (PNG, JPEG, BMP, GIF, WebP, TIFF)")],
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

    @bentoml.api(route="/interpolate")
    async def interpolate(
        self,
        model: Annotated[str, Field(description="a vae or gan model, or name@version")] = "gan",
        seed_from: IntRange(0, gen.SEED_LIMIT - 1, "start: the first latent of this seed (drawn if absent)") | None = None,
        seed_to: IntRange(0, gen.SEED_LIMIT - 1, "end (drawn if absent)") | None = None,
        steps: IntRange(2, gen.MAX_STEPS, "frames, endpoints included") = 8,
        method: Annotated[Literal["lerp", "slerp"], Field(description="straight line, or great circle")] = "slerp",
        format: Annotated[Literal["png", "json"], Field(description="png strip, or json arrays")] = "png",
        scale: IntRange(1, gen.MAX_SCALE, "nearest-neighbour enlargement") = 1,
    ) -> Image.Image:
        """Decoded points on the path between two seeds' latents: a PNG strip (seeds in headers)."""
        entry = self.catalog.resolve(model, gen.GENERATIVE_TASKS)
        seed_from = gen.draw_seed() if seed_from is None else seed_from
        seed_to = gen.draw_seed() if seed_to is None else seed_to
        out = await self._generated(self.inference.to_async.interpolate(
            model=entry.ref, seed_from=seed_from, seed_to=seed_to, steps=steps, method=method))
        if format == "json":
            return JSONResponse({**self._meta(out), **out["seeds"], "method": method,
                                 "images": gen.to_lists(out["images"]), "latents": out["latents"].tolist()})
        return await self._png(out, steps, scale)

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
    def _prepare(path: Path, preprocess) -> np.ndarray:
        size = path.stat().st_size
        if size > SETTINGS.max_upload_bytes:
            raise PayloadTooLarge(f"image: {size} bytes is over the limit of "
                                  f"{SETTINGS.max_upload_bytes} bytes (DLZOO_MAX_UPLOAD_BYTES)")
        return imaging.preprocess_upload(path.read_bytes(), preprocess, max_bytes=SETTINGS.max_upload_bytes,
                                         max_pixels=SETTINGS.max_pixels)


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

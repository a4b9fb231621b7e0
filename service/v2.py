"""The Open Inference Protocol (KServe V2 / Triton HTTP) beside dlzoo's own endpoints.

``APP`` is a Starlette app that service/app.py mounts into the front (``bentoml.asgi_app``): same
port, same workers and middlewares (so /metrics counts its requests), same repository and
batcher. Each handler finds the front's ``DLZoo`` instance with ``bentoml.get_current_service()``
(BentoML sets it when the worker starts) and uses its ``catalog``, ``classifier``, ``inference``
and ``live``. The graphs, their names and the protocol's bodies are service/graphs.py; tensors in
and out are service/tensors.py.

Errors are ``{"error": "..."}`` as ``application/json``: 400 a bad request, 404 an unknown model,
version or route, 405 a wrong method, 413 too large, 415 a Content-Encoding other than gzip or
deflate, 503 only when the service is overloaded. Success is exactly 200.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from importlib import metadata as package

import anyio
import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from service import graphs, imaging, tensors
from service.bentoml_compat import metric_totals
from service.errors import (
    BadRequest,
    ClientError,
    NotFoundError,
    PayloadTooLarge,
    ServiceUnavailableError,
    UnsupportedMediaType,
    unwrap,
)
from service.inference import SETTINGS
from service.metrics import STAGE_SECONDS
from service.repository import SERVING

log = logging.getLogger("dlzoo.v2")
MAX_BODY = SETTINGS.max_upload_bytes + 64 * 1024  # as the front's BodyLimit: the upload and JSON
EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_repository",
    "statistics",
    "model_configuration",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
try:
    VERSION = package.version("dlzoo")
except package.PackageNotFoundError:  # a Bento carries the source, not the installed package
    VERSION = "unknown"


def error(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _route(handler: Callable[[Request, object], Awaitable[Response]]):
    """A handler of ``(request, front)`` as an endpoint whose every failure is a JSON error."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, bentoml.get_current_service())
        except ClientError as exc:
            return error(exc.status, str(exc))
        except ServiceUnavailableError as exc:  # overloaded, or the model failed to load
            return error(503, str(exc), headers={"retry-after": "1"})
        except Exception:
            log.exception("V2 %s %s failed", request.method, request.url.path)
            return error(500, "internal error; the server log has the details")

    return endpoint


# ----------------------------------------------------------------------------- server and health


async def server_metadata(request, front):
    return JSONResponse({"name": "dlzoo", "version": VERSION, "extensions": EXTENSIONS})


async def live(request, front):
    return JSONResponse({"live": True})


async def ready(request, front):
    if front.live.synced:
        return JSONResponse({"ready": True})
    return error(400, "not ready: the model repository is still being read", ready=False)


# ---------------------------------------------------------------------------------------- models


def _graph(request: Request, front):
    """(entry, role, V2 name) of the path's model and optional version."""
    v2_name = request.path_params["model"]
    name, role = graphs.split(v2_name)
    version = request.path_params.get("version")
    if version is not None and not (version.isdigit() and 1 <= int(version) < 2**31):
        raise BadRequest("version: must be a whole number >= 1")
    entry = front.catalog.resolve(name if version is None else f"{name}@{version}")
    return entry, graphs.role_of(entry.card, v2_name, role), v2_name


async def model_metadata(request, front):
    entry, role, v2_name = _graph(request, front)
    ready = [
        e.version for e in front.catalog.entries if e.name == entry.name and e.status == "ready"
    ]
    return JSONResponse(graphs.metadata(v2_name, ready, *graphs.specs(entry.card, role)))


async def model_ready(request, front):
    try:
        entry, _, v2_name = _graph(request, front)
    except NotFoundError as exc:
        name, _ = graphs.split(request.path_params["model"])
        if not any(e.name == name for e in front.catalog.entries):
            raise
        return error(400, str(exc), ready=False)  # known, but no version is ready (as Triton)
    return JSONResponse({"name": v2_name, "ready": True})


async def model_config(request, front):
    entry, role, v2_name = _graph(request, front)
    inputs, outputs = graphs.specs(entry.card, role)
    return JSONResponse(graphs.config(v2_name, entry.card, inputs, outputs, SETTINGS.max_batch))


async def model_stats(request, front):
    if "model" not in request.path_params:  # every graph of every serving version
        served = [
            (e.name + suffix, e)
            for e in front.catalog.entries
            if e.status in SERVING and e.card is not None
            for suffix in graphs.names(e.card.task, e.card.files)
        ]
    elif "version" in request.path_params:
        entry, _, v2_name = _graph(request, front)
        served = [(v2_name, entry)]
    else:
        entry, _, v2_name = _graph(request, front)  # 404 unless a version serves
        served = [
            (v2_name, e)
            for e in front.catalog.entries
            if e.name == entry.name and e.status in SERVING
        ]
    totals = await anyio.to_thread.run_sync(metric_totals)
    return JSONResponse(graphs.statistics(served, totals))


# ------------------------------------------------------------------------------------- repository


async def repository_index(request, front):
    body = await _body(request)
    ready_only = False
    if body.strip():  # tritonclient sends an empty body
        wanted = tensors.parse_json(body, "index request")
        if not isinstance(wanted, dict) or not isinstance(wanted.get("ready", False), bool):
            raise BadRequest('index request: must be a JSON object, optionally {"ready": true}')
        ready_only = wanted.get("ready", False)
    return JSONResponse(graphs.index(await front.live.listing(), ready_only))


async def repository_control(request, front):
    raise BadRequest(
        "models load and unload by themselves: a version serves once it is published in the "
        "repository and leaves by the version policy (DLZOO_VERSION_POLICY); see /admin/reload"
    )


# ----------------------------------------------------------------------------------------- infer


async def infer(request, front):
    entry, role, v2_name = _graph(request, front)
    body = await _body(request)
    header = request.headers.get("inference-header-content-length")
    req = tensors.parse_request(body, header, max_bytes=MAX_BODY)
    inputs, outputs = graphs.specs(entry.card, role)
    wanted = _requested(req, outputs)
    classifier = entry.card.task == "classify"
    arrays = graphs.check(req.inputs, inputs, SETTINGS.max_batch, images=classifier)
    if classifier and req.inputs[0].datatype == "BYTES":  # encoded images, as /classify takes
        arrays = {inputs[0].name: await _pixels(arrays[graphs.IMAGE_INPUT], entry)}
    if front.catalog.runs(entry.card.task):  # classifiers on a CPU: this worker's batcher
        answer = await graphs.run(front.catalog, front.classifier, entry.ref, role, arrays)
    else:
        answer = await front.inference.to_async.run_graph(model=entry.ref, role=role, inputs=arrays)
    result = unwrap(answer)
    specs = {s.name: s for s in outputs}
    out = []
    for want in wanted:
        values = np.asarray(result["outputs"][want.name], tensors.DTYPES[specs[want.name].datatype])
        if want.classification:
            labels = entry.card.labels
            values = tensors.classify(values, want.classification, labels, want.name)
        datatype = "BYTES" if want.classification else specs[want.name].datatype
        out.append((want, tensors.Tensor(want.name, datatype, values.shape, values)))
    body, headers = tensors.encode_answer(v2_name, result["version"], req.id, out)
    return Response(body, headers=headers)


def _requested(req: tensors.InferRequest, outputs: list[graphs.Spec]) -> list[tensors.Requested]:
    if req.outputs is None:
        return [tensors.Requested(s.name, req.binary_output) for s in outputs]
    given = {s.name: s for s in outputs}
    for want in req.outputs:
        spec = given.get(want.name)
        if spec is None:
            raise BadRequest(
                f"outputs: no output named {tensors.shown(want.name)}; this model gives "
                f"{', '.join(given)}"
            )
        n = spec.shape[-1] if spec.shape else None
        if want.classification and isinstance(n, int) and want.classification > n:
            raise BadRequest(f"outputs ({want.name}).parameters.classification: must be 1 to {n}")
    return req.outputs


async def _pixels(images: np.ndarray, entry) -> np.ndarray:
    """Encoded images decoded safely and preprocessed with the card's recipe, as /classify does:
    (N, C, H, W) in [0, 1]; each one's time is its preprocess stage."""
    limits = {"max_bytes": SETTINGS.max_upload_bytes, "max_pixels": SETTINGS.max_pixels}

    def work() -> tuple[np.ndarray, list[float]]:
        pixels, spent = [], []
        for k, data in enumerate(images):
            t0 = time.perf_counter()
            try:
                pixels.append(imaging.preprocess_upload(data, entry.card.preprocess, **limits))
            except ClientError as exc:
                message = str(exc).removeprefix("image: ")
                raise type(exc)(f"inputs ({graphs.IMAGE_INPUT}) element {k}: {message}") from None
            spent.append(time.perf_counter() - t0)
        return np.stack(pixels), spent

    pixels, spent = await anyio.to_thread.run_sync(work)
    stage = STAGE_SECONDS.labels(model=entry.ref, provider=entry.provider, stage="preprocess")
    for seconds in spent:
        stage.observe(seconds)
    return pixels


async def _body(request: Request) -> bytes:
    """The body, at most ``MAX_BODY`` bytes once decompressed (gzip and deflate, as tritonclient
    sends them; a compressed body is inflated only up to the limit)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "deflate"):
        raise UnsupportedMediaType(
            f"Content-Encoding: {tensors.shown(encoding)} is not supported; send gzip, deflate "
            "or an uncompressed body"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"request body: over the limit of {MAX_BODY} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding == "identity":
        return body
    inflate = zlib.decompressobj(zlib.MAX_WBITS | (16 if encoding == "gzip" else 0))
    try:
        out = inflate.decompress(body, MAX_BODY + 1)
    except zlib.error:
        raise BadRequest(f"request body: not valid {encoding} data") from None
    if len(out) > MAX_BODY:
        raise PayloadTooLarge(f"request body: over the limit of {MAX_BODY} bytes once inflated")
    if not inflate.eof:
        raise BadRequest(f"request body: the {encoding} data is cut short")
    return out


# ----------------------------------------------------------------------------------------- routes


async def no_route(request, front):
    """An unknown path under /v2: 404, or 405 naming the methods its route takes."""
    scope = {"type": "http", "path": request.url.path, "method": request.method}
    allowed = sorted(
        {m for r in ROUTES[:-1] for m in (r.methods or ()) if r.matches(scope)[0] != Match.NONE}
    )
    if allowed:
        use = ", ".join(allowed)
        return error(405, f"{request.method} is not allowed here; use {use}", {"allow": use})
    return error(404, f"no Open Inference Protocol route {request.url.path[:200]}")


async def http_error(request: Request, exc: HTTPException) -> Response:
    return error(exc.status_code, str(exc.detail))


_MODEL = "/v2/models/{model}"
_VERSION = "/v2/models/{model}/versions/{version}"
ROUTES = [
    Route("/v2", _route(server_metadata), methods=["GET"]),
    Route("/v2/health/live", _route(live), methods=["GET"]),
    Route("/v2/health/ready", _route(ready), methods=["GET"]),
    Route("/v2/models/stats", _route(model_stats), methods=["GET"]),
    Route("/v2/repository/index", _route(repository_index), methods=["POST"]),
    Route("/v2/repository/models/{model}/load", _route(repository_control), methods=["POST"]),
    Route("/v2/repository/models/{model}/unload", _route(repository_control), methods=["POST"]),
    *(
        route
        for base in (_MODEL, _VERSION)
        for route in (
            Route(base, _route(model_metadata), methods=["GET"]),
            Route(base + "/ready", _route(model_ready), methods=["GET"]),
            Route(base + "/config", _route(model_config), methods=["GET"]),
            Route(base + "/stats", _route(model_stats), methods=["GET"]),
            Route(base + "/infer", _route(infer), methods=["POST"]),
        )
    ),
    Route("/v2/{rest:path}", _route(no_route), methods=METHODS),
]
APP = Starlette(routes=ROUTES, exception_handlers={HTTPException: http_error})

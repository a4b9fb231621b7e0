"""Every place dlzoo relies on BentoML's internals, checked on the version in ``CHECKED_ON``.

tests/test_bentoml_compat.py fails on any other BentoML version: re-check each item below against
the new version's source, then add it to ``CHECKED_ON`` (pyproject.toml and bentofile.yaml pin it).

1. ``Upload``: a file parameter held in memory. BentoML marks a parameter as a multipart file part
   when its type is a ``PurePath`` subclass and swaps in its temporary-file validator only for the
   built-in path classes; a ``pathlib.Path`` would make it write every upload to disk and back.
2. ``UploadOnlyMultipartSerde`` replaces the private ``_bentoml_impl.serde.MultipartSerde``, which
   downloads any URL given as a file field's value (a request the client chooses the target of)
   and answers a binary value in a text field with a 500.
3. ``fix_media_types``: BentoML derives each response's media type from the output schema by
   building a pydantic TypeAdapter on every response (``IOMixin.mime_type``); it depends on the
   type alone, so it is computed once and stored where BentoML looks first (``media_type``).
4. ``GetAsPost``: BentoML routes every API as POST; ``GET /models`` is rewritten to a POST.
5. ``cpu_quota``: a container's CPU quota as BentoML reads it (``_internal.resource.CpuResource``).
6. ``metric_totals``: BentoML runs ``prometheus_client`` in multiprocess mode (each process writes
   its metrics under ``PROMETHEUS_MULTIPROC_DIR``, which it sets); /metrics adds them up with
   ``MultiProcessCollector``, and so does this, for the V2 statistics (service/graphs.py).
7. ``install_error_answers``: ``ServiceAppFactory.api_endpoint_wrapper`` answers a client error as
   a JSON *list* of one ``{"error"}`` (a one-element tuple), every 503 with a generic message and
   no ``Retry-After``, and logs each client error with its traceback. ``api_endpoint`` (what the
   wrapper calls) is wrapped to answer them itself as one object, ``service.errors.error_body``.
8. ``install_request_timeout``: BentoML's ``TimeoutMiddleware`` (``traffic.timeout``) schedules a
   timer per request with ``loop.call_later(timeout, ...)`` and never cancels it once the answer
   has started, so every request's timer, its future and the context copied with it (the
   request's OpenTelemetry span and BentoML's trace ids) stay in the event loop for
   ``timeout`` seconds: 3,600 in the Inference service, which grew by every internal call
   (load_tests/FINDINGS.md). ``CancellingTimeout`` is the same middleware with its timer
   cancelled as soon as the answer starts or the request ends; it replaces the class where
   ``BaseAppFactory.middlewares`` imports it from.
9. ``stop_listening``: a service's workers share one listening socket, which BentoML's worker
   script takes as ``--fd N`` on its command line; uvicorn closes only its own copy on SIGTERM.
10. ``install_outermost``: ``ServiceAppFactory.middlewares`` puts BentoML's own middlewares
   (traffic metrics, OpenTelemetry, the access log, the timeout) before a service's
   ``add_asgi_middleware`` ones; the property is wrapped to put one of ours before them all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import typing as t
from collections import defaultdict
from pathlib import PurePosixPath

from _bentoml_impl import serde as _serde
from bentoml._internal.server.http import traffic as _traffic
from pydantic_core import PydanticCustomError, core_schema
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse

from service.errors import BadRequest, ServiceUnavailableError, error_response

CHECKED_ON = ("1.4.40",)
MAX_FORM_FIELDS = 32


class Upload(PurePosixPath):
    """An uploaded file, held in memory: ``name`` is the client's file name, ``data`` the bytes.

    Still a file part for BentoML (form parsing, OpenAPI), and validates to the bytes themselves
    (item 1 above). Starlette's parser keeps parts up to 1 MB in memory."""

    data: bytes

    @classmethod
    def of(cls, data: bytes, filename: str | None = None) -> Upload:
        upload = cls(PurePosixPath(filename or "upload").name or "upload")
        upload.data = data
        return upload

    @classmethod
    def _validate(cls, value: t.Any) -> Upload:
        if isinstance(value, Upload):
            return value
        if isinstance(value, UploadFile):
            value.file.seek(0)
            return cls.of(value.file.read(), value.filename)
        if isinstance(value, (bytes, bytearray)):
            return cls.of(bytes(value))
        raise PydanticCustomError("upload", "expected an uploaded file")

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler):
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda u: u.data),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema, handler):
        return {"type": "file", "format": "binary"}  # what BentoML writes for its own file fields


class UploadOnlyMultipartSerde(_serde.MultipartSerde):
    """Forms whose file fields take uploaded files only; every malformed form is a 400."""

    async def parse_request(self, request, cls):
        try:
            form = await request.form(max_files=4, max_fields=MAX_FORM_FIELDS)
        except Exception as exc:  # starlette raises its own errors for malformed bodies
            raise BadRequest(f"malformed form body: {exc}") from None
        file_fields = set(getattr(cls, "multipart_fields", ()))
        known = set(cls.model_fields)
        data: dict[str, t.Any] = {}
        for key in form:
            if key not in known:
                raise BadRequest(f"{key}: unknown field; allowed: {', '.join(sorted(known))}")
            values = form.getlist(key)
            if key in file_fields:
                if not all(isinstance(v, UploadFile) for v in values):
                    raise BadRequest(
                        f"{key}: upload the file itself (multipart file part); "
                        "URLs and text values are not accepted"
                    )
                data[key] = values[0] if len(values) == 1 else values
                continue
            value = values[-1]
            if isinstance(value, UploadFile):
                raw = await value.read()
                try:
                    value = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest(f"{key}: expected a text value, got binary data") from None
            try:
                data[key] = json.loads(value)
            except (json.JSONDecodeError, TypeError):
                data[key] = value
        return cls.model_validate(data)


def install_multipart() -> None:
    for media_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        t.cast(dict, _serde.ALL_SERDE)[media_type] = UploadOnlyMultipartSerde


def fix_media_types(service) -> None:
    """Each API's response media type, worked out once (item 3 above)."""
    for method in service.apis.values():
        spec = method.output_spec
        if spec.media_type is None:
            spec.media_type = spec.mime_type()


class GetAsPost:
    """ASGI middleware: ``GET`` on ``paths`` is answered as ``POST`` with an empty JSON body."""

    def __init__(self, app, paths: tuple[str, ...]):
        self.app, self.paths = app, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in self.paths:
            headers = [
                (k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")
            ]
            headers += [(b"content-type", b"application/json"), (b"content-length", b"2")]
            scope = {**scope, "method": "POST", "headers": headers}
            sent = False

            async def receive_empty():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": b"{}", "more_body": False}
                return await receive()

            return await self.app(scope, receive_empty, send)
        if scope["type"] == "http" and scope["path"] in self.paths:
            return await self.app(scope, receive, self._allow_get(send))
        return await self.app(scope, receive, send)

    @staticmethod
    def _allow_get(send):
        """A 405 on one of the paths says GET is allowed too."""

        async def allowing(message):
            if message["type"] == "http.response.start" and message["status"] == 405:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", b"GET, POST")]}
            await send(message)

        return allowing


def cpu_quota() -> float | None:
    """The CPUs a container's quota (cgroup v1 or v2) allows, as BentoML reads it, or None."""
    try:
        from bentoml._internal.resource import CpuResource

        return float(CpuResource.from_system())
    except Exception:  # internal to BentoML: without it, the caller falls back to the affinity mask
        return None


def metric_totals(prefix: str = "dlzoo_") -> dict[str, dict[str, float]]:
    """The service's own metrics added up over every process of the server (item 6), per
    ``model`` label: ``{model: {"<sample>[/<stage>]": value}}``, summed over the other labels
    (gauges: their largest value). Outside a server: this process's."""
    import prometheus_client
    from prometheus_client import multiprocess

    registry = prometheus_client.CollectorRegistry()
    try:
        multiprocess.MultiProcessCollector(registry)
    except ValueError:  # PROMETHEUS_MULTIPROC_DIR unset: not under bentoml serve
        registry = prometheus_client.REGISTRY
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in registry.collect():
        if not family.name.startswith(prefix):
            continue
        for s in family.samples:
            model = s.labels.get("model")
            if model is None or s.name.endswith(("_bucket", "_created")):
                continue
            key = s.name + (f"/{s.labels['stage']}" if "stage" in s.labels else "")
            row = totals[model]
            row[key] = max(row[key], s.value) if family.type == "gauge" else row[key] + s.value
    return totals


def install_error_answers() -> None:
    """Every error an API raises for a client answered as ``{"error": ...}`` (item 7): pydantic's
    validation errors (400, each field named, BentoML's ``detail`` kept), ours and BentoML's own
    4xx, and our 503s (``Retry-After``). Anything else stays BentoML's generic 500."""
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    endpoint = ServiceAppFactory.api_endpoint
    if getattr(endpoint, "dlzoo_errors", False):
        return

    async def api_endpoint(self, name, request):
        try:
            return await endpoint(self, name, request)
        except ValidationError as exc:
            errors = exc.errors(include_context=False, include_input=False, include_url=False)
            fields = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:8]
            )
            return error_response(400, fields, detail=errors)
        except BentoMLException as exc:
            status = exc.error_code.value
            if status >= 500 and not isinstance(exc, ServiceUnavailableError):
                raise
            return error_response(status, str(exc))

    api_endpoint.dlzoo_errors = True
    ServiceAppFactory.api_endpoint = api_endpoint


class CancellingTimeout(_traffic.TimeoutMiddleware):
    """BentoML's request timeout (a 504 if the answer has not started within ``timeout``), with
    its timer cancelled once the answer starts or the request ends (item 8)."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def started(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
                timer.cancel()
            await send(message)

        answer = asyncio.ensure_future(self.app(scope, receive, started))
        try:
            await waiter
        except TimeoutError:
            if answer.cancel():
                late = f"Not able to process the request in {self.timeout} seconds"
                await JSONResponse({"error": late}, status_code=504)(scope, receive, send)
        else:
            await answer
        finally:
            timer.cancel()


def install_request_timeout() -> None:
    """Every BentoML app built after this uses :class:`CancellingTimeout` (item 8)."""
    _traffic.TimeoutMiddleware = CancellingTimeout


def stop_listening() -> None:
    """Refuse new connections at once in every worker of this service (item 9): shutting the shared
    listening socket down takes it out of the listening state for all of them, and connections
    not yet accepted are reset (their requests never started)."""
    args = sys.argv
    try:
        fd = int(args[args.index("--fd") + 1])
    except (ValueError, IndexError):  # not a BentoML worker: nothing shared to stop
        return
    try:
        with socket.socket(fileno=os.dup(fd)) as listener:
            listener.shutdown(socket.SHUT_RD)
    except OSError as exc:  # already shut by another worker, or not a socket
        logging.getLogger("dlzoo.drain").info("listening socket: %s", exc)


def install_outermost(service_name: str, middleware, **options) -> None:
    """``middleware`` first of all in ``service_name``'s app (item 10): what it answers by itself
    costs nothing of BentoML's per-request work."""
    from _bentoml_impl.server.app import ServiceAppFactory
    from starlette.middleware import Middleware

    inner = ServiceAppFactory.middlewares.fget

    def middlewares(self):
        stack = inner(self)
        if self.service.name == service_name:
            stack = [Middleware(middleware, **options), *stack]
        return stack

    ServiceAppFactory.middlewares = property(middlewares)

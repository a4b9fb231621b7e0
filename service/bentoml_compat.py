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
8. ``install_request_timeout``: BentoML's ``TimeoutMiddleware`` (``traffic.timeout``) schedules a
   timer per request with ``loop.call_later(timeout, ...)`` and never cancels it once the answer
   has started, so every request's timer, its future and the context copied with it (the
   request's OpenTelemetry span and BentoML's trace ids) stay in the event loop for
   ``timeout`` seconds: 3,600 in the Inference service, which grew by every internal call
   (load_tests/FINDINGS.md). ``CancellingTimeout`` is the same middleware with its timer
   cancelled as soon as the answer starts or the request ends; it replaces the class where
   ``BaseAppFactory.middlewares`` imports it from.
"""

from __future__ import annotations

import asyncio
import json
import typing as t
from collections import defaultdict
from pathlib import PurePosixPath

from _bentoml_impl import serde as _serde
from bentoml._internal.server.http import traffic as _traffic
from pydantic_core import PydanticCustomError, core_schema
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse

from service.errors import BadRequest

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
        return await self.app(scope, receive, send)


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

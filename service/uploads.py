"""Multipart uploads without BentoML's two surprises, and an early 413.

BentoML 1.4's multipart parser (``_bentoml_impl.serde.MultipartSerde``) downloads any URL given as
the value of a file field (a server-side request the client chooses), and answers a binary value
in a plain form field with a 500 (it tries ``json.loads`` on it). We register a parser for the same
media types that accepts only uploaded files in file fields and answers every malformed form with
a 400 naming the field. It subclasses BentoML's parser and replaces only ``parse_request``.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import PurePosixPath

from _bentoml_impl import serde as _serde
from pydantic_core import PydanticCustomError, core_schema
from starlette.datastructures import UploadFile

from service.errors import BadRequest, PayloadTooLarge

MAX_FIELDS = 32


class Upload(PurePosixPath):
    """An uploaded file, held in memory: ``name`` is the client's file name, ``data`` the bytes.

    A ``pathlib.Path`` parameter makes BentoML write every upload to a temporary file that the
    endpoint then reads back and BentoML deletes: under load that round trip was ~20% of the
    front's CPU (py-spy, 32 clients classifying). BentoML marks a parameter as a multipart file
    part when its type is a ``PurePath`` subclass, and only swaps in its temporary-file validator
    for the built-in path classes, so this subclass is still a file part (form parsing, OpenAPI)
    and validates to the bytes themselves. Starlette's parser keeps parts up to 1 MB in memory.
    """

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
    def __get_pydantic_core_schema__(cls, source, handler):  # noqa: ANN001, ANN206 - pydantic's hook
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(lambda u: u.data))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema, handler):  # noqa: ANN001, ANN206 - pydantic's hook
        return {"type": "file", "format": "binary"}  # what BentoML writes for its own file fields


class UploadOnlyMultipartSerde(_serde.MultipartSerde):
    async def parse_request(self, request, cls):  # noqa: ANN001 - BentoML's signature
        try:
            form = await request.form(max_files=4, max_fields=MAX_FIELDS)
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
                    raise BadRequest(f"{key}: upload the file itself (multipart file part); "
                                     "URLs and text values are not accepted")
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


def install() -> None:
    for media_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        t.cast(dict, _serde.ALL_SERDE)[media_type] = UploadOnlyMultipartSerde


class BodyLimit:
    """ASGI middleware: a body whose Content-Length is over ``limit`` gets 413 before it is read."""

    def __init__(self, app, limit: int):  # noqa: ANN001
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.limit:
                body = json.dumps([{"error": f"request body of {int(length)} bytes is over the limit "
                                             f"of {self.limit} bytes"}]).encode()
                await send({"type": "http.response.start", "status": PayloadTooLarge.error_code.value,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

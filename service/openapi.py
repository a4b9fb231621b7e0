"""The OpenAPI document at /docs.json (and the Swagger UI at /): BentoML's, made truthful.

BentoML declares 400, 404 and 500 with its own error bodies on every API, POST only, and each
event stream as one string. The service answers every error with one body (``errors.error_body``),
can answer 401, 413, 415, 422 and 503 too, takes ``GET /models`` and streams typed events. This
rewrites BentoML's document to say so: every error status an operation can give with the one
``Error`` schema (``Retry-After`` on 503, ``WWW-Authenticate`` on 401), each Server-Sent Event of
/generate_stream with its own schema, and the bearer token when one is required. Checked by
schemathesis in tests/test_openapi.py.
"""

from __future__ import annotations

import json
from typing import Any

from service.events import STREAM_EVENTS

ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "description": "every error answer: what went wrong, naming the field or the limit",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "detail": {
            "type": "array",
            "description": "a request that does not fit the API's fields: one entry per field",
            "items": {"type": "object"},
        },
    },
}
REASONS = {
    400: "a malformed request; the message names the field",
    401: "the API token is missing or wrong (DLZOO_API_TOKEN)",
    404: "no such model or version (or /admin/reload not enabled)",
    413: "the body or the image is over the limit (DLZOO_MAX_UPLOAD_BYTES, DLZOO_MAX_PIXELS)",
    415: "not an image in an allowed format, or a media type the API does not take",
    422: "the model does not do what this API needs, or cannot take this input",
    503: "overloaded (DLZOO_MAX_QUEUE, DLZOO_MAX_LATENCY_MS) or the model failed to load; "
    "try again after Retry-After",
}
HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    503: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}},
}
# Errors of an API that runs a model; the others say theirs.
MODEL_ERRORS = (400, 404, 413, 415, 422, 503)
ERRORS = {"/models": (400, 413, 415), "/admin/reload": (400, 401, 404, 413, 415)}
INFRA = ("/healthz", "/livez", "/readyz", "/metrics")
STREAMS = ("/generate_stream",)
REF = "#/components/schemas/"


def _error(status: int) -> dict[str, Any]:
    response = {
        "description": REASONS[status],
        "content": {"application/json": {"schema": {"$ref": REF + "Error"}}},
    }
    if status in HEADERS:
        response["headers"] = HEADERS[status]
    return response


def _event_schema(name: str | None, model) -> dict[str, Any]:
    """One Server-Sent Event: its name (none for tokens) and its data, JSON of ``model``."""
    event = {"type": "string", "enum": [name]} if name else {"type": "string", "enum": ["message"]}
    return {
        "type": "object",
        "required": ["event", "data"] if name else ["data"],
        "properties": {
            "event": event,
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": REF + model.__name__},
            },
        },
    }


def _request(operation: dict[str, Any], fields: dict[str, Any]) -> None:
    """The request body as the API takes it: required if a field is, no unknown fields, and the
    fields that take null saying so (BentoML's flattening keeps only the first of ``anyOf``)."""
    body = operation.get("requestBody")
    if not body:
        return
    for media in body["content"].values():
        schema = media["schema"]
        body["required"] = bool(schema.get("required"))  # all defaults: an empty body will do
        if schema.get("properties"):  # an API that takes no fields ignores its body
            schema["additionalProperties"] = False
        for name, prop in schema.get("properties", {}).items():
            options = fields.get(name, {}).get("anyOf", [])
            if {"type": "null"} in options:
                prop["nullable"] = True


def _answers(operation: dict[str, Any], fields: dict[str, Any]) -> None:
    """An API with ``format: json`` answers JSON instead of its image."""
    ok = operation["responses"]["200"]
    if "json" in fields.get("format", {}).get("enum", ()):
        ok["content"]["application/json"] = {"schema": {"type": "object"}}


# Swagger UI (at /) shows the description as Markdown above the endpoints.
PLAYGROUND = (
    "**[Open the playground: every model of the zoo at work](./ui)** "
    "(`/ui`: draw a digit, watch a language model write, slide through a latent space)."
)


def document(service, open_paths: tuple[str, ...] | None) -> dict[str, Any]:
    """``service``'s OpenAPI document made truthful; ``open_paths``: the paths that need no token
    when the service requires one (None: no token required)."""
    doc = service.openapi_spec.asdict()
    info = doc.setdefault("info", {})
    info["description"] = "\n\n".join(filter(None, [info.get("description"), PLAYGROUND]))
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse"):
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    for model in STREAM_EVENTS.values():
        schema = model.model_json_schema(ref_template=REF + "{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    fields = {
        api.route: api.input_spec.model_json_schema().get("properties", {})
        for api in service.apis.values()
    }
    for path, item in doc["paths"].items():
        if path == "/readyz":
            item["get"]["responses"]["503"] = {"description": "not ready, or shutting down"}
        if path in INFRA:
            continue
        for operation in item.values():
            responses = operation["responses"]
            ok = responses.get("200") or responses[200]
            statuses = ERRORS.get(path, MODEL_ERRORS)
            operation["responses"] = {"200": ok, **{str(s): _error(s) for s in statuses}}
            _request(operation, fields.get(path, {}))
            _answers(operation, fields.get(path, {}))
        if path in STREAMS:
            stream = item["post"]["responses"]["200"]["content"]["text/event-stream"]
            stream["schema"] = {
                "anyOf": [_event_schema(n, m) for n, m in STREAM_EVENTS.items()],
            }
    listing = doc["paths"].get("/models")
    if listing and "get" not in listing:  # GET is how to read it (bentoml_compat.GetAsPost)
        listing["get"] = {k: v for k, v in listing["post"].items() if k != "requestBody"}
        listing["get"]["operationId"] = listing["post"].get("operationId", "models") + "_get"
    if open_paths is not None:
        security = doc["components"].setdefault("securitySchemes", {})
        security["bearer"] = {"type": "http", "scheme": "bearer"}
        for path, item in doc["paths"].items():
            if path in open_paths:
                continue
            for operation in item.values():
                operation["security"] = [{"bearer": []}]
                operation["responses"].setdefault("401", _error(401))
    return doc


class OpenAPIDocument:
    """ASGI middleware: ``GET /docs.json`` answers :func:`document` of ``service``'s own, built on
    first use (BentoML builds its document from the service object, which must be complete)."""

    def __init__(self, app, service, open_paths: tuple[str, ...] | None):
        self.app, self.service, self.open_paths = app, service, open_paths
        self.body: bytes | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/docs.json" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        if self.body is None:
            self.body = json.dumps(document(self.service, self.open_paths)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})

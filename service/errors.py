"""Client errors: a mistake in a request, answered with a 4xx whose message names the problem.

Every class here subclasses ``BentoMLException`` with its own ``error_code`` (its HTTP status).
BentoML's client rebuilds an exception from a status with the first class defined for it; 413 and
415 have none of BentoML's, so ``PayloadTooLarge`` and ``UnsupportedMediaType`` become those.
Classes keep BentoML's ``__init__(message, *, error_code=None)`` signature so that still works.
Outside the server (training-side tools reuse :mod:`service.imaging`) BentoML may be absent: the
classes then derive from a stand-in with the same attributes.

Every error a client gets is one JSON object, ``error_body``: ``{"error": "<message>"}`` (plus
pydantic's ``detail`` list for a body that does not fit an API's signature), a 503 with
``Retry-After``. BentoML itself would answer a list of one object and hide every 5xx message;
``bentoml_compat.install_error_answers`` makes its APIs answer ``error_response`` instead, and the
middlewares and the V2 routes build the same body.

Between the services, a client error travels as a :class:`Failure` answer (status and message)
that the front raises again with :func:`unwrap`: BentoML's own client would rebuild only its own
exception classes, and a batch must answer each of its requests on its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any

try:
    from bentoml.exceptions import BentoMLException as _Base
except ImportError:  # the training image has no BentoML; the types must still work there

    class _Base(Exception):  # type: ignore[no-redef]
        error_code = HTTPStatus.INTERNAL_SERVER_ERROR

        def __init__(self, message: str, *, error_code: HTTPStatus | None = None):
            self.message = message
            if error_code is not None:
                self.error_code = error_code
            super().__init__(message)


__all__ = [
    "BadRequest",
    "ClientError",
    "Failure",
    "NotFoundError",
    "PayloadTooLarge",
    "ServiceUnavailableError",
    "Unprocessable",
    "UnsupportedMediaType",
    "error_for_status",
    "unwrap",
]


class _Answered(_Base):
    """An error answered with the HTTP status ``status`` (``error_code`` as an int)."""

    @property
    def status(self) -> int:
        return int(self.error_code)


class ClientError(_Answered):
    """A request the client must change."""

    error_code = HTTPStatus.BAD_REQUEST


class BadRequest(ClientError):
    """400: a malformed value (a broken image, a field out of range)."""

    error_code = HTTPStatus.BAD_REQUEST


class NotFoundError(ClientError):
    """404: an unknown model or version."""

    error_code = HTTPStatus.NOT_FOUND


class PayloadTooLarge(ClientError):
    """413: an upload over the byte limit, or an image over the pixel limit."""

    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(ClientError):
    """415: an upload that is not an image in one of the allowed formats."""

    error_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class Unprocessable(ClientError):
    """422: well-formed but unusable for this model (e.g. a task the model does not do)."""

    error_code = HTTPStatus.UNPROCESSABLE_ENTITY


class ServiceUnavailableError(_Answered):
    """503: the model asked for exists but is not serving (it failed to load), or the service is
    overloaded. Not a client error; answered with its message and ``Retry-After``."""

    error_code = HTTPStatus.SERVICE_UNAVAILABLE


_BY_STATUS = {
    int(c.error_code): c
    for c in (BadRequest, NotFoundError, PayloadTooLarge, UnsupportedMediaType, Unprocessable)
}


def error_body(message: str, detail: list | None = None) -> dict[str, Any]:
    """The one error body of every endpoint: ``{"error": message}`` (``detail``: pydantic's list of
    field errors, for a request that does not fit an API's signature)."""
    return {"error": message} if detail is None else {"error": message, "detail": detail}


def error_response(status: int, message: str, detail: list | None = None):
    """An error answered as JSON; a 503 says when to try again."""
    from starlette.responses import JSONResponse

    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(error_body(message, detail), status_code=status, headers=headers)


def error_for_status(status: int, message: str) -> _Answered:
    """Rebuild the error another process reported as (status, message)."""
    cls = _BY_STATUS.get(int(status))
    return cls(message) if cls is not None else ServiceUnavailableError(message)


@dataclass(frozen=True)
class Failure:
    """A request's failure as it crosses from the Inference service to the front: an answer
    ``{"failure": {"status", "error"}}`` instead of the result; the front raises it again."""

    status: int
    error: str

    @classmethod
    def of(cls, exc: _Answered) -> Failure:
        return cls(exc.status, str(exc))

    def answer(self) -> dict[str, Any]:
        return {"failure": asdict(self)}


def unwrap(answer: dict[str, Any]) -> dict[str, Any]:
    """The Inference service's answer, or its failure raised as the HTTP error it stands for."""
    failure = answer.get("failure")
    if failure is not None:
        raise error_for_status(failure["status"], failure["error"])
    return answer

"""Client errors: a mistake in a request, answered with a 4xx whose message names the problem.

How BentoML 1.4 (checked on the versions in ``bentoml_compat.CHECKED_ON``) turns an exception
raised inside an API into a response, from
``_bentoml_impl/server/app.py`` (``ServiceAppFactory.api_endpoint_wrapper``) and
``bentoml/exceptions.py``:

- ``pydantic.ValidationError`` (a request that does not fit the API's signature) -> 400 with
  ``{"error": "...", "detail": [...]}``.
- ``bentoml.exceptions.BentoMLException`` or a subclass -> status ``exc.error_code`` (an
  ``HTTPStatus``; a class attribute, or per instance via ``error_code=``). Below 500 the body is
  ``[{"error": str(exc)}]``: a JSON *list* holding one object (the server builds a one-element
  tuple). 401/403 bodies say only "Authorization error"; 5xx bodies hide the message ("An
  unexpected error has occurred, please check the server log.").
- Any other exception -> 500 with that same generic body.
- Every one of these is logged by the server at ERROR level with its traceback, client errors
  included.
- ``BentoMLException.__init_subclass__`` records the first class defined for each ``error_code``
  in ``BentoMLException.error_mapping``. BentoML's *client* uses that table to rebuild an exception
  from a response's status. 400 (``InvalidArgument``), 404 (``NotFound``), 422
  (``UnprocessableEntity``) and 503 (``ServiceUnavailable``) are already taken, so ours do not
  replace them; 413 and 415 have no BentoML class, so ``PayloadTooLarge`` and
  ``UnsupportedMediaType`` become the classes a BentoML client raises for those statuses.
  Classes here keep BentoML's ``__init__(message, *, error_code=None)`` signature so that still
  works.

Checked against a running ``bentoml serve``: raising ``PayloadTooLarge``,
``UnsupportedMediaType`` and ``BadRequest`` in an API answered 413, 415 and 400 with
``[{"error": "<message>"}]``; ``ServiceUnavailableError`` answered 503 with the generic body.

So every class here subclasses ``BentoMLException`` with its own ``error_code``: BentoML renders
the status and the message itself and the HTTP layer needs no mapping of its own. Outside the
server (tests, training-side tools that reuse :mod:`service.imaging`) BentoML may be absent: the
classes then derive from a stand-in with the same attributes, and nothing else changes.

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
    """503: the model asked for exists but is not serving (it failed to load).

    Not a client error. Beware: BentoML replaces the body of every 5xx with a generic message, so
    this message reaches the server log, not the client; ``/models`` is where clients see why.
    """

    error_code = HTTPStatus.SERVICE_UNAVAILABLE


_BY_STATUS = {
    int(c.error_code): c
    for c in (BadRequest, NotFoundError, PayloadTooLarge, UnsupportedMediaType, Unprocessable)
}


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

"""Admission control: each HTTP worker lets at most ``limit`` model requests wait for an answer.

A request that runs a model counts from its arrival until its answer begins (a token stream's
answer begins with its first event, so a stream stops counting once it flows). One more is refused
at once with 503 and ``Retry-After``, before its body is read: under overload the requests taken
keep a bounded latency, and the rest learn in milliseconds to try again (or elsewhere) instead of
waiting in a queue they cannot get through in time. The check is at the door, not per model after
the body is parsed, because on a front worker the queue is its own event loop and CPU: reading and
parsing a refused request's body would cost a good part of serving it (load_tests/FINDINGS.md).
"""

from __future__ import annotations

import json

from service.errors import error_body
from service.metrics import REFUSED


def runs_a_model(path: str, apis: frozenset[str]) -> bool:
    """Whether a request to ``path`` runs a model: one of ``apis``, or a V2 inference."""
    return path in apis or (path.startswith("/v2/models/") and path.endswith("/infer"))


class Admission:
    """ASGI middleware: at most ``limit`` requests to ``apis`` (and V2 inferences) waiting for their
    answer to begin in this worker; the next one gets 503 + ``Retry-After: 1`` at once."""

    def __init__(self, app, limit: int, apis: tuple[str, ...]):
        self.app, self.limit, self.apis = app, limit, frozenset(apis)
        self.waiting = 0
        message = (
            f"overloaded: this worker already has {limit} requests waiting for an answer "
            "(DLZOO_MAX_QUEUE); try again shortly"
        )
        self.refusal = json.dumps(error_body(message)).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not runs_a_model(scope["path"], self.apis):
            return await self.app(scope, receive, send)
        if self.waiting >= self.limit:
            REFUSED.labels(path="/v2" if scope["path"].startswith("/v2/") else scope["path"]).inc()
            return await self._refuse(send)
        self.waiting += 1
        begun = False

        async def counting_send(message):
            nonlocal begun
            if not begun and message["type"] == "http.response.start":
                begun = True
                self.waiting -= 1
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if not begun:
                self.waiting -= 1

    async def _refuse(self, send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.refusal)).encode()),
            (b"retry-after", b"1"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": self.refusal})

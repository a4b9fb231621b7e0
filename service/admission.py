"""Admission control: an HTTP worker takes a model request only if it can answer it in time.

A request that runs a model waits from its arrival until its answer begins (a token stream's
answer begins with its first event, so a stream stops waiting once it flows). A new one is refused
at once with 503 and ``Retry-After``, before its body is read, while the oldest request still
waiting has waited the latency bound (it would wait as long), or while the worker already has its
most waiting (a cap that keeps the worker's event loop responsive). Under overload the requests
taken keep a bounded latency, and the rest learn in milliseconds to try again, or elsewhere.
The check is at the door, not per model after the body is parsed: on a front worker the queue is
its own event loop, and reading and parsing a refused request's body would cost a good part of
serving it (load_tests/FINDINGS.md). The middleware goes before BentoML's own for the same reason.
"""

from __future__ import annotations

import json
import time

from service.errors import error_body
from service.metrics import REFUSED


def runs_a_model(path: str, apis: frozenset[str]) -> bool:
    """Whether a request to ``path`` runs a model: one of ``apis``, or a V2 inference."""
    return path in apis or (path.startswith("/v2/models/") and path.endswith("/infer"))


class Admission:
    """ASGI middleware: a request to ``apis`` (or a V2 inference) is refused at once with 503 +
    ``Retry-After: 1`` when ``limit`` requests are already waiting for their answer to begin in
    this worker, or when the oldest of them has waited ``max_wait`` seconds (it would wait as long).
    ``long_apis`` answer only at their end (a whole generation): counted, but not aged."""

    def __init__(
        self,
        app,
        limit: int,
        max_wait: float,
        apis: tuple[str, ...],
        long_apis: tuple[str, ...] = (),
    ):
        self.app, self.limit, self.max_wait = app, limit, max_wait
        self.apis, self.long_apis = frozenset(apis), frozenset(long_apis)
        self.waiting = 0
        self.arrivals: dict[int, float] = {}  # request -> arrival, oldest first (insertion order)
        self._next = 0

    def oldest_wait(self, now: float) -> float:
        """How long the oldest request still waiting (long ones aside) has waited, in seconds."""
        return now - next(iter(self.arrivals.values()), now)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not runs_a_model(scope["path"], self.apis):
            return await self.app(scope, receive, send)
        now = time.monotonic()
        if self.waiting >= self.limit:
            return await self._refuse(
                scope,
                send,
                f"this worker already has {self.limit} requests waiting for an "
                "answer (DLZOO_MAX_QUEUE)",
            )
        if self.oldest_wait(now) > self.max_wait:
            return await self._refuse(
                scope,
                send,
                f"the oldest request waiting in this worker has waited "
                f"{self.oldest_wait(now):.2f} s, over DLZOO_MAX_LATENCY_MS",
            )
        key, self._next = self._next, self._next + 1
        self.waiting += 1
        if scope["path"] not in self.long_apis:
            self.arrivals[key] = now
        begun = False

        def done_waiting() -> None:
            nonlocal begun
            begun = True
            self.waiting -= 1
            self.arrivals.pop(key, None)

        async def counting_send(message):
            if not begun and message["type"] == "http.response.start":
                done_waiting()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if not begun:
                done_waiting()

    async def _refuse(self, scope, send, why: str) -> None:
        REFUSED.labels(path="/v2" if scope["path"].startswith("/v2/") else scope["path"]).inc()
        body = json.dumps(error_body(f"overloaded: {why}; try again shortly")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

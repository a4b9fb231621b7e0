"""ASGI middlewares of the front: an early 413 for oversized bodies, and connection max-age.

``ConnectionMaxAge``: BentoML's HTTP workers share one listening socket and a worker serves every
request of the connections it accepted; a burst of new connections often lands on one worker while
another idles. Closing a keep-alive connection once it is ``max_age`` seconds old (its next response
says ``Connection: close``) makes clients reconnect now and then, so an uneven start evens out
within a few ``max_age``; by age rather than by request count, so that it evens out as fast under
heavy load as under light. The cost is one TCP handshake per connection per ``max_age``
(measurements in load_tests/FINDINGS.md).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict

from service.errors import PayloadTooLarge, error_body

MAX_TRACKED = 10_000  # connections remembered per worker; the oldest are forgotten first


class ConnectionMaxAge:
    """ASGI middleware: a connection's first response after it is ``max_age`` seconds old closes it
    (``max_age`` 0: never)."""

    def __init__(self, app, max_age: float):
        self.app, self.max_age = app, max_age
        # (client host, client port) -> when its first request came; ASGI does not say when a
        # connection closes, so entries of closed connections are dropped by age or by number.
        self.opened: OrderedDict[tuple, float] = OrderedDict()

    async def __call__(self, scope, receive, send):
        client = scope.get("client") if scope["type"] == "http" and self.max_age > 0 else None
        if client is None:
            return await self.app(scope, receive, send)
        key, now = tuple(client), time.monotonic()
        opened = self.opened.setdefault(key, now)
        if now - opened < self.max_age:
            while len(self.opened) > MAX_TRACKED:
                self.opened.popitem(last=False)
            return await self.app(scope, receive, send)
        del self.opened[key]  # a port the client reuses later starts afresh

        async def closing_send(message):
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return await self.app(scope, receive, closing_send)


class BodyLimit:
    """ASGI middleware: a body whose Content-Length is over ``limit`` gets 413 before it is read
    (a body without a Content-Length is left to the endpoint)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.limit:
                error = error_body(
                    f"request body of {int(length)} bytes is over the limit of {self.limit} bytes"
                )
                body = json.dumps(error).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": PayloadTooLarge.error_code.value,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

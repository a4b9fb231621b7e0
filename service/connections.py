"""Keep-alive connections are closed after some seconds, so that load spreads over workers.

BentoML runs its HTTP workers on one shared listening socket, and a worker serves every request of
the connections it accepted for as long as they stay open. When clients open their connections in a
burst (a connection pool warming up, a load balancer, a benchmark), one worker's event loop often
accepts all of them at once: measured here, 2 of 6 rounds of 32 clients put every connection on one
of the two front workers, which then served 345 req/s while the other sat idle, against ~600 req/s
when they spread (load_tests/FINDINGS.md). Closing a connection once it is ``max_age`` seconds old
(the response that finds it so says ``Connection: close``, and uvicorn closes it after sending)
makes clients reconnect now and then, and each new connection goes to whichever worker accepts it
first: an uneven start evens out within a few ``max_age``. By age rather than by request count
(nginx's ``keepalive_requests``) so that it evens out as fast under heavy load as under light: at
345 req/s over 32 connections, 100 requests per connection take 9 s, and with a limit of 100 the
split of 2 s rounds stayed as uneven as without; by age (2 s), 6 of 6 rounds of 10 s spread. The
cost is one TCP handshake per connection per ``max_age``.
"""

from __future__ import annotations

import time
from collections import OrderedDict

MAX_TRACKED = 10_000  # connections remembered per worker; the oldest are forgotten first


class ConnectionMaxAge:
    """ASGI middleware: a connection's first response after it is ``max_age`` seconds old closes it
    (``max_age`` 0: never)."""

    def __init__(self, app, max_age: float):  # noqa: ANN001 - an ASGI app
        self.app, self.max_age = app, max_age
        # (client host, client port) -> when its first request came; ASGI does not say when a
        # connection closes, so entries of closed connections are dropped by age or by number.
        self.opened: OrderedDict[tuple, float] = OrderedDict()

    async def __call__(self, scope, receive, send):  # noqa: ANN001
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

        async def closing_send(message):  # noqa: ANN001, ANN202
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return await self.app(scope, receive, closing_send)

"""Shutting down without dropping anyone: what each process does on SIGTERM.

BentoML's arbiter sends SIGTERM to every worker of both services at once and waits for them (its
graceful timeout is a day), and each worker's uvicorn then stops accepting connections of its own
and waits for the ones in flight. Left alone that is not enough: the listening socket stays open in
the arbiter, so new connections queue where nobody accepts them; a token stream runs as long as it
likes; and the Inference service may go while fronts still need it. So:

- a front worker (``DLZoo``) turns ``/readyz`` to 503, shuts the shared listening socket (new
  connections are refused at once, by every worker), lets uvicorn finish what is in flight, and
  after ``DLZOO_DRAIN_SECONDS`` ends the token streams still running with ``event: error``;
- the Inference worker keeps serving until no request is in flight there, the fronts' generation
  channels included (a front's channel closes when the front exits), at most
  ``DLZOO_DRAIN_SECONDS`` and a little more, then lets uvicorn finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("dlzoo.drain")

ExitServer = Callable[[], None]  # uvicorn's own SIGTERM handling: stop accepting, finish, exit


def on_sigterm(drain: Callable[[ExitServer], Awaitable[None]]) -> None:
    """On SIGTERM, run ``drain(exit_server)`` in this event loop, once.

    Call it from the running loop after uvicorn has installed its signal handlers (a BentoML
    ``on_startup`` hook runs then); ``exit_server`` calls the handler it replaces."""
    loop = asyncio.get_running_loop()
    uvicorn_handler = signal.getsignal(signal.SIGTERM)
    tasks: list[asyncio.Task] = []

    def exit_server() -> None:
        if callable(uvicorn_handler):
            uvicorn_handler(signal.SIGTERM, None)

    def begin() -> None:
        if not tasks:
            log.info("SIGTERM: draining")
            tasks.append(loop.create_task(drain(exit_server), name="dlzoo-drain"))

    signal.signal(signal.SIGTERM, lambda sig, frame: loop.call_soon_threadsafe(begin))


class InFlight:
    """ASGI middleware counting the HTTP requests in progress (streams until they end)."""

    count = 0  # one process, one count

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        InFlight.count += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            InFlight.count -= 1


async def until_idle(limit: float, settle: float = 1.0) -> None:
    """Wait until no request has been in flight for ``settle`` seconds, or ``limit`` seconds."""
    deadline = time.monotonic() + limit
    idle_since: float | None = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        if InFlight.count:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= settle:
            return
        await asyncio.sleep(0.1)
    log.warning("drain: %d requests still in flight after %.0f s", InFlight.count, limit)

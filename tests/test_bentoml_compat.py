"""service/bentoml_compat.py relies on BentoML internals: re-check it on a new version."""

from __future__ import annotations

import asyncio
import gc
import re
from pathlib import Path

import bentoml

from service.bentoml_compat import CHECKED_ON

ROOT = Path(__file__).resolve().parents[1]


def test_bentoml_is_a_version_the_workarounds_were_checked_on():
    assert bentoml.__version__ in CHECKED_ON, (
        f"BentoML {bentoml.__version__}: re-check each item of service/bentoml_compat.py against "
        f"its source, then add the version to CHECKED_ON (checked on {', '.join(CHECKED_ON)})"
    )


def test_the_pins_name_a_checked_version():
    for path in ("pyproject.toml", "bentofile.yaml"):
        pins = re.findall(r'"bentoml==([\d.]+)"', (ROOT / path).read_text())
        assert pins and set(pins) <= set(CHECKED_ON), (path, pins)


def _timer_leftovers(middleware_cls, requests: int) -> int:
    """Requests through BentoML's timeout middleware (3,600 s) on a plain asyncio loop; how many
    of their timers are still pending afterwards."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message):
        pass

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def run() -> int:
        middleware = middleware_cls(app, timeout=3600)
        for _ in range(requests):
            await middleware({"type": "http", "path": "/classify"}, receive, send)
        later = asyncio.get_running_loop().time() + 600
        gc.collect()
        return sum(
            1
            for h in gc.get_objects()
            if isinstance(h, asyncio.TimerHandle) and not h.cancelled() and h.when() > later
        )

    return asyncio.run(run())


def test_bentoml_timeout_middleware_keeps_every_request_until_its_timeout():
    """The cause of the memory each internal call left in the Inference process: without the fix,
    a timer per request stays in the loop for the whole timeout (load_tests/FINDINGS.md)."""
    from service.bentoml_compat import CancellingTimeout

    bentoml_own = CancellingTimeout.__mro__[1]
    assert _timer_leftovers(bentoml_own, 50) == 50
    assert _timer_leftovers(CancellingTimeout, 50) == 0


def test_the_cancelling_timeout_is_what_bentoml_builds_its_apps_with():
    from bentoml._internal.server.base_app import BaseAppFactory

    import service.inference  # noqa: F401  (installs it, in every process of the server)
    from service.bentoml_compat import CancellingTimeout

    class App(BaseAppFactory):
        name = "probe"

    assert [m.cls for m in App(timeout=60).middlewares] == [CancellingTimeout]


def test_the_cancelling_timeout_still_answers_504_when_nothing_starts_in_time():
    from service.bentoml_compat import CancellingTimeout

    sent = []

    async def never(scope, receive, send):
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    middleware = CancellingTimeout(never, timeout=0.01)
    asyncio.run(middleware({"type": "http", "path": "/"}, receive, send))
    assert sent[0]["status"] == 504
    assert b"0.01 seconds" in sent[1]["body"]

"""Admission control (service/admission.py): past DLZOO_MAX_QUEUE model requests waiting in a
worker, or behind one that has waited DLZOO_MAX_LATENCY_MS, the next is refused at once with 503 +
Retry-After; everyone else is served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from conftest import Server

from service.admission import Admission

DIGIT = (Path(__file__).resolve().parents[1] / "examples" / "digit.png").read_bytes()


def test_admission_lets_limit_wait_and_refuses_the_next_at_once():
    async def scenario():
        gate = asyncio.Event()

        async def app(scope, receive, send):  # answers when the gate opens; streams begin first
            if scope["path"] == "/generate_stream":
                await send({"type": "http.response.start", "status": 200, "headers": []})
            await gate.wait()
            if scope["path"] != "/generate_stream":
                await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        door = Admission(app, limit=2, max_wait=60, apis=("/classify", "/generate_stream"))

        async def call(path):
            sent = []

            async def send(message):
                sent.append(message)

            scope = {"type": "http", "path": path, "method": "POST", "headers": []}
            await door(scope, None, send)
            return sent[0]["status"], dict(sent[0]["headers"])

        stream = asyncio.create_task(call("/generate_stream"))  # flows: no longer waiting
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(call("/classify")) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert door.waiting == 2
        status, headers = await asyncio.wait_for(call("/classify"), 1)  # refused at once
        assert status == 503 and headers[b"retry-after"] == b"1"
        other = asyncio.create_task(call("/models"))  # not a model API: never refused
        await asyncio.sleep(0.01)
        assert not other.done()
        gate.set()
        assert [(await t)[0] for t in waiting] == [200, 200] and (await stream)[0] == 200
        assert (await other)[0] == 200
        assert door.waiting == 0

    asyncio.run(scenario())


def test_admission_refuses_while_the_oldest_waiting_request_is_late():
    async def scenario():
        gate = asyncio.Event()

        async def app(scope, receive, send):
            await gate.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        door = Admission(
            app, limit=100, max_wait=0.05, apis=("/classify", "/generate"), long_apis=("/generate",)
        )

        async def call(path):
            sent = []

            async def send(message):
                sent.append(message)

            await door({"type": "http", "path": path, "method": "POST", "headers": []}, None, send)
            return sent[0]["status"]

        generation = asyncio.create_task(call("/generate"))  # long: counted, never late
        await asyncio.sleep(0.1)
        early = asyncio.create_task(call("/classify"))
        await asyncio.sleep(0.01)
        assert door.waiting == 2 and not early.done()  # the generation's age does not count
        await asyncio.sleep(0.1)
        assert await asyncio.wait_for(call("/classify"), 1) == 503  # behind one 0.11 s late
        gate.set()
        assert (await early, await generation) == (200, 200)
        assert door.waiting == 0 and not door.arrivals
        assert door.oldest_wait(123.0) == 0.0

    asyncio.run(scenario())


async def _burst(url: str, count: int) -> list[httpx.Response]:
    files = {"image": ("d.png", DIGIT, "image/png")}
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        asks = [c.post("/classify", files=files, data={"model": "lenet5"}) for _ in range(count)]
        return await asyncio.gather(*asks)


def test_a_burst_past_the_queue_gets_fast_503s_and_the_rest_answers(model_repo):
    env = {"DLZOO_MAX_QUEUE": "2", "DLZOO_FRONT_WORKERS": "1"}  # the count bound, not the time
    with Server(model_repo, env=env) as srv:
        answers = asyncio.run(_burst(srv.url, 48))
        statuses = [r.status_code for r in answers]
        assert set(statuses) == {200, 503}, statuses
        for r in answers:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert "DLZOO_MAX_QUEUE" in r.json()["error"]
        files = {"image": ("d.png", DIGIT, "image/png")}
        assert httpx.post(srv.url + "/classify", files=files, timeout=60).status_code == 200
        metrics = httpx.get(srv.url + "/metrics").text
        refused = [
            line
            for line in metrics.splitlines()
            if line.startswith('dlzoo_refused_requests_total{path="/classify"}')
        ]
        assert refused and float(refused[0].split()[-1]) == statuses.count(503), refused

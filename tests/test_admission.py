"""Admission control (service/admission.py): past DLZOO_MAX_QUEUE requests of one model in a
worker, a request is refused at once with 503 + Retry-After; everyone else is served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from conftest import Server

from service.admission import Admission
from service.errors import Overloaded

DIGIT = (Path(__file__).resolve().parents[1] / "examples" / "digit.png").read_bytes()


def test_admission_holds_at_most_the_limit_per_model():
    admission = Admission(limit=2)
    with admission.admit("lenet5"), admission.admit("lenet5"):
        with pytest.raises(Overloaded, match="DLZOO_MAX_QUEUE") as refused:
            with admission.admit("lenet5"):
                pass
        assert refused.value.status == 503
        with admission.admit("mlp"):  # another model has its own places
            assert admission.active == {"lenet5": 2, "mlp": 1}
    assert not admission.active
    with pytest.raises(RuntimeError), admission.admit("lenet5"):  # a failure gives its place back
        raise RuntimeError
    assert not admission.active


async def _burst(url: str, count: int) -> list[httpx.Response]:
    files = {"image": ("d.png", DIGIT, "image/png")}
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        asks = [c.post("/classify", files=files, data={"model": "lenet5"}) for _ in range(count)]
        return await asyncio.gather(*asks)


def test_a_burst_past_the_queue_gets_fast_503s_and_the_rest_answers(model_repo):
    env = {"DLZOO_MAX_QUEUE": "2", "DLZOO_FRONT_WORKERS": "1"}
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
        refused = [line for line in metrics.splitlines() if "dlzoo_refused_requests_total{" in line]
        assert refused and float(refused[0].split()[-1]) == statuses.count(503), refused

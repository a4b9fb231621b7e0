"""SIGTERM drains (service/drain.py), against a real server signalled the way Kubernetes does it
(the `bentoml serve` process): new connections are refused at once, a token stream in flight
finishes, one still running after DLZOO_DRAIN_SECONDS ends with `event: error`, and it exits."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
from conftest import Server

LONG = {"model": "gru", "max_new_tokens": 2000, "seed": 1}  # ~1 s or more: one step per token


class Stream(threading.Thread):
    """A /generate_stream read to its end in a thread; ``started`` once its start event is in."""

    def __init__(self, url: str, body: dict):
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.started = threading.Event()
        self.events: list[tuple[str, dict]] = []
        self.error: Exception | None = None

    def run(self) -> None:
        kind = "message"
        try:
            url = self.url + "/generate_stream"
            with httpx.stream("POST", url, json=self.body, timeout=60) as r:
                assert r.status_code == 200, r.read()
                for line in r.iter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        self.events.append((kind, json.loads(line[5:])))
                        self.started.set()
                        kind = "message"
        except Exception as exc:  # reported by the test
            self.error = exc
            self.started.set()


def sigterm_during_a_stream(srv) -> tuple[Stream, float]:
    stream = Stream(srv.url, LONG)
    stream.start()
    assert stream.started.wait(60) and stream.error is None, stream.error
    os.kill(srv.proc.pid, signal.SIGTERM)
    signalled = time.monotonic()
    refused = None
    while time.monotonic() - signalled < 5:  # new connections: refused, at once
        try:
            httpx.get(srv.url + "/readyz", timeout=1)
        except httpx.ConnectError:
            refused = time.monotonic() - signalled
            break
        time.sleep(0.05)
    assert refused is not None and refused < 2, refused
    stream.join(60)
    assert stream.error is None, stream.error
    return stream, signalled


@pytest.mark.parametrize("drain_seconds", ["30", "0.3"])
def test_sigterm_drains_streams_then_exits(zoo_repo, drain_seconds):
    env = {"DLZOO_DRAIN_SECONDS": drain_seconds, "DLZOO_FRONT_WORKERS": "1"}
    with Server(zoo_repo, env=env) as srv:
        stream, signalled = sigterm_during_a_stream(srv)
        kinds = [kind for kind, _ in stream.events]
        last_kind, last = stream.events[-1]
        if drain_seconds == "30":  # the stream in flight runs to its end
            assert last_kind == "done" and last["tokens"] == LONG["max_new_tokens"], last
        else:  # cut at the deadline, and told why
            assert last_kind == "error" and last["status"] == 503, last
            assert "shutting down" in last["detail"]
            assert "done" not in kinds
        assert kinds.count("message") >= 1
        srv.proc.wait(timeout=60)  # every process gone
        assert time.monotonic() - signalled < float(drain_seconds) + 20
        assert "Traceback" not in srv.tail(1_000_000)

"""Locust scenario: one task per endpoint, weighted like a plausible day of traffic.

    locust -f load_tests/locustfile.py --host http://127.0.0.1:3000        # web UI
    make load DURATION=60s                                                  # headless, fails on any
                                                                            # failure

Classification (real handwritten digits as PNG, lenet5 and resnet18) dominates; generation,
translation and the generative endpoints follow; the model list, the Open Inference Protocol (V2)
and the metrics take a small share. Every answer is checked (status, and a field or the PNG
signature), so a wrong 200 counts as a failure too. An endpoint whose route the server's OpenAPI
document does not list is skipped with a warning (``make load`` prints which); the V2 routes are
mounted beside it, so they count as served when ``/v2/health/live`` answers.
"""

from __future__ import annotations

import io
import json
import logging
import random

import numpy as np
from locust import FastHttpUser, between, events, task
from PIL import Image

from load_tests.common import digit_pngs
from load_tests.loadgen import multipart

log = logging.getLogger("locustfile")

PNGS = digit_pngs(64, seed=1)
CLASSIFY = [
    multipart({"model": m, "top_k": "3"}, png) for png, _ in PNGS for m in ("lenet5", "resnet18")
]
RECONSTRUCT = [multipart({"model": "vae", "format": "json"}, png) for png, _ in PNGS[:16]]
V2_INFER = [  # the same digits as lenet5's own tensor, pixels in [0, 1] (its card: 1 x 32 x 32)
    {
        "inputs": [
            {
                "name": "pixels",
                "shape": [1, 1, 32, 32],
                "datatype": "FP32",
                "data": (np.asarray(Image.open(io.BytesIO(png)).convert("L")) / 255.0)
                .round(4)
                .ravel()
                .tolist(),
            }
        ]
    }
    for png, _ in PNGS[:16]
]
PROMPTS = ["The ", "def ", "Return ", "import ", "In the "]
DATES = [
    "3 March 2021",
    "March 3rd, 2021",
    "03.03.2021",
    "2021/03/03",
    "3/3/2021",
    "Wed 3 Mar 2021",
    "20210303",
    "3rd of March 2021",
    "march 3 2021",
    "Mar. 3, 2021",
]
AVAILABLE: set[str] | None = None  # routes in the server's OpenAPI document
SKIPPED: set[str] = set()


@events.test_start.add_listener
def _routes(environment, **_kwargs) -> None:
    global AVAILABLE
    import urllib.request

    host = environment.host.rstrip("/")
    try:
        with urllib.request.urlopen(host + "/docs.json", timeout=10) as r:
            AVAILABLE = set(json.load(r).get("paths", {}))
    except Exception as exc:
        log.warning("could not read /docs.json (%s): running every task", exc)
        return
    try:
        with urllib.request.urlopen(host + "/v2/health/live", timeout=10) as r:
            if r.status == 200:
                AVAILABLE.add("/v2")
    except Exception:
        pass


@events.quitting.add_listener
def _report_skipped(environment, **_kwargs) -> None:
    if SKIPPED:
        log.warning("skipped, not served: %s", ", ".join(sorted(SKIPPED)))
        print(f"SKIPPED ENDPOINTS: {','.join(sorted(SKIPPED))}", flush=True)


def served(path: str) -> bool:
    if AVAILABLE is None or path in AVAILABLE:
        return True
    if path not in SKIPPED:
        SKIPPED.add(path)
        log.warning("%s is not in the server's OpenAPI document: skipping its task", path)
    return False


class ZooUser(FastHttpUser):
    wait_time = between(0.05, 0.3)

    def _json(self, path: str, body: dict, check) -> None:
        if not served(path):
            return
        with self.client.post(path, json=body, catch_response=True, name=path) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
            elif not check(r):
                r.failure(f"unexpected answer: {(r.text or '')[:200]}")

    @task(10)
    def classify(self) -> None:
        body, ctype = random.choice(CLASSIFY)
        with self.client.post(
            "/classify",
            data=body,
            headers={"Content-Type": ctype},
            catch_response=True,
            name="/classify",
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
            elif len(r.json().get("predictions", [])) != 3:
                r.failure("expected 3 predictions")

    @task(2)
    def generate(self) -> None:
        self._json(
            "/generate",
            {
                "model": "lstm",
                "prompt": random.choice(PROMPTS),
                "max_new_tokens": 100,
                "temperature": 0.8,
                "top_k": None,
                "top_p": 0.95,
                "seed": random.randrange(1 << 31),
                "stop": [],
            },
            lambda r: isinstance(r.json().get("text"), str),
        )

    @task(2)
    def generate_stream(self) -> None:
        path = "/generate_stream"
        if not served(path):
            return
        body = {
            "model": random.choice(["lstm", "gru", "rnn"]),
            "prompt": random.choice(PROMPTS),
            "max_new_tokens": 100,
            "temperature": 0.8,
            "top_k": 20,
            "top_p": 1.0,
            "seed": random.randrange(1 << 31),
            "stop": [],
        }
        with self.client.post(path, json=body, catch_response=True, name=path) as r:
            text = r.text or ""
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {text[:200]}")
            elif "event: error" in text or "event: done" not in text:
                r.failure(f"stream without a done event: {text[-200:]}")

    @task(3)
    def translate(self) -> None:
        self._json(
            "/translate",
            {
                "model": "seq2seq",
                "text": random.choice(DATES),
                "beam_width": 3,
                "num_return": 2,
                "max_length": 12,
            },
            lambda r: r.json().get("output") == "2021-03-03",
        )

    @task(2)
    def sample(self) -> None:
        if random.random() < 0.5:
            self._json(
                "/sample",
                {
                    "model": random.choice(["vae", "gan"]),
                    "count": 16,
                    "seed": random.randrange(1 << 31),
                    "format": "json",
                },
                lambda r: len(r.json().get("images", [])) == 16,
            )
        elif served("/sample"):
            body = {
                "model": random.choice(["vae", "gan"]),
                "count": 16,
                "seed": random.randrange(1 << 31),
            }
            with self.client.post(
                "/sample", json=body, catch_response=True, name="/sample (png)"
            ) as r:
                if r.status_code != 200 or not (r.content or b"").startswith(b"\x89PNG"):
                    r.failure(f"HTTP {r.status_code}, not a PNG")

    @task(1)
    def reconstruct(self) -> None:
        if not served("/reconstruct"):
            return
        body, ctype = random.choice(RECONSTRUCT)
        with self.client.post(
            "/reconstruct",
            data=body,
            headers={"Content-Type": ctype},
            catch_response=True,
            name="/reconstruct",
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
            elif "reconstruction" not in r.json():
                r.failure("no reconstruction")

    @task(1)
    def interpolate(self) -> None:
        self._json(
            "/interpolate",
            {
                "model": random.choice(["vae", "gan"]),
                "seed_from": random.randrange(1000),
                "seed_to": random.randrange(1000),
                "steps": 8,
                "method": "slerp",
                "format": "json",
            },
            lambda r: len(r.json().get("images", [])) == 8,
        )

    @task(1)
    def models(self) -> None:
        if not served("/models"):
            return
        with self.client.get("/models", catch_response=True, name="/models (GET)") as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
            elif not any(m.get("name") == "lenet5" for m in r.json()):
                r.failure("lenet5 not listed")

    @task(1)
    def v2_infer(self) -> None:
        if not served("/v2"):
            return
        path = "/v2/models/lenet5/infer"
        with self.client.post(
            path, json=random.choice(V2_INFER), catch_response=True, name=path
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
            elif r.json()["outputs"][0]["shape"] != [1, 10]:
                r.failure(f"unexpected answer: {(r.text or '')[:200]}")

    @task(1)
    def metrics(self) -> None:
        with self.client.get("/metrics", catch_response=True, name="/metrics") as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
            elif "dlzoo_" not in (r.text or ""):
                r.failure("no dlzoo_ metric")

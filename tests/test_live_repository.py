"""The live model repository against a real server: versions published, deleted and swapped while
clients keep asking, and not one request lost."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import Server
from test_repository import publish

POLL = 0.5  # seconds: fast scans keep the test short
SETTLE = 2 * POLL + 1.0 + 2 * POLL  # the drain grace (two polls and a second), then a scan
DIGIT = (Path(__file__).resolve().parents[1] / "examples" / "digit.png").read_bytes()


@pytest.fixture()
def repo(model_repo, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    publish(model_repo / "lenet5" / "1", root, "lenet5", 1)
    return root, model_repo / "lenet5" / "1"


class Clients:
    """Closed-loop clients classifying until stopped; every answer's status and version kept."""

    def __init__(self, url: str, image: bytes, models: list[str]):
        self.url, self.image, self.models = url, image, models
        self.answers: list[tuple[str, int, int | None]] = []  # (model asked, status, version)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(m,)) for m in models]

    def _run(self, model: str) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while not self._stop.is_set():
                files = {"image": ("d.png", self.image, "image/png")}
                r = c.post("/classify", files=files, data={"model": model, "top_k": "1"})
                version = r.json().get("version") if r.status_code == 200 else None
                self.answers.append((model, r.status_code, version))

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def wait_for_version(self, version: int, timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if any(m == "lenet5" and v == version for m, _, v in self.answers[-8:]):
                return time.monotonic() - t0
            time.sleep(0.02)
        raise AssertionError(f"lenet5@{version} not served within {timeout} s")

    def failures(self) -> Counter:
        return Counter(s for _, s, _ in self.answers if s != 200)


@pytest.mark.parametrize("classify_in", ["front", "inference"])
def test_publish_by_rename_under_load_then_delete_the_newest_zero_failures(repo, classify_in):
    root, src = repo
    env = {"DLZOO_POLL_SECONDS": str(POLL), "DLZOO_CLASSIFY_IN": classify_in}
    with (
        Server(root, env=env) as srv,
        Clients(srv.url, DIGIT, ["lenet5", "lenet5", "lenet5@1"]) as load,
    ):
        time.sleep(1.0)
        publish(src, root, "lenet5", 2)
        took = load.wait_for_version(2, timeout=2 * POLL + 5.0)
        time.sleep(1.0)
        shutil.rmtree(root / "lenet5" / "2")  # file by file, as `rm -rf` does
        load.wait_for_version(1, timeout=2 * POLL + 5.0)
        time.sleep(1.0)
    assert load.failures() == Counter(), load.failures()
    assert {v for m, _, v in load.answers if m == "lenet5@1"} == {1}  # the pinned client
    assert len(load.answers) > 50
    print(f"{classify_in}: lenet5@2 served {took:.2f} s after the rename (poll {POLL} s)")


def test_a_corrupt_version_stays_failed_and_loads_once(repo):
    root, src = repo
    env = {"DLZOO_POLL_SECONDS": str(POLL), "DLZOO_FRONT_WORKERS": "1"}
    with Server(root, env=env) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        publish(src, root, "lenet5", 3, corrupt=True)
        time.sleep(6 * POLL)
        listed = {(m["name"], m["version"]): m for m in c.get("/models").json()}
        assert listed[("lenet5", 3)]["status"] == "failed"
        assert "checksum" in listed[("lenet5", 3)]["reason"]
        files = {"image": ("d.png", DIGIT, "image/png")}
        assert c.post("/classify", files=files, data={"model": "lenet5"}).json()["version"] == 1
        metrics = c.get("/metrics").text
        loads = re.findall(r'dlzoo_model_loads_total\{[^}]*version="3"[^}]*\} (\S+)', metrics)
        assert [float(x) for x in loads] == [1.0], loads  # tried once, not every poll
        assert re.search(r'dlzoo_model_ready\{model="lenet5",version="1"\} 1', metrics)


def test_a_stream_begun_before_a_swap_ends_on_its_version(tmp_path):
    """latest:1: publishing lstm@2 takes lstm@1 out of the policy while a long stream runs on it;
    the stream goes on to its end on lstm@1, which is freed after it."""
    from training import pipeline

    root = tmp_path / "models"
    pipeline.train(
        "lstm", profile="dry-run", models_root=root, runs_root=tmp_path / "runs", progress=False
    )
    token = "t"
    env = {
        "DLZOO_POLL_SECONDS": str(POLL),
        "DLZOO_VERSION_POLICY": "latest:1",
        "DLZOO_ADMIN_TOKEN": token,
    }
    body = {"model": "lstm", "prompt": "The " * 500, "max_new_tokens": 2000, "temperature": 0.8}
    with Server(root, env=env) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        with c.stream("POST", "/generate_stream", json=body) as r:
            lines = r.iter_lines()
            assert next(lines) == "event: start"
            began = time.monotonic()
            publish(root / "lstm" / "1", root, "lstm", 2)
            swap = c.post("/admin/reload", headers={"Authorization": f"Bearer {token}"})
            swapped = time.monotonic() - began
            assert (
                "lstm@1 draining: outside the version policy latest:1"
                in swap.json()["changes"]["inference"]
            )
            states = {
                m["version"]: m["status"] for m in c.get("/models").json() if m["name"] == "lstm"
            }
            assert states == {1: "draining", 2: "ready"}, states
            rest = "\n".join(lines)
        assert "event: done" in rest and '"finish_reason": "length"' in rest, rest[-500:]
        total = float(re.search(r'"total": ([0-9.]+)', rest.split("event: done")[1]).group(1)) / 1e3
        assert total > swapped, (
            f"the stream ended ({total:.2f} s) before the swap ({swapped:.2f} s)"
        )
        assert c.post("/generate", json={**body, "max_new_tokens": 5}).json()["version"] == 2
        time.sleep(SETTLE)
        states = {m["version"]: m["status"] for m in c.get("/models").json() if m["name"] == "lstm"}
        assert states == {1: "unloaded", 2: "ready"}, states


def test_the_root_renamed_away_and_back_keeps_everything_serving(repo):
    root, _ = repo
    with (
        Server(root, env={"DLZOO_POLL_SECONDS": str(POLL)}) as srv,
        Clients(srv.url, DIGIT, ["lenet5"]) as load,
    ):
        away = root.with_name("models-away")
        os.rename(root, away)
        time.sleep(3 * POLL + 0.5)
        os.rename(away, root)
        time.sleep(3 * POLL)
    assert load.failures() == Counter() and {v for _, _, v in load.answers} == {1}


def test_admin_reload_needs_its_token_and_answers_what_changed(repo):
    root, src = repo
    with Server(root, env={"DLZOO_POLL_SECONDS": "0"}) as srv:
        assert httpx.post(f"{srv.url}/admin/reload").status_code == 404  # no token configured
    token = "s3cret-token"
    # one front worker: with polling off a reload reaches the worker that answers it, and Inference
    env = {"DLZOO_POLL_SECONDS": "0", "DLZOO_ADMIN_TOKEN": token, "DLZOO_FRONT_WORKERS": "1"}
    with Server(root, env=env) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        publish(src, root, "lenet5", 2)
        wrong = c.post("/admin/reload", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
        assert token not in wrong.text
        assert {m["version"] for m in c.get("/models").json()} == {1}  # no scan happened
        ok = c.post("/admin/reload", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text
        assert "lenet5@2 ready" in ok.json()["changes"]["front"]
        assert {m["version"] for m in c.get("/models").json()} == {1, 2}
        assert token not in srv.tail(100_000)  # never logged

"""The OpenAPI document tells the truth: schemathesis, with every one of its checks, against a real
server holding a model of every task (seeded and bounded: about a minute on 2 cores)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import Server

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")
INFRA = {"/healthz", "/livez", "/readyz", "/metrics"}


@pytest.fixture(scope="module")
def zoo_server(zoo_repo):
    with Server(zoo_repo, env={"DLZOO_FRONT_WORKERS": "1"}) as srv:
        yield srv


def schemathesis(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """schemathesis's CLI (it keeps a database of found failures in ``cwd``/.schemathesis)."""
    cmd = [str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", url + "/docs.json"]
    cmd += ["--checks", "all", "--no-color", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)


def test_schemathesis_every_check_passes_on_every_operation(zoo_server, tmp_path):
    run = schemathesis(zoo_server.url, tmp_path, "--max-examples", "25", "--seed", "1")
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    print(summary)  # the counts, in the test log
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", summary)
    operations = len(httpx.get(zoo_server.url + "/docs.json").json()["paths"])
    assert tested and int(tested.group(1)) >= operations, summary
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert cases and cases.group(1) == cases.group(2) and int(cases.group(1)) > 300, summary
    assert httpx.get(zoo_server.url + "/readyz").status_code == 200  # and it still serves


def test_every_error_is_declared_with_the_one_error_schema(zoo_server):
    doc = httpx.get(zoo_server.url + "/docs.json").json()
    assert "InvalidArgument" not in doc["components"]["schemas"]
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            statuses = {int(s) for s in operation["responses"]}
            assert 200 in statuses, (path, method)
            if path in INFRA:
                continue
            assert {400, 413, 415} <= statuses, (path, method, statuses)
            for status in statuses - {200}:
                response = operation["responses"][str(status)]
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)
                if status == 503:
                    assert "Retry-After" in response["headers"]
    assert "get" in doc["paths"]["/models"]
    events = doc["paths"]["/generate_stream"]["post"]["responses"]["200"]["content"]
    assert len(events["text/event-stream"]["schema"]["anyOf"]) == 4  # start, token, done, error


def test_error_bodies_are_one_object_naming_the_problem(zoo_server):
    with httpx.Client(base_url=zoo_server.url, timeout=60) as c:
        r = c.post("/generate", json={"model": "gru", "max_new_tokens": "5"})  # a string
        assert r.status_code == 400
        assert r.json()["error"].startswith("max_new_tokens: must be an integer from 1 to")
        r = c.post("/sample", json={"model": "gan", "count": True})  # JSON true is not a count
        assert r.status_code == 400 and "count" in r.json()["error"]
        r = c.post("/translate", json={"model": " seq2seq", "text": "1 May 2020"})
        assert r.status_code == 400 and "not a valid model name" in r.json()["error"]
        r = c.put("/models")
        assert r.status_code == 405 and r.headers["allow"] == "GET, POST"

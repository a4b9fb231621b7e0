"""DLZOO_API_TOKEN against a real server: every endpoint but the open ones needs the token."""

from __future__ import annotations

from pathlib import Path

import httpx
from conftest import Server

DIGIT = (Path(__file__).resolve().parents[1] / "examples" / "digit.png").read_bytes()


def test_api_token_guards_every_endpoint_but_health_and_metrics(model_repo):
    token = "a-long-random-token"
    with Server(model_repo, env={"DLZOO_API_TOKEN": token}) as srv:
        files = {"image": ("d.png", DIGIT, "image/png")}
        asks = [
            ("post", "/classify", {"files": files, "data": {"model": "lenet5"}}),
            ("get", "/models", {}),
            ("get", "/docs.json", {}),
            ("post", "/generate", {"json": {"model": "lstm"}}),
        ]
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            for method, path, kwargs in asks:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                    r = getattr(c, method)(path, headers=headers, **kwargs)
                    assert r.status_code == 401, (path, headers, r.status_code)
                    assert r.headers["www-authenticate"].startswith("Bearer")
                    assert "error" in r.json() and token not in r.text
            good = {"Authorization": f"Bearer {token}"}
            assert (
                c.post("/classify", files=files, data={"model": "lenet5"}, headers=good).status_code
                == 200
            )
            assert c.get("/models", headers=good).status_code == 200
            for path in ("/livez", "/readyz", "/metrics"):
                assert c.get(path).status_code == 200, path
        assert token not in srv.tail(1_000_000)

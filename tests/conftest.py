"""Session fixtures: a model repository trained and exported by the real pipeline, and a real
``bentoml serve`` on a free port with some deliberately broken models beside the good ones."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from load_tests import common

# Before torch loads anywhere in the session: spinning OpenMP threads make a test's torch and a
# subprocess's torch on the same 2 cores run many times slower (see training/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/digit_images.py


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests share 2 cores with a server process; torch's own threads only contend."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _copy_version(src: Path, dst: Path, **card_changes) -> dict:
    shutil.copytree(src, dst)
    card = json.loads((dst / "card.json").read_text())
    card.update(card_changes)
    (dst / "card.json").write_text(json.dumps(card))
    return card


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory) -> Path:
    """lenet5 trained for real (quick profile, ~1 min), mlp from a dry run, and broken
    neighbours."""
    from service.card import sha256_file
    from training import pipeline

    root = tmp_path_factory.mktemp("models")
    runs = tmp_path_factory.mktemp("runs")
    lenet = pipeline.train(
        "lenet5", profile="quick", models_root=root, runs_root=runs, progress=False
    )
    pipeline.train("mlp", profile="dry-run", models_root=root, runs_root=runs, progress=False)

    # lenet5 v2: the graph was changed after export -> checksum mismatch; v1 keeps serving
    _copy_version(lenet, root / "lenet5" / "2", version=2)
    with open(root / "lenet5" / "2" / "model.onnx", "ab") as f:
        f.write(b"\0")
    # a card that is not JSON
    (root / "garbled" / "1").mkdir(parents=True)
    (root / "garbled" / "1" / "card.json").write_text("{ not json")
    # a truncated graph whose checksum was updated to match: ONNX Runtime must refuse it
    card = _copy_version(lenet, root / "truncated" / "1", name="truncated")
    path = root / "truncated" / "1" / "model.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    card["files"]["model"]["sha256"] = sha256_file(path)
    (root / "truncated" / "1" / "card.json").write_text(json.dumps(card))
    # a card whose io disagrees with its graph
    card = _copy_version(lenet, root / "mismatch" / "1", name="mismatch")
    card["io"]["model"]["inputs"][0]["name"] = "image"
    (root / "mismatch" / "1" / "card.json").write_text(json.dumps(card))
    # an export in progress (a dot folder) is never a model
    (root / ".tmp-lenet5-abc").mkdir()
    return root


@pytest.fixture(scope="session")
def zoo_repo(model_repo, tmp_path_factory) -> Path:
    """One model of every task: vae, gan, gru, seq2seq from dry runs (~25 s on 2 cores), and the
    session's repository copied beside them (its classifiers, broken versions included)."""
    from training import pipeline

    root = tmp_path_factory.mktemp("zoo") / "models"
    runs = tmp_path_factory.mktemp("zoo-runs")
    for name in ("vae", "gan", "gru", "seq2seq"):  # before lenet5 joins: nothing judges samples
        pipeline.train(name, profile="dry-run", models_root=root, runs_root=runs, progress=False)
    shutil.copytree(model_repo, root, dirs_exist_ok=True)
    return root


def sse_events(lines) -> list[tuple[str, dict]]:
    """Server-Sent Event lines as (event name, data): "message" for unnamed ones."""
    events, kind = [], "message"
    for line in lines:
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            events.append((kind, json.loads(line[5:])))
            kind = "message"
    return events


def Server(models: Path, env: dict[str, str] | None = None) -> common.Server:
    """``bentoml serve`` over ``models`` (the harness load_tests uses too), its log and BentoML
    home beside the repository; ``with Server(...) as srv``: ready inside, stopped after."""
    return common.ours(models, env=env, logs=models.parent)


@pytest.fixture(scope="session")
def server(model_repo):
    # two front workers whatever the machine (the default is one per core): the tests then cover
    # classifiers in several workers and connections spreading over them on any CI machine
    with Server(
        model_repo,
        env={
            "DLZOO_MAX_UPLOAD_BYTES": "2000000",
            "DLZOO_MAX_PIXELS": "4000000",
            "DLZOO_FRONT_WORKERS": "2",
            # the batching tests load the server on purpose (64 requests at once on a busy CI
            # machine): more than two workers admit by default, and waits past the latency bound
            "DLZOO_MAX_QUEUE": "128",
            "DLZOO_MAX_LATENCY_MS": "10000",
        },
    ) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c

"""The catalog and the batch classifier as plain functions (no HTTP), on the fixture's
repository."""

from __future__ import annotations

import numpy as np
import pytest

from service.classify import classify_items
from service.errors import BadRequest, NotFoundError
from service.repository import Catalog
from service.runtime import RuntimeConfig


@pytest.fixture(scope="module")
def catalog(model_repo):
    return Catalog(model_repo, runtime=RuntimeConfig.from_env({"DLZOO_DEVICE": "cpu"}))


def test_catalog_serves_highest_valid_version_and_reports_the_rest(catalog):
    status = {e.ref: (e.status, e.reason) for e in catalog.entries}
    assert status["lenet5@1"][0] == "ready" and status["mlp@1"][0] == "ready"
    assert status["lenet5@2"][0] == "failed" and "checksum mismatch" in status["lenet5@2"][1]
    assert status["garbled@1"][0] == "failed"
    assert "ONNX" in status["truncated@1"][1] or "onnx" in status["truncated@1"][1].lower()
    assert catalog.resolve("lenet5").version == 1  # v2 is broken: the highest *valid* one
    assert catalog.ready_names(["classify"]) == ["lenet5", "mlp"]
    with pytest.raises(NotFoundError, match="available: lenet5, mlp"):
        catalog.resolve("resnet9")
    with pytest.raises(BadRequest, match="classify"):
        catalog.resolve("lenet5", ["vae", "gan"])


def test_cards_only_catalog_opens_no_sessions(model_repo):
    cards = Catalog(model_repo, runtime=None)
    entry = cards.resolve("lenet5")
    assert entry.sessions == {} and entry.card.task == "classify"


def test_mixed_batch_one_call_per_model_and_per_item_errors(catalog):
    rng = np.random.default_rng(0)
    lenet = lambda: rng.random((1, 32, 32), dtype=np.float32)  # noqa: E731
    mlp = lambda: rng.random((1, 16, 16), dtype=np.float32)  # noqa: E731
    items = [
        {"model": "lenet5@1", "pixels": lenet(), "top_k": 3, "sent": 0.0},
        {"model": "mlp@1", "pixels": mlp(), "top_k": 1, "sent": 0.0},
        {"model": "lenet5@1", "pixels": lenet(), "top_k": 10, "sent": 0.0},
        {"model": "lenet5@1", "pixels": mlp(), "top_k": 1, "sent": 0.0},  # wrong shape
        {"model": "nope@1", "pixels": lenet(), "top_k": 1, "sent": 0.0},  # unknown model
    ]
    results, calls = classify_items(catalog, items, now=1.0)
    assert sorted((c.model, c.items) for c in calls) == [("lenet5@1", 2), ("mlp@1", 1)]
    assert [len(r.get("predictions", [])) for r in results] == [3, 1, 10, 0, 0]
    assert results[3]["failure"]["status"] == 400 and "shape" in results[3]["failure"]["error"]
    assert results[4]["failure"]["status"] == 404
    probs = [p["probability"] for p in results[2]["predictions"]]
    assert abs(sum(probs) - 1) < 1e-6 and probs == sorted(probs, reverse=True)
    # the same pixels alone give the same answer as inside the batch
    alone, _ = classify_items(catalog, [items[0]])
    assert [p["index"] for p in alone[0]["predictions"]] == [
        p["index"] for p in results[0]["predictions"]
    ]
    np.testing.assert_allclose(
        [p["probability"] for p in alone[0]["predictions"]],
        [p["probability"] for p in results[0]["predictions"]],
        atol=1e-6,
    )


def test_sessions_only_for_the_tasks_asked(model_repo):
    """The front opens classifier sessions only; the Inference service then skips them
    (DLZOO_CLASSIFY_IN)."""
    cfg = RuntimeConfig.from_env({"DLZOO_DEVICE": "cpu"})
    front = Catalog(model_repo, runtime=cfg, tasks=["classify"])
    others = Catalog(model_repo, runtime=cfg, tasks=["vae", "gan", "language_model", "seq2seq"])
    assert front.resolve("lenet5").sessions and front.runs("classify") and not front.runs("vae")
    entry = others.resolve("lenet5")
    assert entry.status == "ready" and entry.sessions == {} and not others.runs("classify")
    # a broken graph is still caught by the catalog that runs it, and only by that one
    assert {e.ref: e.status for e in front.entries}["truncated@1"] == "failed"
    pixels = np.zeros((1, 32, 32), np.float32)
    results, calls = classify_items(
        others, [{"model": "lenet5@1", "pixels": pixels, "top_k": 1, "sent": 0.0}]
    )
    assert (
        calls == []
        and results[0]["failure"]["status"] == 503
        and "not loaded in this process" in results[0]["failure"]["error"]
    )

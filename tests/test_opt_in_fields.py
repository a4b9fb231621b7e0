"""The opt-in outputs the playground asks for, over real HTTP on models from the real pipeline:
``alternatives`` of /generate and /generate_stream (each token's most likely characters), and
``attention`` of /translate (the seq2seq decoder's weights), including a seq2seq model exported
before its decoder step had the ``attention`` output (a clear 422, never a 500)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import Server, sse_events

from service.card import sha256_file
from service.sampling import Sampling, Vocab
from service.sequence import Stream
from training.data import dates as dates_data
from training.loop import load_checkpoint
from training.tasks import rebuild


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """gru and seq2seq from dry runs, and ``seq2seq-old``: the same seq2seq as an export from
    before attention was an output (the output taken out of the graph and the card)."""
    import onnx

    from training import pipeline

    root = tmp_path_factory.mktemp("optin")
    for name in ("gru", "seq2seq"):
        pipeline.train(
            name,
            profile="dry-run",
            models_root=root / "models",
            runs_root=root / "runs",
            progress=False,
        )
    old = root / "models" / "seq2seq-old" / "1"
    shutil.copytree(root / "models" / "seq2seq" / "1", old)
    card = json.loads((old / "card.json").read_text())
    path = old / card["files"]["decoder_step"]["path"]
    graph = onnx.load(path)
    kept = [o for o in graph.graph.output if o.name != "attention"]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    onnx.save(graph, path)
    card["name"] = "seq2seq-old"
    card["files"]["decoder_step"]["sha256"] = sha256_file(path)
    outputs = card["io"]["decoder_step"]["outputs"]
    card["io"]["decoder_step"]["outputs"] = [o for o in outputs if o["name"] != "attention"]
    (old / "card.json").write_text(json.dumps(card))
    return root


@pytest.fixture(scope="module")
def http(repo):
    with Server(repo / "models") as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert {m["name"]: m["status"] for m in c.get("/models").json()} == {
            "gru": "ready",
            "seq2seq": "ready",
            "seq2seq-old": "ready",
        }
        yield c


# --- alternatives ---------------------------------------------------------------------------------


def test_held_back_characters_release_their_own_alternatives_and_a_stop_strings_none():
    """Plain functions: greedy steps forced through "c x a c a b" with stop strings "ab" and "xq".
    "x" is held (it may begin "xq"), then released with "a" held in its turn; "ab" ends it."""
    vocab = Vocab(["<unk>", "a", "b", "x", "q", "c"], {"unk": 0})
    stream = Stream(
        prompt=[5],
        state=np.zeros((1, 1), np.float32),
        vocab=vocab,
        sampling=Sampling(temperature=0),
        max_new_tokens=20,
        seed=0,
        stop=("ab", "xq"),
        alternatives=2,
    )
    events = []
    for char in "cxacab":
        logits = np.zeros(6, np.float32)
        logits[vocab.index[char]] = 3.0
        events.append(stream.take(logits, np.zeros((1, 1), np.float32)))
    assert [e.text for e in events] == ["c", "", "x", "ac", "", ""]
    assert events[-1].finish_reason == "stop" and stream.text == "cxac"
    for e in events:
        if e.text:  # each released character with its own step's alternatives, argmax first
            assert "".join(alts[0]["text"] for alts in e.alternatives) == e.text
            assert all(len(alts) == 2 for alts in e.alternatives)
        else:
            assert e.alternatives is None
    top = events[0].alternatives[0][0]["probability"]
    assert abs(top - np.exp(3) / (np.exp(3) + 5)) < 1e-6, "softmax of the raw logits"


def test_alternatives_are_each_tokens_most_likely_characters_best_first(http):
    body = {"model": "gru", "prompt": "The ", "max_new_tokens": 40, "temperature": 0, "seed": 1}
    plain = http.post("/generate", json=body).json()
    assert "alternatives" not in plain, "opt-in: absent unless asked"
    out = http.post("/generate", json={**body, "alternatives": 5}).json()
    assert out["text"] == plain["text"], "asking for them changes nothing else"
    alternatives = out["alternatives"]
    assert len(alternatives) == out["tokens"] == 40
    for alts in alternatives:
        assert len(alts) == 5
        probabilities = [a["probability"] for a in alts]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-5
    greedy = "".join(a[0]["text"] for a in alternatives if a[0]["text"] != "<unk>")
    assert greedy == out["text"], "greedy picks the most likely character every time"


def test_streamed_alternatives_go_with_the_text_they_explain(http):
    body = {
        "model": "gru",
        "prompt": "",
        "max_new_tokens": 60,
        "temperature": 1.0,
        "seed": 5,
        "alternatives": 3,
    }
    whole = http.post("/generate", json=body).json()
    with http.stream("POST", "/generate_stream", json=body) as r:
        events = sse_events(r.iter_lines())
    tokens = [data for kind, data in events if kind == "message"]
    assert "".join(t["text"] for t in tokens) == whole["text"]
    # one entry per token, sent with the text it wrote (an <unk> writes none: its entry goes with
    # the next character)
    assert all(len(t["alternatives"]) >= len(t["text"]) for t in tokens)
    assert [a for t in tokens for a in t["alternatives"]] == whole["alternatives"]
    assert len(whole["alternatives"]) == whole["tokens"]
    assert all(len(a) == 3 for a in whole["alternatives"])


def test_alternatives_of_a_stop_string_are_not_sent(http):
    """A stop string made of the text's own characters: the answer ends before it, and so do its
    alternatives (held-back characters released later carry theirs along)."""
    body = {"model": "gru", "max_new_tokens": 60, "temperature": 1.0, "seed": 9}
    free = http.post("/generate", json=body).json()["text"]
    stop = free[20:22]
    out = http.post("/generate", json={**body, "stop": [stop], "alternatives": 2}).json()
    assert out["finish_reason"] == "stop" and stop not in out["text"]
    assert len(out["alternatives"]) == out["tokens"] - len(stop), "none for the stop string"
    with http.stream(
        "POST", "/generate_stream", json={**body, "stop": [stop], "alternatives": 2}
    ) as r:
        tokens = [d for kind, d in sse_events(r.iter_lines()) if kind == "message"]
    assert [a for t in tokens for a in t["alternatives"]] == out["alternatives"]


# --- attention ------------------------------------------------------------------------------------


def torch_attention(repo: Path, text: str, steps: int) -> np.ndarray:
    """PyTorch's greedy decoding from the checkpoint, its attention rows (steps, len(text))."""
    model = rebuild(load_checkpoint(repo / "runs" / "seq2seq" / "best.pt")).eval()
    tokens = load_checkpoint(repo / "runs" / "seq2seq" / "best.pt")["tokens"]
    source = dates_data.encode([text], tokens, dates_data.MAX_SOURCE_LEN)
    rows = []
    with torch.inference_mode():
        memory, mask, state = model.encode(source)
        token = torch.tensor([dates_data.BOS])
        for _ in range(steps):
            logits, state, weights = model.step(token, state, memory, mask)
            rows.append(weights[0, : len(text)].numpy())
            token = logits.argmax(1)
    return np.array(rows)


def test_attention_is_the_decoders_own_weights_one_row_per_output_token(repo, http):
    text = "Wednesday, March 3, 2021"
    body = {"text": text, "beam_width": 1}
    plain = http.post("/translate", json=body).json()
    assert "attention" not in plain["candidates"][0]
    out = http.post("/translate", json={**body, "attention": True}).json()
    best = out["candidates"][0]
    assert best["text"] == plain["output"], "asking for it changes nothing else"
    attention = best["attention"]
    assert attention["source"] == list(text)
    rows = np.array(attention["weights"])
    assert rows.shape == (len(attention["output"]), len(text))
    assert len(attention["output"]) == len(best["text"]) + best["complete"], "<eos> row if ended"
    assert np.allclose(rows.sum(axis=1), 1, atol=1e-3), "padding gets no attention"
    reference = torch_attention(repo, text, len(rows))
    assert np.abs(rows - reference).max() <= 1e-4, "the exported weights are PyTorch's"


def test_every_beam_candidate_carries_its_own_attention(http):
    body = {"text": "3 March 2021", "beam_width": 4, "num_return": 4}
    plain = http.post("/translate", json=body).json()
    out = http.post("/translate", json={**body, "attention": True}).json()
    assert [c["text"] for c in out["candidates"]] == [c["text"] for c in plain["candidates"]]
    for c in out["candidates"]:
        a = c["attention"]
        assert len(a["weights"]) == len(a["output"]) == len(c["text"]) + c["complete"]
        assert all(len(row) == len("3 March 2021") for row in a["weights"])


def test_attention_of_a_model_exported_without_it_is_a_422_naming_the_problem(http):
    ok = http.post("/translate", json={"model": "seq2seq-old", "text": "3 March 2021"})
    assert ok.status_code == 200, "without attention the old export still translates"
    r = http.post(
        "/translate", json={"model": "seq2seq-old", "text": "3 March 2021", "attention": True}
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"] if isinstance(r.json(), dict) else r.json()[0]["error"]
    assert "attention" in error and "seq2seq-old@1" in error and "decoder_step" in error


@pytest.mark.parametrize(
    "path, body, words",
    [
        (
            "/generate",
            {"model": "gru", "alternatives": 11},
            "alternatives: must be an integer from 0 to 10",
        ),
        ("/generate_stream", {"model": "gru", "alternatives": -1}, "alternatives"),
        ("/generate", {"model": "gru", "alternatives": "five"}, "alternatives"),
        ("/translate", {"text": "3 March 2021", "attention": "maybe"}, "attention"),
    ],
)
def test_bad_opt_in_values_are_400s_naming_the_field(http, path, body, words):
    r = http.post(path, json=body)
    assert r.status_code == 400, r.text
    assert words in r.text

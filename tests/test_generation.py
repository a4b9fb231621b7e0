"""Text generation and translation (service/sequence.py, service/seq2seq.py): first the plain
functions without HTTP, then /generate, /generate_stream and /translate over real HTTP, all on
models trained and exported by the real pipeline (small runs) and compared with PyTorch's own
decoding from the same checkpoints."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from conftest import Server, sse_events

from service import sampling, seq2seq
from service import sequence as textgen
from service.repository import Catalog
from service.runtime import RuntimeConfig
from training.data import dates as dates_data
from training.loop import load_checkpoint
from training.tasks import rebuild
from training.tasks.language_model import greedy_generate
from training.tasks.seq2seq import greedy_translate

# a few batches beyond the dry run, so greedy text is not one repeated character
LM_OPTIONS = {
    "epochs": 4,
    "max_batches": 100,
    "limit": 4000,
    "batch_size": 32,
    "lr": 2e-2,
    "schedule": "none",
    "patience": None,
}
PROMPTS = ["The ", "def f(x):\n    return", "", "A snowman \u2603 is not in the help text"]


@pytest.fixture(scope="module")
def seq_repo(tmp_path_factory):
    """lstm (a few batches), gru (dry run) and seq2seq (4,000 pairs x 2 epochs, ~30 s): it has
    learned the output's shape and its end, not yet the dates."""
    from training import pipeline

    root = tmp_path_factory.mktemp("seq")
    runs = root / "runs"
    pipeline.train(
        "lstm",
        profile="dry-run",
        options=LM_OPTIONS,
        models_root=root / "models",
        runs_root=runs,
        progress=False,
    )
    pipeline.train(
        "gru", profile="dry-run", models_root=root / "models", runs_root=runs, progress=False
    )
    pipeline.train(
        "seq2seq",
        profile="quick",
        options={"n_train": 4000, "epochs": 2},
        models_root=root / "models",
        runs_root=runs,
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def catalog(seq_repo):
    cat = Catalog(seq_repo / "models", runtime=RuntimeConfig(device="cpu"))
    assert all(e.status == "ready" for e in cat.entries), [e.reason for e in cat.entries]
    return cat


def torch_model(seq_repo, name):
    return rebuild(load_checkpoint(seq_repo / "runs" / name / "best.pt")).eval()


class CountingSession:
    """Passes run() on and records each call's batch size."""

    def __init__(self, session):
        self.session, self.batches = session, []

    def run(self, names, feed, *args, **kwargs):
        self.batches.append(len(next(iter(feed.values()))))
        return self.session.run(names, feed, *args, **kwargs)


def greedy(temperature=0.0):
    return sampling.Sampling(temperature=temperature)


# --- sampling rules -------------------------------------------------------------------------------


def test_choose_greedy_top_k_top_p_and_temperature():
    rng = np.random.default_rng(0)
    logits = np.array([1.0, 3.0, 3.0, 2.0, -1.0], np.float32)
    assert sampling.choose(logits, greedy(), rng) == 1, (
        "greedy takes the first maximum, like torch.argmax"
    )
    assert sampling.choose(logits, sampling.Sampling(1.0, top_k=1), rng) == 1
    assert sampling.choose(logits, sampling.Sampling(1.0, top_p=0.0), rng) == 1
    # top_k=3 keeps ids 1, 2, 3; top_p=0.5 keeps ids 1, 2 (each ~0.42 of the mass after
    # temperature 1)
    draws = [sampling.choose(logits, sampling.Sampling(1.0, top_k=3), rng) for _ in range(3000)]
    assert set(draws) == {1, 2, 3}
    draws = [sampling.choose(logits, sampling.Sampling(1.0, top_p=0.5), rng) for _ in range(2000)]
    assert set(draws) == {1, 2}
    # the frequencies follow softmax(logits / T)
    for t in (0.5, 1.0, 2.0):
        p = np.exp(logits / t) / np.exp(logits / t).sum()
        counts = (
            np.bincount(
                [sampling.choose(logits, sampling.Sampling(t), rng) for _ in range(20000)],
                minlength=5,
            )
            / 20000
        )
        assert np.abs(counts - p).max() < 0.015, (t, counts, p)
    # a seed fixes the draws
    a = [
        sampling.choose(logits, sampling.Sampling(1.0), np.random.default_rng(7)) for _ in range(5)
    ]
    assert a == [
        sampling.choose(logits, sampling.Sampling(1.0), np.random.default_rng(7)) for _ in range(5)
    ]


def test_vocab_reads_unknown_characters_as_unk_and_lists_them():
    vocab = sampling.Vocab(["<pad>", "a", "b", "<unk>"], {"pad": 0, "unk": 3})
    assert vocab.encode("ab\u2603a\u2603x") == ([1, 2, 3, 1, 3, 3], ["\u2603", "x"])
    assert vocab.encode("<pad>") == ([3, 3, 1, 3, 3], ["<", "p", "d", ">"]), (
        "specials cannot be typed"
    )
    assert vocab.char(0) == "" and vocab.char(3) == "" and vocab.char(2) == "b"


# --- language models without HTTP -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_greedy_equals_pytorch_greedy_from_the_checkpoint(name, seq_repo, catalog):
    lm = textgen.LanguageModel(catalog.resolve(name))
    model = torch_model(seq_repo, name)
    for prompt in PROMPTS:
        stream = lm.run(lm.stream(prompt, max_new_tokens=80, sampling=greedy()))
        ids, unknown = lm.vocab.encode(prompt)
        reference = "".join(lm.vocab.char(i) for i in greedy_generate(model, ids or [lm.start], 80))
        assert stream.text == reference, (name, prompt)
        assert stream.finish_reason == "length" and len(stream.tokens) == 80
        assert stream.unknown_chars == (["\u2603"] if "\u2603" in prompt else [])
    if name == "lstm":
        assert len(set(reference)) > 3, f"the lstm should have learned something: {reference!r}"


def test_choose_many_is_choose_row_by_row_bit_for_bit():
    rng = np.random.default_rng(3)
    for trial in range(200):
        n, vocab = int(rng.integers(1, 20)), int(rng.integers(2, 120))
        logits = (rng.standard_normal((n, vocab)) * rng.uniform(0.1, 8)).astype(np.float32)
        logits[:, : vocab // 3] = logits[:, :1]  # ties
        samplings = [
            sampling.Sampling(
                *[
                    (0.0, None, 1.0),
                    (float(rng.uniform(0.05, 3)), None, 1.0),
                    (1.0, int(rng.integers(1, vocab + 1)), 1.0),
                    (0.7, None, 0.9),
                ][i % 4]
            )
            for i in rng.permutation(n)
        ]
        seeds = rng.integers(0, 2**32, n)
        alone_gens = [np.random.default_rng(x) for x in seeds]
        alone = [sampling.choose(logits[i], samplings[i], alone_gens[i]) for i in range(n)]
        gens = [np.random.default_rng(x) for x in seeds]
        assert sampling.choose_many(logits, samplings, gens) == alone, trial
        # and each row's generator has drawn exactly what it draws alone (the next draws agree)
        assert [g.random() for g in gens] == [g.random() for g in alone_gens], trial


def test_one_batched_step_gives_each_stream_what_it_gets_alone(catalog):
    """The same seed gives the same text whatever runs beside it: a row's outputs do not depend on
    the other rows (bit for bit on the CPU provider), and each stream has its own generator."""
    lm = textgen.LanguageModel(catalog.resolve("lstm"))
    specs = [
        (p, sampling.Sampling(t, k, q), seed, n)
        for p, (t, k, q), seed, n in zip(
            PROMPTS * 2,
            [
                (0.0, None, 1.0),
                (0.8, None, 1.0),
                (1.2, 10, 1.0),
                (1.0, None, 0.9),
                (0.5, 5, 0.8),
                (2.0, None, 1.0),
                (0.0, None, 1.0),
                (1.0, 3, 1.0),
            ],
            range(8),
            [5, 40, 17, 60, 1, 33, 25, 50],
        )
    ]
    alone = [
        lm.run(lm.stream(p, max_new_tokens=n, sampling=s, seed=seed)).text
        for p, s, seed, n in specs
    ]
    together = [lm.stream(p, max_new_tokens=n, sampling=s, seed=seed) for p, s, seed, n in specs]
    lm.session = counter = CountingSession(lm.session)
    while any(not s.done for s in together):
        lm.advance([s for s in together if not s.done])
    assert [s.text for s in together] == alone
    longest = max(len(s.prompt) + s.max_new_tokens - 1 for s in together)
    assert len(counter.batches) == longest, "one call per step for all streams"
    assert counter.batches[0] == 8 and counter.batches[-1] == 1


def test_stop_strings_end_the_text_before_them_and_streaming_holds_them_back(catalog):
    lm = textgen.LanguageModel(catalog.resolve("lstm"))
    full = lm.run(lm.stream("The ", max_new_tokens=120, sampling=greedy())).text
    stop = full[30:34]
    expected = full[: full.index(stop)]
    stream = lm.stream("The ", max_new_tokens=120, sampling=greedy(), stop=["\u2603\u2603", stop])
    pieces = []
    while not stream.done:
        for event in lm.advance([stream]):
            if event is not None:
                pieces.append(event.text)
                # nothing released so far can be the start of the stop string still being written
                assert "".join(pieces) == stream.text[: stream.sent]
    assert stream.text == expected == "".join(pieces) and stream.finish_reason == "stop"
    assert len(stream.tokens) == len(expected) + len(stop)
    # a stop string that never appears: the held-back tail is released at the length limit
    stream = lm.run(
        lm.stream("The ", max_new_tokens=120, sampling=greedy(), stop=[full[-3:] + "\u2603"])
    )
    assert stream.text == full and stream.finish_reason == "length"


def test_scheduler_shares_steps_lets_late_streams_finish_first_and_cancels(catalog):
    lm = textgen.LanguageModel(catalog.resolve("lstm"))
    lm.session = counter = CountingSession(lm.session)
    reference = {
        n: lm.run(lm.stream("The ", max_new_tokens=n, sampling=sampling.Sampling(0.9), seed=n)).text
        for n in (300, 20, 50)
    }
    counter.batches.clear()
    steps_seen = []

    async def scenario():
        scheduler = textgen.StepScheduler(
            lm, max_active=2, on_step=lambda e, n, s: steps_seen.append(n)
        )

        async def collect(stream, stop_after=None):
            out = []
            events = scheduler.events(stream)
            try:
                async for batch in events:
                    out += batch
                    if stop_after is not None and len(out) >= stop_after:
                        break  # a client that leaves
            finally:
                await events.aclose()
            return out

        long = scheduler.submit(
            lm.stream("The ", max_new_tokens=300, sampling=sampling.Sampling(0.9), seed=300)
        )
        long_task = asyncio.create_task(collect(long))
        while not long.tokens:
            await asyncio.sleep(0.001)
        short = scheduler.submit(
            lm.stream("The ", max_new_tokens=20, sampling=sampling.Sampling(0.9), seed=20)
        )
        short_events = await collect(short)
        assert not long.done, "the stream that joined later finished first"
        # a third stream waits for a place (max_active=2), then a client leaves after 5 tokens
        third = scheduler.submit(
            lm.stream("The ", max_new_tokens=50, sampling=sampling.Sampling(0.9), seed=50)
        )
        gone = scheduler.submit(lm.stream("The ", max_new_tokens=300, sampling=greedy(), seed=1))
        third_events, gone_events = await asyncio.gather(
            collect(third), collect(gone, stop_after=5)
        )
        long_events = await long_task
        await asyncio.sleep(0.01)
        return (
            scheduler,
            long,
            short,
            third,
            gone,
            long_events,
            short_events,
            third_events,
            gone_events,
        )

    scheduler, long, short, third, gone, long_ev, short_ev, third_ev, gone_ev = asyncio.run(
        scenario()
    )
    assert "".join(e.text for e in long_ev) == long.text == reference[300]
    assert "".join(e.text for e in short_ev) == short.text == reference[20]
    assert "".join(e.text for e in third_ev) == third.text == reference[50]
    assert [e.finish_reason for e in (long_ev[-1], short_ev[-1], third_ev[-1])] == ["length"] * 3
    assert gone.cancelled and len(gone.tokens) < 300 and 5 <= len(gone_ev) < 300
    assert max(steps_seen) == 2, "never more than max_active streams in a step"
    assert steps_seen.count(2) > 50, "concurrent streams shared step calls"
    assert sum(steps_seen) == sum(counter.batches) and scheduler.active == []

    # explicit cancel (what the service does when a client disconnects) ends the events at once
    async def cancelled():
        scheduler = textgen.StepScheduler(lm)
        stream = scheduler.submit(lm.stream("The ", max_new_tokens=2000, sampling=greedy()))
        events = []
        async for batch in scheduler.events(stream):
            events += batch
            if len(events) >= 3 and not stream.cancelled:
                assert scheduler.cancel(stream)
        assert not scheduler.cancel(stream), "cancelling twice is a no-op"
        return stream, events

    stream, events = asyncio.run(cancelled())
    assert events[-1].finish_reason == "cancelled" and stream.finish_reason == "cancelled"
    assert len(stream.tokens) < 100


# --- seq2seq without HTTP -------------------------------------------------------------------------


def date_texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    days = [dates_data.START + dt.timedelta(days=rng.randrange(36524)) for _ in range(n)]
    formats = list(dates_data.FORMATS)
    return [dates_data.format_date(d, formats[i % len(formats)]) for i, d in enumerate(days)]


def reference_text(ids, vocab) -> str:
    """PyTorch's greedy ids (padded after <eos>) as text."""
    ids = [int(i) for i in ids]
    ids = ids[: ids.index(dates_data.EOS)] if dates_data.EOS in ids else ids
    return "".join(vocab.char(i) for i in ids)


def test_translate_greedy_equals_pytorch_and_beams_are_never_worse(seq_repo, catalog):
    tr = seq2seq.Translator(catalog.resolve("seq2seq"))
    model = torch_model(seq_repo, "seq2seq")
    texts = date_texts(32)
    source = dates_data.encode(texts, tr.vocab.tokens, tr.max_source_len)
    reference = greedy_translate(model, source, tr.max_target_len)
    completes = 0
    for text, ids in zip(texts, reference):
        out = tr.translate(text, beam_width=1)
        assert out["output"] == reference_text(ids, tr.vocab), text
        best_greedy = out["candidates"][0]
        completes += best_greedy["complete"]
        for width in (2, 5):
            beam = tr.translate(text, beam_width=width, num_return=width)
            cands = beam["candidates"]
            assert 1 <= len(cands) <= width and len({c["text"] for c in cands}) == len(cands)
            keys = [(not c["complete"], -c["log_prob"]) for c in cands]
            assert keys == sorted(keys), "complete first, then by log probability"
            if best_greedy["complete"]:
                assert (
                    cands[0]["complete"] and cands[0]["log_prob"] >= best_greedy["log_prob"] - 1e-9
                )
            assert beam["output"] == cands[0]["text"] and beam["score"] == cands[0]["log_prob"]
    assert completes >= 16, "the small model ends most outputs with <eos>"
    with pytest.raises(seq2seq.TextTooLong, match="at most 32"):
        tr.translate("x" * 33)
    assert tr.translate("3 Ma\u2603 2021", beam_width=1)["unknown_chars"] == ["\u2603"]


def test_beam_search_finds_what_greedy_misses_on_a_made_up_distribution():
    """A decoder whose first step prefers 'a' (0.6) but whose best whole answer starts with 'b':
    greedy says 'a...' (0.6 x 0.5), beam search 'b' (0.4 x 0.9)."""

    class Session:
        def run(self, names, feed):
            tokens, state = feed["tokens"], feed["state"]
            n = len(tokens)
            logits = np.full((n, 6), -30.0, np.float32)
            for row in range(n):
                prev = int(tokens[row])
                if prev == 1:  # <bos>
                    logits[row, [4, 5]] = np.log([0.6, 0.4])
                elif prev == 4:  # after 'a': two equally likely endings
                    logits[row, [2, 4]] = np.log([0.5, 0.5])
                else:  # after 'b': end
                    logits[row, [2, 5]] = np.log([0.9, 0.1])
            return [logits, state]

    class Encoder:
        def run(self, names, feed):
            return [
                np.zeros((1, 4, 2), np.float32),
                np.ones((1, 4), bool),
                np.zeros((1, 1, 2), np.float32),
            ]

    class Card:
        class vocab:
            tokens = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b"]
            special = {"pad": 0, "bos": 1, "eos": 2, "unk": 3}

        training = {"max_source_len": 4, "max_target_len": 5}

        class _IO:
            def __init__(self, inputs, outputs):
                self.inputs = [type("T", (), {"name": n}) for n in inputs]
                self.outputs = [type("T", (), {"name": n}) for n in outputs]

        io = {
            "encoder": _IO(["tokens"], ["memory", "mask", "state"]),
            "decoder_step": _IO(
                ["tokens", "state", "memory", "mask"], ["logits", "next_state", "attention"]
            ),
        }

    entry = type(
        "E",
        (),
        {
            "card": Card,
            "sessions": {"encoder": Encoder(), "decoder_step": Session()},
            "ref": "toy@1",
        },
    )
    tr = seq2seq.Translator(entry)
    assert tr.translate("ab", beam_width=1)["output"] == "a"
    out = tr.translate("ab", beam_width=2, num_return=2)
    assert out["output"] == "b" and out["score"] == pytest.approx(np.log(0.4 * 0.9), abs=1e-5)
    assert [c["text"] for c in out["candidates"]] == ["b", "a"]
    assert out["candidates"][1]["log_prob"] == pytest.approx(np.log(0.6 * 0.5), abs=1e-5)


# --- over HTTP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seq_server(seq_repo):
    with Server(seq_repo / "models") as srv:
        yield srv


@pytest.fixture(scope="module")
def http(seq_server):
    with httpx.Client(base_url=seq_server.url, timeout=60) as c:
        yield c


def metric(http, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in http.get("/metrics").text.splitlines():
        if (line.startswith(f"{name}{{") and want in line) or (
            not labels and line.startswith(f"{name} ")
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_http_greedy_equals_pytorch_greedy(name, seq_repo, catalog, http):
    lm = textgen.LanguageModel(catalog.resolve(name))
    model = torch_model(seq_repo, name)
    for prompt in PROMPTS:
        r = http.post(
            "/generate",
            json={"model": name, "prompt": prompt, "max_new_tokens": 150, "temperature": 0},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        ids, _ = lm.vocab.encode(prompt)
        assert body["text"] == "".join(
            lm.vocab.char(i) for i in greedy_generate(model, ids or [lm.start], 150)
        )
        assert body["tokens"] == 150 and body["finish_reason"] == "length"
        assert (body["model"], body["version"]) == (name, 1)
        assert body["unknown_chars"] == (["\u2603"] if "\u2603" in prompt else [])
        assert 0 < body["timings_ms"]["first_token"] <= body["timings_ms"]["total"]


def test_http_a_seed_gives_the_same_text_whatever_else_runs(http):
    request = {
        "model": "lstm",
        "prompt": "The ",
        "max_new_tokens": 300,
        "temperature": 1.0,
        "top_p": 0.95,
        "seed": 1234,
    }
    alone = http.post("/generate", json=request).json()
    assert alone["seed"] == 1234 and len(alone["text"]) > 0

    def other(i):
        return http.post(
            "/generate",
            json={**request, "seed": i, "prompt": PROMPTS[i % 4], "max_new_tokens": 100 + 50 * i},
        ).json()

    with ThreadPoolExecutor(8) as pool:
        others = [pool.submit(other, i) for i in range(7)]
        crowded = [pool.submit(http.post, "/generate", json=request) for _ in range(3)]
        assert all(f.result().json()["text"] == alone["text"] for f in crowded)
        assert len({f.result()["text"] for f in others}) == 7
    drawn = http.post("/generate", json={**request, "seed": None}).json()
    assert 0 <= drawn["seed"] < 2**32
    again = http.post("/generate", json={**request, "seed": drawn["seed"]}).json()
    assert again["text"] == drawn["text"]


def test_http_stream_sends_tokens_as_they_exist_and_equals_generate(http):
    request = {
        "model": "lstm",
        "prompt": "The ",
        "max_new_tokens": 200,
        "temperature": 0.9,
        "seed": 7,
        "stop": ["\u2603"],
    }
    whole = http.post("/generate", json=request).json()
    with http.stream("POST", "/generate_stream", json=request) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-seed"] == "7"
        events = sse_events(r.iter_lines())
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"message"}
    assert events[0][1]["seed"] == 7 and events[0][1]["model"] == "lstm"
    tokens = [d for k, d in events if k == "message"]
    assert "".join(d["text"] for d in tokens) == whole["text"]
    assert [d["index"] for d in tokens] == list(range(1, 201)), "one event per token"
    assert events[-1][1]["finish_reason"] == "length" and events[-1][1]["tokens"] == 200


def test_http_stream_first_event_arrives_while_generation_runs_and_a_client_that_leaves_stops_it(
    http,
):
    """A 2,000-character prompt and 2,000 tokens take over a second; the first token event comes
    while the stream is still generating (the gauge says one stream runs), and closing the
    connection after five tokens stops the generation early and frees its place."""
    cancelled = metric(http, "dlzoo_generations_total", model="lstm@1", reason="cancelled")
    tokens_before = metric(http, "dlzoo_generated_tokens_total", model="lstm@1")
    request = {
        "model": "lstm",
        "prompt": "x" * 2000,
        "max_new_tokens": 2000,
        "temperature": 1.0,
        "seed": 3,
    }
    seen = 0
    with http.stream("POST", "/generate_stream", json=request) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and '"index"' in line:
                if seen == 0:
                    assert metric(http, "dlzoo_generation_streams", model="lstm@1") == 1.0, (
                        "the first token arrived while the generation still ran"
                    )
                seen += 1
                if seen == 5:
                    break
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (
            metric(http, "dlzoo_generations_total", model="lstm@1", reason="cancelled")
            == cancelled + 1
        ):
            break
        time.sleep(0.1)
    assert (
        metric(http, "dlzoo_generations_total", model="lstm@1", reason="cancelled") == cancelled + 1
    )
    assert metric(http, "dlzoo_generation_streams", model="lstm@1") == 0.0, "its place is free"
    assert metric(http, "dlzoo_generated_tokens_total", model="lstm@1") - tokens_before < 2000
    assert http.post("/generate", json={"max_new_tokens": 5}).status_code == 200, (
        "the service goes on"
    )


def test_http_translate_greedy_equals_pytorch_and_beam_candidates(seq_repo, catalog, http):
    tr = seq2seq.Translator(catalog.resolve("seq2seq"))
    model = torch_model(seq_repo, "seq2seq")
    texts = date_texts(16, seed=2)
    reference = greedy_translate(
        model, dates_data.encode(texts, tr.vocab.tokens, tr.max_source_len), tr.max_target_len
    )
    for text, ids in zip(texts, reference):
        g = http.post("/translate", json={"text": text, "beam_width": 1})
        assert g.status_code == 200, g.text
        assert g.json()["output"] == reference_text(ids, tr.vocab)
        b = http.post("/translate", json={"text": text, "beam_width": 4, "num_return": 3}).json()
        assert len(b["candidates"]) <= 3 and b["output"] == b["candidates"][0]["text"]
        if g.json()["candidates"][0]["complete"]:
            assert b["score"] >= g.json()["score"] - 1e-9
    default = http.post("/translate", json={"text": texts[0]}).json()
    assert len(default["candidates"]) >= 1 and default["model"] == "seq2seq"


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/generate", {"max_new_tokens": 0}, 400, ["max_new_tokens", "1 to 2000"]),
        ("/generate", {"max_new_tokens": 2001}, 400, ["max_new_tokens", "1 to 2000"]),
        ("/generate", {"temperature": -0.1}, 400, ["temperature", "0.0 to 5.0"]),
        ("/generate", {"top_p": 1.5}, 400, ["top_p", "0.0 to 1.0"]),
        ("/generate", {"top_k": 0}, 400, ["top_k"]),
        ("/generate", {"top_k": 500}, 400, ["top_k", "1 to 104"]),
        ("/generate", {"seed": -1}, 400, ["seed"]),
        ("/generate", {"prompt": "x" * 2001}, 400, ["prompt", "2000"]),
        ("/generate", {"stop": ["a"] * 9}, 400, ["stop"]),
        ("/generate", {"stop": [""]}, 400, ["stop"]),
        ("/generate", {"max_tokens": 5}, 400, ["max_tokens"]),
        ("/generate", {"model": "nope"}, 404, ["model", "nope", "lstm"]),
        ("/generate", {"model": "seq2seq"}, 400, ["model", "seq2seq", "language_model"]),
        ("/generate", {"model": "lstm@9"}, 404, ["version 9"]),
        ("/generate_stream", {"temperature": 6}, 400, ["temperature", "0.0 to 5.0"]),
        ("/generate_stream", {"model": "seq2seq"}, 400, ["model", "language_model"]),
        ("/translate", {}, 400, ["text"]),
        ("/translate", {"text": ""}, 400, ["text"]),
        ("/translate", {"text": "x" * 201}, 400, ["text", "200"]),
        ("/translate", {"text": "x" * 33}, 400, ["text", "32", "max_source_len"]),
        ("/translate", {"text": "3 May 2021", "beam_width": 17}, 400, ["beam_width", "1 to 16"]),
        (
            "/translate",
            {"text": "3 May 2021", "beam_width": 2, "num_return": 3},
            400,
            ["num_return", "beam_width"],
        ),
        ("/translate", {"text": "3 May 2021", "max_length": 0}, 400, ["max_length"]),
        ("/translate", {"text": "3 May 2021", "model": "lstm"}, 400, ["model", "seq2seq"]),
    ],
)
def test_http_bad_requests_get_4xx_naming_the_field(http, path, body, status, words):
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    for word in words:
        assert word in r.text, (word, r.text)


def test_http_generation_channel_is_replaced_and_the_old_one_drains(seq_repo):
    """DLZOO_CHANNEL_SECONDS=0.3: a generation that outlives its channel's turn finishes on it while
    a newer generation starts on a new channel; the old channel closes after its last generation."""
    # one front worker: each worker has a channel of its own, and this follows one worker's turns
    with Server(
        seq_repo / "models", env={"DLZOO_CHANNEL_SECONDS": "0.3", "DLZOO_FRONT_WORKERS": "1"}
    ) as srv:
        with (
            httpx.Client(base_url=srv.url, timeout=60) as c,
            httpx.Client(base_url=srv.url, timeout=60) as s,
        ):
            # 2,000 prompt characters and 2,000 tokens: 4,000 steps, over a second on this machine
            request = {
                "model": "lstm",
                "prompt": "The " * 500,
                "max_new_tokens": 2000,
                "temperature": 0,
            }
            with s.stream("POST", "/generate_stream", json=request) as r:
                lines = r.iter_lines()
                assert next(lines).startswith("event: start") and next(lines).startswith("data:")
                assert metric(c, "dlzoo_generation_channels") == 1.0
                time.sleep(0.4)  # past the channel's turn, while the long generation runs
                assert (
                    c.post(
                        "/generate", json={**request, "prompt": "", "max_new_tokens": 5}
                    ).status_code
                    == 200
                )
                assert metric(c, "dlzoo_generation_streams", model="lstm@1") == 1.0, (
                    "the long one still runs"
                )
                assert metric(c, "dlzoo_generation_channels") == 2.0, (
                    "the old channel serves its generation"
                )
                events = sse_events(lines)
            assert events[-1][0] == "done" and events[-1][1]["tokens"] == 2000
            whole = c.post("/generate", json=request).json()["text"]
            assert "".join(d["text"] for k, d in events if k == "message") == whole
            deadline = time.monotonic() + 10
            while metric(c, "dlzoo_generation_channels") != 1.0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert metric(c, "dlzoo_generation_channels") == 1.0, (
                "the old channels closed after their last"
            )

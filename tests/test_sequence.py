"""Language models and seq2seq: data, dry-run training -> export -> card, and greedy decoding
driven through the exported ONNX graphs with numpy equal to PyTorch's from the same checkpoint."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from service.card import load_card, sha256_file
from training import pipeline
from training.data import dates as dates_data
from training.data.text import UNK, load_text
from training.loop import load_checkpoint
from training.tasks import rebuild
from training.tasks.language_model import LanguageModeling, greedy_generate, lm_sequences
from training.tasks.seq2seq import decode_ids, greedy_translate

LANGUAGE_MODELS = ("rnn", "lstm", "gru")


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --- data ---------------------------------------------------------------------------------------


def test_text_split_vocab_and_encoding(tmp_path):
    data = load_text()
    from pydoc_data.topics import topics

    full = "".join(topics[k] for k in sorted(topics))
    assert data.train + data.val == full and data.source == "pydoc_data.topics"
    assert len(data.val) == int(len(full) * 0.1), "the held-out tail is the last 10%"
    assert data.tokens[:-1] == sorted(set(data.train)) and data.tokens[-1] == UNK
    assert data.decode(data.encode("def f(x):\n")) == "def f(x):\n"
    assert data.encode("\u2603").tolist() == [data.unk]  # a snowman is not in the help text

    path = tmp_path / "tiny.txt"
    path.write_text("abcabcabcabcabcabcabcabcabcz", encoding="utf-8")
    tiny = load_text(path)
    assert tiny.source == str(path) and tiny.val.endswith("z")
    assert tiny.tokens == ["a", "b", "c", UNK] and tiny.encode("z").tolist() == [3]
    with pytest.raises(FileNotFoundError):
        load_text(tmp_path / "missing.txt")


def test_lm_sequences_tile_the_text():
    ids = torch.arange(23)
    seqs = lm_sequences(ids, 5)  # (4, 6): targets 1..20 once each
    assert seqs.shape == (4, 6)
    assert seqs[:, 1:].flatten().tolist() == list(range(1, 21))
    assert torch.equal(seqs[1, :], torch.arange(5, 11))


def test_dates_formats_round_trip_and_examples():
    examples = {dates_data.format_date(dt.date(2021, 3, 3), f) for f in dates_data.FORMATS}
    # the examples, verbatim
    assert {
        "3 March 2021",
        "March 3rd, 2021",
        "Mar 3 2021",
        "03-Mar-2021",
        "03.03.2021",
        "2021/03/03",
        "3/3/2021",
        "Wednesday, March 3, 2021",
        "Wed 3 Mar 2021",
        "20210303",
        "3 MAR 2021",
    } <= examples
    rng = random.Random(0)
    days = [dt.date(2021, 1, d) for d in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)]
    days += [dates_data.START + dt.timedelta(days=rng.randrange(36524)) for _ in range(300)]
    for day in days:
        for fmt in dates_data.FORMATS:
            text = dates_data.format_date(day, fmt)
            assert dates_data.parse_date(text, fmt) == day, (fmt, text)
            assert len(text) <= dates_data.MAX_SOURCE_LEN
    assert [dates_data.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "23rd",
        "101st",
        "111th",
    ]
    with pytest.raises(ValueError, match="Monday"):
        dates_data.parse_date(
            "Tuesday, March 1, 2021", "Weekday, Month D, YYYY"
        )  # 2021-03-01 is a Monday


def test_dates_are_deterministic_held_out_and_balanced():
    a = dates_data.load_dates(3, n_train=500, n_val=64, n_test=160)
    b = dates_data.load_dates(3, n_train=500, n_val=64, n_test=160)
    assert a == b
    assert dates_data.load_dates(4, n_train=500, n_val=64, n_test=160).train != a.train
    train_days = set(a.train.targets)
    assert not train_days & set(a.test.targets) and not train_days & set(a.val.targets)
    assert not set(a.val.targets) & set(a.test.targets)
    counts = {f: a.test.formats.count(f) for f in dates_data.FORMATS}
    assert set(counts.values()) == {160 // len(dates_data.FORMATS)}, (
        "test pairs cycle through formats"
    )
    for src, tgt, fmt in zip(a.test.sources, a.test.targets, a.test.formats):
        assert dates_data.parse_date(src, fmt).isoformat() == tgt
    assert a.tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert set("".join(a.train.sources + a.test.sources)) <= set(a.tokens)
    ids = a.encode(["3 MAR 2021"], dates_data.MAX_SOURCE_LEN)
    assert ids.shape == (1, dates_data.MAX_SOURCE_LEN) and (ids[0, 10:] == dates_data.PAD).all()


# --- language models ------------------------------------------------------------------------------

# "a few batches" beyond the dry run, so greedy decoding is not one repeated character
_LM_OPTIONS = {
    "epochs": 4,
    "max_batches": 100,
    "limit": 4000,
    "batch_size": 32,
    "lr": 2e-2,
    "schedule": "none",
    "patience": None,
}


@pytest.fixture(scope="module")
def language_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    built = {}
    for name in LANGUAGE_MODELS:
        options = _LM_OPTIONS if name == "lstm" else None
        folder = pipeline.train(
            name,
            profile="dry-run",
            options=options,
            models_root=root / "models",
            runs_root=root / "runs",
            progress=False,
        )
        built[name] = (folder, root / "runs" / name / "best.pt")
    return built


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_language_model_dry_run_exports_a_step_graph(name, language_models):
    folder, best = language_models[name]
    card = load_card(folder / "card.json")
    assert card.task == "language_model" and card.name == name and set(card.files) == {"step"}
    assert card.vocab.tokens[card.vocab.special["unk"]] == UNK
    assert card.parity["step"].max_abs_diff <= card.parity["step"].tolerance
    assert card.parity["step"].batch_sizes == [1, 7]
    assert "val_bpc" in card.metrics and card.training["seq_len"] == 32
    path = folder / card.files["step"].path
    assert sha256_file(path) == card.files["step"].sha256
    for extra in ("card.md", "metrics.jsonl", "learning_curves.png"):
        assert (folder / extra).stat().st_size > 0

    ckpt = load_checkpoint(best)
    model = rebuild(ckpt)
    slots = model.layers * (2 if name == "lstm" else 1)
    io = card.io["step"]
    assert [(t.name, t.dtype, t.shape) for t in io.inputs] == [
        ("tokens", "int64", ["batch"]),
        ("state", "float32", ["batch", slots, model.hidden]),
    ]
    assert [(t.name, t.shape) for t in io.outputs] == [
        ("logits", ["batch", len(card.vocab.tokens)]),
        ("next_state", ["batch", slots, model.hidden]),
    ]
    graph = onnx.load(str(path))
    for value in graph.graph.input:  # the batch axis is symbolic in the file itself
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = _session(path)
    for batch in (1, 3, 5):  # batch sizes the exporter never saw
        tokens = np.arange(batch, dtype=np.int64) % len(card.vocab.tokens)
        state = (
            np.random.default_rng(batch)
            .standard_normal((batch, slots, model.hidden))
            .astype(np.float32)
        )
        logits, next_state = sess.run(["logits", "next_state"], {"tokens": tokens, "state": state})
        with torch.inference_mode():
            want_logits, want_state = model(
                torch.from_numpy(tokens)[:, None], torch.from_numpy(state)
            )
        np.testing.assert_allclose(logits, want_logits[:, 0].numpy(), atol=1e-4, rtol=1e-3)
        np.testing.assert_allclose(next_state, want_state.numpy(), atol=1e-4, rtol=1e-3)


def test_language_model_greedy_decoding_onnx_equals_torch(language_models):
    folder, best = language_models["lstm"]
    card = load_card(folder / "card.json")
    index = {t: i for i, t in enumerate(card.vocab.tokens)}
    prompt = [index.get(c, card.vocab.special["unk"]) for c in "The object "]

    sess = _session(folder / card.files["step"].path)
    shape = [1 if d == "batch" else d for d in card.io["step"].inputs[1].shape]
    state = np.zeros(shape, dtype=np.float32)  # the card's initial state: zeros
    for token in prompt:
        logits, state = sess.run(
            ["logits", "next_state"], {"tokens": np.array([token]), "state": state}
        )
    generated = []
    for _ in range(50):
        token = int(np.argmax(logits[0]))
        generated.append(token)
        logits, state = sess.run(
            ["logits", "next_state"], {"tokens": np.array([token]), "state": state}
        )

    expected = greedy_generate(rebuild(load_checkpoint(best)), prompt, 50)
    assert generated == expected
    assert len(set(generated)) >= 3, "the trained model should not repeat one character"


def test_bits_per_char_of_a_uniform_model_is_log2_vocab():
    class Uniform(torch.nn.Module):
        def forward(self, tokens, state=None):
            return torch.zeros(*tokens.shape, 64), state

    ids = torch.randint(0, 64, (1000,), generator=torch.Generator().manual_seed(0))
    stats = LanguageModeling(streams=4, chunk=100).evaluate(Uniform(), (ids,))
    assert stats["bpc"] == pytest.approx(6.0, abs=1e-5)


# --- seq2seq --------------------------------------------------------------------------------------

_S2S_OPTIONS = {
    "epochs": 4,
    "max_batches": 80,
    "limit": 600,
    "batch_size": 32,
    "lr": 2e-2,
    "schedule": "none",
    "patience": None,
    "n_train": 3000,
}


@pytest.fixture(scope="module")
def seq2seq_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("s2s")
    folder = pipeline.train(
        "seq2seq",
        profile="dry-run",
        options=_S2S_OPTIONS,
        models_root=root / "models",
        runs_root=root / "runs",
        progress=False,
    )
    return folder, root / "runs" / "seq2seq" / "best.pt"


def test_seq2seq_dry_run_exports_encoder_and_decoder_step(seq2seq_model):
    folder, _ = seq2seq_model
    card = load_card(folder / "card.json")
    assert card.task == "seq2seq" and set(card.files) == {"encoder", "decoder_step"}
    assert card.vocab.special == {"pad": 0, "bos": 1, "eos": 2, "unk": 3}
    assert card.training["max_source_len"] == dates_data.MAX_SOURCE_LEN
    assert card.training["max_target_len"] == dates_data.TARGET_LEN + 1
    assert set(card.metrics["exact_match_by_format"]) == set(dates_data.FORMATS)
    assert 0.0 <= card.metrics["exact_match"] <= 1.0
    enc, dec = card.io["encoder"], card.io["decoder_step"]
    assert [(t.name, t.dtype, t.shape) for t in enc.inputs] == [
        ("tokens", "int64", ["batch", dates_data.MAX_SOURCE_LEN])
    ]
    assert [t.name for t in enc.outputs] == ["memory", "mask", "state"] and enc.outputs[
        1
    ].dtype == "bool"
    assert [t.name for t in dec.inputs] == ["tokens", "state", "memory", "mask"]
    assert [t.name for t in dec.outputs] == ["logits", "next_state", "attention"]
    for role in card.files:
        assert card.parity[role].max_abs_diff <= card.parity[role].tolerance
        graph = onnx.load(str(folder / card.files[role].path))
        assert all(v.type.tensor_type.shape.dim[0].dim_param == "batch" for v in graph.graph.input)


def _onnx_translate(encoder, decoder, source: np.ndarray, max_len: int) -> list[int]:
    memory, mask, state = encoder.run(["memory", "mask", "state"], {"tokens": source})
    token, out = np.array([dates_data.BOS] * len(source)), []
    for _ in range(max_len):
        logits, state, attention = decoder.run(
            ["logits", "next_state", "attention"],
            {"tokens": token, "state": state, "memory": memory, "mask": mask},
        )
        np.testing.assert_allclose(attention.sum(axis=1), 1.0, atol=1e-5)
        assert (attention[~mask] == 0).all(), "padding gets no attention"
        token = logits.argmax(axis=1)
        out.append(int(token[0]))
        if token[0] == dates_data.EOS:
            break
    return out


def test_seq2seq_greedy_decoding_onnx_equals_torch(seq2seq_model):
    folder, best = seq2seq_model
    card = load_card(folder / "card.json")
    ckpt = load_checkpoint(best)
    model = rebuild(ckpt)
    encoder = _session(folder / card.files["encoder"].path)
    decoder = _session(folder / card.files["decoder_step"].path)
    max_len = card.training["max_target_len"]
    days = [dt.date(1951 + 13 * i, 1 + i, 3 + 3 * i) for i in range(8)]
    texts = [dates_data.format_date(day, f) for day, f in zip(days, dates_data.FORMATS)]
    source = dates_data.encode(texts, card.vocab.tokens, card.training["max_source_len"])
    batched = greedy_translate(model, source, max_len)  # (B, max_len)
    outputs = []
    for i, text in enumerate(texts):  # one input at a time, as the service translates
        got = _onnx_translate(encoder, decoder, source[i : i + 1].numpy(), max_len)
        want = greedy_translate(model, source[i : i + 1], max_len)[0].tolist()
        assert got == want[: len(got)] and all(t == dates_data.PAD for t in want[len(got) :]), text
        assert batched[i].tolist() == want, "a batch decodes each row as it decodes alone"
        outputs.append(decode_ids(got, card.vocab.tokens))
    assert len(set(outputs)) > 1, f"the trained model should not answer every date alike: {outputs}"

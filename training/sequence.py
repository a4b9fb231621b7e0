"""Sequence tasks end to end: character language models and seq2seq translation.

Same shape as the classifier pipeline: data -> model -> ``loop.fit`` with a task objective -> best
checkpoint (``model_args``, config, vocabulary, data facts) -> an exporter that rebuilds the model
from the checkpoint alone and publishes the serving halves with ``export.publish``.

Graphs (names are the ONNX input/output names; ``batch`` is symbolic everywhere):

- language model, role ``step``: ``tokens`` (batch,) int64 and ``state`` (batch, layers*k, hidden)
  float32 -> ``logits`` (batch, vocab), ``next_state`` (same shape as ``state``). The initial state
  is zeros; k = 2 for LSTM (h stacked over c), else 1. (ONNX forbids an output named like an input,
  hence ``next_state``.)
- seq2seq, role ``encoder``: ``tokens`` (batch, max_source_len) int64, the source right-padded with
  ``<pad>`` -> ``memory`` (batch, max_source_len, 2*hidden), ``mask`` (batch, max_source_len) bool,
  ``state`` (batch, k, hidden); role ``decoder_step``: ``tokens`` (batch,) previous token (``<bos>``
  first), ``state``, ``memory``, ``mask`` -> ``logits`` (batch, vocab), ``next_state``,
  ``attention`` (batch, max_source_len). Decoding stops at ``<eos>`` or ``max_target_len`` tokens.

Task options beside ``loop.TrainConfig``'s (in a recipe's ``train`` dict; recorded in the card's
``training``): language models ``seq_len`` (truncated back-propagation length: every training
sequence starts from the zero state and is ``seq_len`` characters long), seq2seq ``n_train``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training import recipes
from training.architectures.recurrent import CharRNN, CharRNNStep
from training.architectures.seq2seq import Seq2Seq, Seq2SeqDecoderStep, Seq2SeqEncoder
from training.data import dates as dates_data
from training.data.text import load_text
from training.export import BATCH, Graph, publish
from training.loop import (
    TrainConfig,
    finish_distributed,
    fit,
    fit_metrics,
    history_lines,
    load_checkpoint,
    save_best,
)
from training.report import card_markdown, learning_curves

log = logging.getLogger("training")

LM_OPTIONS = {"seq_len": 128}
SEQ2SEQ_OPTIONS = {"n_train": 40_000}
LN2 = math.log(2.0)


# --- shared by the task trainers ------------------------------------------------------------------


def split_options(
    values: dict[str, Any], task_defaults: dict[str, Any]
) -> tuple[TrainConfig, dict[str, Any]]:
    """A recipe's train dict (plus CLI options) -> (TrainConfig, the task's own options)."""
    task = {k: values.get(k, v) for k, v in task_defaults.items()}
    return TrainConfig.from_dict({k: v for k, v in values.items() if k not in task_defaults}), task


# --- language models ------------------------------------------------------------------------------


class LanguageModeling:
    """Next-character cross-entropy; validation in bits per character over the whole held-out text.

    Validation runs the text as ``streams`` contiguous pieces side by side, carrying the state
    across ``chunk``-long windows, so every character but each stream's first is predicted from
    all the text before it in its stream: the state a served generation carries.
    """

    metric = "bpc"
    higher_is_better = False

    def __init__(self, streams: int = 16, chunk: int = 256):
        self.streams, self.chunk = streams, chunk

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (seq,) = batch  # (B, T + 1)
        logits, _ = model(seq[:, :-1])  # (B, T, V), from the zero state
        return F.cross_entropy(logits.flatten(0, 1), seq[:, 1:].flatten())

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, data: tuple[torch.Tensor, ...]) -> dict[str, float]:
        (ids,) = data  # (L,)
        streams = max(1, min(self.streams, len(ids) // 2))
        length = len(ids) // streams
        text = ids[: streams * length].view(streams, length)  # (S, L / S)
        state, total, count = None, 0.0, 0
        for start in range(0, length - 1, self.chunk):
            x = text[:, start : start + self.chunk + 1]  # (S, <= chunk + 1)
            logits, state = model(x[:, :-1], state)  # (S, t, V)
            total += F.cross_entropy(
                logits.flatten(0, 1).float(), x[:, 1:].flatten(), reduction="sum"
            ).item()
            count += x[:, 1:].numel()
        loss = total / max(count, 1)
        return {"loss": loss, "bpc": loss / LN2}


def lm_sequences(ids: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(L,) -> (N, seq_len + 1): consecutive windows whose targets tile the text once."""
    n = (len(ids) - 1) // seq_len
    if n < 1:
        raise ValueError(f"a text of {len(ids)} characters is shorter than seq_len {seq_len} + 1")
    index = torch.arange(n).unsqueeze(1) * seq_len + torch.arange(seq_len + 1)  # (N, T + 1)
    return ids[index]


def train_language_model(
    recipe: recipes.Recipe,
    *,
    profile: str | None = None,
    options: dict[str, Any] | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    models_root: Path = Path("models"),
    runs_root: Path = Path("runs"),
    resume: bool = False,
    progress: bool = True,
) -> Path | None:
    """Train a character language model on ``text`` and publish it. ``data_root``: a UTF-8 file
    (default: CPython's help topics)."""
    if (dataset or recipe.dataset) != "text":
        raise ValueError(
            f"{recipe.name}: language models train on 'text' (any UTF-8 file via "
            f"--data-root), not {dataset!r}"
        )
    model_args, train_opts, _ = recipe.resolved(profile)
    cfg, task = split_options({**train_opts, **(options or {})}, LM_OPTIONS)
    data = load_text(data_root)
    sequences = lm_sequences(data.encode(data.train), task["seq_len"])  # (N, T + 1)
    val_ids = data.encode(data.val)
    if cfg.limit is not None:
        sequences, val_ids = sequences[: cfg.limit], val_ids[: cfg.limit * task["seq_len"]]
    model_args = {**model_args, "vocab_size": len(data.tokens)}
    torch.manual_seed(cfg.seed)
    model = recipe.builder(**model_args)
    objective = LanguageModeling()
    meta = {
        "recipe": recipe.name,
        "task": recipe.task,
        "architecture": recipe.name,
        "model_args": model_args,
        "task_options": task,
    }
    run_dir = Path(runs_root) / recipe.name
    result = fit(
        model,
        (sequences,),
        (val_ids,),
        objective,
        cfg,
        run_dir,
        meta=meta,
        resume=resume,
        progress=progress,
    )
    if not finish_distributed():
        return None

    model.cpu().eval()
    val = objective.evaluate(model, (val_ids,))
    metrics = {
        "val_bpc": round(val["bpc"], 4),
        "val_loss": round(val["loss"], 4),
        **fit_metrics(result, model),
    }
    log.info(
        "%s: val %.3f bits/char (best epoch %d, %.0f s)",
        recipe.name,
        val["bpc"],
        result.best_epoch,
        result.seconds,
    )
    best = save_best(
        run_dir,
        meta=meta,
        cfg=cfg,
        model=model,
        metrics=metrics,
        history=result.history,
        data=data,
        tokens=data.tokens,
    )
    return export_language_model(best, models_root)


rebuild_language_model = recipes.rebuild  # the checkpoint carries recipe, model_args and weights


@torch.inference_mode()
def greedy_generate(model: CharRNN, prompt: list[int], n: int) -> list[int]:
    """PyTorch reference: read ``prompt`` from the zero state, then ``n`` most-likely tokens."""
    logits, state = model(torch.tensor([prompt]), model.init_state(1))  # (1, P, V)
    out: list[int] = []
    for _ in range(n):
        token = int(logits[0, -1].argmax())
        out.append(token)
        logits, state = model(torch.tensor([[token]]), state)  # (1, 1, V)
    return out


@torch.inference_mode()
def sample_text(
    model: CharRNN, tokens: list[str], prompt: str, n: int, temperature: float = 0.8, seed: int = 0
) -> str:
    """A seeded sample (for the card), ``temperature``-scaled."""
    index = {t: i for i, t in enumerate(tokens)}
    gen = torch.Generator().manual_seed(seed)
    logits, state = model(
        torch.tensor([[index.get(c, len(tokens) - 1) for c in prompt]]), model.init_state(1)
    )
    out = []
    for _ in range(n):
        probs = torch.softmax(logits[0, -1] / temperature, dim=0)
        token = int(torch.multinomial(probs, 1, generator=gen))
        out.append(tokens[token])
        logits, state = model(torch.tensor([[token]]), state)
    return prompt + "".join(out)


def export_language_model(path: Path, models_root: Path) -> Path:
    """Publish a language-model checkpoint's ``step`` graph and card; nothing is written on
    failure."""
    ckpt = load_checkpoint(path)
    model = rebuild_language_model(ckpt)
    vocab, slots, hidden = (
        ckpt["model_args"]["vocab_size"],
        model.layers * model.state_factor,
        model.hidden,
    )
    graph = Graph(
        module=CharRNNStep(model),
        make_inputs=lambda b, g: (
            torch.randint(0, vocab, (b,), generator=g),
            0.5 * torch.randn(b, slots, hidden, generator=g),
        ),
        input_names=["tokens", "state"],
        output_names=["logits", "next_state"],
        dynamic={"tokens": {0: BATCH}, "state": {0: BATCH}},
    )
    tokens = ckpt["tokens"]
    recipe = recipes.get(ckpt["recipe"])
    layout = f"state (batch, {slots}, {hidden}): zeros to start; " + (
        f"[:, :{model.layers}] hidden h, [:, {model.layers}:] cell c per layer"
        if model.cell == "lstm"
        else "one hidden state per layer"
    )
    card_fields = {
        "name": ckpt["recipe"],
        "architecture": ckpt["architecture"],
        "task": ckpt["task"],
        "dataset": ckpt["dataset"],
        "training": {
            **ckpt["config"],
            **ckpt["task_options"],
            "model_args": ckpt["model_args"],
            "state_layout": layout,
        },
        "metrics": ckpt["metrics"],
        "vocab": {"tokens": tokens, "special": {"unk": len(tokens) - 1}},
    }
    sample = sample_text(model, tokens, "The ", 300)
    extras: dict[str, Path | bytes] = {
        "metrics.jsonl": history_lines(ckpt["history"]),
        "learning_curves.png": learning_curves(ckpt["history"], "bpc"),
    }

    def card_md(card) -> str:
        return (
            card_markdown(card, recipe.summary, ["learning_curves.png"])
            + f"\n## Sample\n\nTemperature 0.8, seed 0, from `The `:\n\n```text\n{sample}\n```\n"
        )

    return publish(models_root, card_fields, {"step": graph}, extras, card_md=card_md)


# --- seq2seq --------------------------------------------------------------------------------------


@torch.inference_mode()
def greedy_translate(model: Seq2Seq, source: torch.Tensor, max_len: int) -> torch.Tensor:
    """PyTorch reference: source (B, S) -> (B, max_len) ids, ``<pad>`` after each row's
    ``<eos>``."""
    memory, mask, state = model.encode(source)
    token = torch.full((len(source),), dates_data.BOS, dtype=torch.int64)
    done = torch.zeros(len(source), dtype=torch.bool)
    out = []
    for _ in range(max_len):
        logits, state, _ = model.step(token, state, memory, mask)  # (B, V)
        token = logits.argmax(1)  # (B,)
        out.append(torch.where(done, torch.full_like(token, dates_data.PAD), token))
        done |= token == dates_data.EOS
        if bool(done.all()):
            break
    out += [torch.full_like(token, dates_data.PAD)] * (max_len - len(out))
    return torch.stack(out, dim=1)


def decode_ids(ids, tokens: list[str]) -> str:
    """Ids up to the first ``<eos>`` (specials dropped) -> text."""
    chars = []
    for i in ids:
        i = int(i)
        if i == dates_data.EOS:
            break
        if i >= len(dates_data.SPECIALS):
            chars.append(tokens[i])
    return "".join(chars)


class Translation:
    """Teacher-forced cross-entropy; validation also reports exact match of greedy decoding.

    Early stopping and the kept weights follow the validation cross-entropy: exact match saturates
    at 1.0 on dates within a few epochs, and its ties would keep the first epoch to get there.
    """

    metric = "loss"
    higher_is_better = False

    def __init__(self, max_len: int):
        self.max_len = max_len

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        source, target = batch  # (B, S), (B, T + 1) = <bos> y_1 .. y_n <eos> (<pad>...)
        logits = model(source, target[:, :-1])  # (B, T, V)
        return F.cross_entropy(
            logits.flatten(0, 1), target[:, 1:].flatten(), ignore_index=dates_data.PAD
        )

    @torch.inference_mode()
    def evaluate(
        self, model: nn.Module, data: tuple[torch.Tensor, ...], batch: int = 500
    ) -> dict[str, float]:
        source, target = data
        total, count, exact = 0.0, 0, 0
        for i in range(0, len(source), batch):
            s, t = source[i : i + batch], target[i : i + batch]
            logits = model(s, t[:, :-1])
            total += F.cross_entropy(
                logits.flatten(0, 1).float(),
                t[:, 1:].flatten(),
                ignore_index=dates_data.PAD,
                reduction="sum",
            ).item()
            count += int((t[:, 1:] != dates_data.PAD).sum())
            exact += int(self.matches(model, s, t).sum())
        return {"loss": total / max(count, 1), "exact_match": exact / max(len(source), 1)}

    def matches(self, model: nn.Module, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B,) bool: greedy output equals the target through ``<eos>``."""
        out = greedy_translate(model, source, self.max_len)  # (B, max_len)
        want = target[:, 1:]  # (B, T)
        width = max(out.shape[1], want.shape[1])
        out = F.pad(out, (0, width - out.shape[1]), value=dates_data.PAD)
        want = F.pad(want, (0, width - want.shape[1]), value=dates_data.PAD)
        return (out == want).all(dim=1)


def _seq2seq_tensors(data: dates_data.DatesData, pairs: dates_data.Pairs, limit: int | None):
    sources, targets = pairs.sources[:limit], pairs.targets[:limit]
    source = data.encode(sources, dates_data.MAX_SOURCE_LEN)  # (N, S)
    target = data.encode(targets, dates_data.TARGET_LEN + 1, eos=True)  # (N, T): y <eos>
    bos = torch.full((len(target), 1), dates_data.BOS, dtype=torch.int64)
    return source, torch.cat([bos, target], dim=1)  # (N, S), (N, T + 1)


def train_seq2seq(
    recipe: recipes.Recipe,
    *,
    profile: str | None = None,
    options: dict[str, Any] | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    models_root: Path = Path("models"),
    runs_root: Path = Path("runs"),
    resume: bool = False,
    progress: bool = True,
) -> Path | None:
    """Train the attention encoder-decoder on generated ``dates`` and publish it."""
    if (dataset or recipe.dataset) != "dates" or data_root is not None:
        raise ValueError(f"{recipe.name}: trains on the generated 'dates' pairs (no data root)")
    model_args, train_opts, _ = recipe.resolved(profile)
    cfg, task = split_options({**train_opts, **(options or {})}, SEQ2SEQ_OPTIONS)
    data = dates_data.load_dates(cfg.seed, n_train=task["n_train"])
    train = _seq2seq_tensors(data, data.train, cfg.limit)
    val = _seq2seq_tensors(data, data.val, cfg.limit)
    test = _seq2seq_tensors(data, data.test, cfg.limit)
    max_target = dates_data.TARGET_LEN + 1  # characters and <eos>
    model_args = {**model_args, "vocab_size": len(data.tokens), "pad": dates_data.PAD}
    torch.manual_seed(cfg.seed)
    model = recipe.builder(**model_args)
    objective = Translation(max_target)
    meta = {
        "recipe": recipe.name,
        "task": recipe.task,
        "architecture": recipe.name,
        "model_args": model_args,
        "task_options": task,
        "max_source_len": dates_data.MAX_SOURCE_LEN,
        "max_target_len": max_target,
    }
    run_dir = Path(runs_root) / recipe.name
    result = fit(
        model, train, val, objective, cfg, run_dir, meta=meta, resume=resume, progress=progress
    )
    if not finish_distributed():
        return None

    model.cpu().eval()
    scores = objective.evaluate(model, test)
    outputs = greedy_translate(model, test[0], max_target)  # (N, max_target)
    hits = [decode_ids(o, data.tokens) == t for o, t in zip(outputs, data.test.targets)]
    by_format: dict[str, float | None] = {}
    for fmt in dates_data.FORMATS:
        rows = [h for h, f in zip(hits, data.test.formats) if f == fmt]
        by_format[fmt] = round(sum(rows) / len(rows), 4) if rows else None
    errors = [
        {
            "source": data.test.sources[i],
            "target": data.test.targets[i],
            "output": decode_ids(outputs[i], data.tokens),
        }
        for i, h in enumerate(hits)
        if not h
    ][:20]
    metrics = {
        "exact_match": round(sum(hits) / len(hits), 4),
        "exact_match_by_format": by_format,
        "test_loss": round(scores["loss"], 5),
        "test_pairs": len(hits),
        **fit_metrics(result, model),
    }
    log.info(
        "%s: exact match %.4f on %d held-out dates (best epoch %d, %.0f s)",
        recipe.name,
        metrics["exact_match"],
        len(hits),
        result.best_epoch,
        result.seconds,
    )
    best = save_best(
        run_dir,
        meta=meta,
        cfg=cfg,
        model=model,
        metrics=metrics,
        history=result.history,
        data=data,
        splits={"train": len(train[0]), "val": len(val[0]), "test": len(test[0])},
        tokens=data.tokens,
        errors=errors,
    )
    return export_seq2seq(best, models_root)


rebuild_seq2seq = recipes.rebuild  # the checkpoint carries recipe, model_args and weights


def export_seq2seq(path: Path, models_root: Path) -> Path:
    """Publish a seq2seq checkpoint's ``encoder`` and ``decoder_step`` graphs and card."""
    ckpt = load_checkpoint(path)
    model = rebuild_seq2seq(ckpt)
    vocab, length = ckpt["model_args"]["vocab_size"], ckpt["max_source_len"]
    k, hidden = model.state_factor, model.hidden

    def source(b: int, g: torch.Generator) -> torch.Tensor:
        tokens = torch.randint(len(dates_data.SPECIALS), vocab, (b, length), generator=g)
        lengths = torch.randint(1, length + 1, (b, 1), generator=g)
        return torch.where(torch.arange(length) < lengths, tokens, dates_data.PAD)  # right-padded

    def step_inputs(b: int, g: torch.Generator):
        mask = torch.rand(b, length, generator=g) < 0.7
        mask[:, 0] = True  # a source has at least one token
        return (
            torch.randint(0, vocab, (b,), generator=g),
            0.5 * torch.randn(b, k, hidden, generator=g),
            0.5 * torch.randn(b, length, 2 * hidden, generator=g),
            mask,
        )

    graphs = {
        "encoder": Graph(
            Seq2SeqEncoder(model),
            lambda b, g: (source(b, g),),
            ["tokens"],
            ["memory", "mask", "state"],
            {"tokens": {0: BATCH}},
        ),
        "decoder_step": Graph(
            Seq2SeqDecoderStep(model),
            step_inputs,
            ["tokens", "state", "memory", "mask"],
            ["logits", "next_state", "attention"],
            {n: {0: BATCH} for n in ("tokens", "state", "memory", "mask")},
        ),
    }
    tokens = ckpt["tokens"]
    special = {name.strip("<>"): i for i, name in enumerate(dates_data.SPECIALS)}
    recipe = recipes.get(ckpt["recipe"])
    card_fields = {
        "name": ckpt["recipe"],
        "architecture": ckpt["architecture"],
        "task": ckpt["task"],
        "dataset": ckpt["dataset"],
        "training": {
            **ckpt["config"],
            **ckpt["task_options"],
            "model_args": ckpt["model_args"],
            "max_source_len": length,
            "max_target_len": ckpt["max_target_len"],
            "source_encoding": "characters as vocab ids (unknown -> unk), right-padded with "
            "pad to max_source_len; vocab shared by source and target",
            "formats": list(dates_data.FORMATS),
        },
        "metrics": ckpt["metrics"],
        "vocab": {"tokens": tokens, "special": special},
    }
    extras: dict[str, Path | bytes] = {
        "metrics.jsonl": history_lines(ckpt["history"]),
        "learning_curves.png": learning_curves(ckpt["history"], "exact_match"),
    }

    def card_md(card) -> str:
        rows = "\n".join(
            f"| {f} | `{dates_data.format_date(dt.date(2021, 3, 3), f)}` | {v} |"
            for f, v in card.metrics["exact_match_by_format"].items()
        )
        errs = "\n".join(
            f"| `{e['source']}` | `{e['target']}` | `{e['output']}` |" for e in ckpt["errors"]
        )
        return (
            card_markdown(card, recipe.summary, ["learning_curves.png"])
            + "\n## Exact match by format (held-out dates, greedy)\n\n"
            "| format | example | exact match |\n"
            + "|---|---|---|\n"
            + rows
            + "\n"
            + (
                "\n## Errors (first 20)\n\n| source | target | output |\n|---|---|---|\n"
                + errs
                + "\n"
                if errs
                else "\nNo errors on the held-out test pairs.\n"
            )
        )

    return publish(models_root, card_fields, graphs, extras, card_md=card_md)

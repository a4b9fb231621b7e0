"""Seq2seq translation of dates: generated ``dates`` pairs -> ``loop.fit`` -> best checkpoint ->
the ``encoder`` and ``decoder_step`` graphs (``batch`` is symbolic everywhere):

- ``encoder``: ``tokens`` (batch, max_source_len) int64, the source right-padded with ``<pad>`` ->
  ``memory`` (batch, max_source_len, 2*hidden), ``mask`` (batch, max_source_len) bool, ``state``
  (batch, k, hidden);
- ``decoder_step``: ``tokens`` (batch,) previous token (``<bos>`` first), ``state``, ``memory``,
  ``mask`` -> ``logits`` (batch, vocab), ``next_state``, ``attention`` (batch, max_source_len).
  Decoding stops at ``<eos>`` or ``max_target_len`` tokens.

Task option beside ``loop.TrainConfig``'s: ``n_train``, the number of training pairs.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from service.card import Card
from training.architectures.seq2seq import Seq2Seq, Seq2SeqDecoderStep, Seq2SeqEncoder
from training.data import dates as dates_data
from training.export import BATCH, Graph
from training.loop import finish_distributed, fit, load_checkpoint, split_options
from training.recipes import Recipe, get
from training.report import learning_curves
from training.tasks.common import (
    card_fields,
    fit_metrics,
    history_lines,
    publish_run,
    run_meta,
    save_best,
)

log = logging.getLogger("training")

SEQ2SEQ_OPTIONS = {"n_train": 40_000}


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


def _tensors(data: dates_data.DatesData, pairs: dates_data.Pairs, limit: int | None):
    sources, targets = pairs.sources[:limit], pairs.targets[:limit]
    source = data.encode(sources, dates_data.MAX_SOURCE_LEN)  # (N, S)
    target = data.encode(targets, dates_data.TARGET_LEN + 1, eos=True)  # (N, T): y <eos>
    bos = torch.full((len(target), 1), dates_data.BOS, dtype=torch.int64)
    return source, torch.cat([bos, target], dim=1)  # (N, S), (N, T + 1)


def train(
    recipe: Recipe,
    *,
    profile: str | None = None,
    options: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
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
    defaults, train_opts, _ = recipe.resolved(profile)
    cfg, task = split_options({**train_opts, **(options or {})}, SEQ2SEQ_OPTIONS)
    data = dates_data.load_dates(cfg.seed, n_train=task["n_train"])
    train_pairs = _tensors(data, data.train, cfg.limit)
    val = _tensors(data, data.val, cfg.limit)
    test = _tensors(data, data.test, cfg.limit)
    max_target = dates_data.TARGET_LEN + 1  # characters and <eos>
    model_args = {
        **defaults,
        **(model_args or {}),
        "vocab_size": len(data.tokens),
        "pad": dates_data.PAD,
    }
    torch.manual_seed(cfg.seed)
    model = recipe.builder(**model_args)
    objective = Translation(max_target)
    meta = run_meta(
        recipe,
        model_args,
        task_options=task,
        max_source_len=dates_data.MAX_SOURCE_LEN,
        max_target_len=max_target,
    )
    run_dir = Path(runs_root) / recipe.name
    result = fit(
        model,
        train_pairs,
        val,
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
        splits={"train": len(train_pairs[0]), "val": len(val[0]), "test": len(test[0])},
        tokens=data.tokens,
        errors=errors,
    )
    return export(best, models_root)


def rebuild(ckpt: dict[str, Any]) -> Seq2Seq:
    """The encoder-decoder a checkpoint describes, from the checkpoint alone (eval mode)."""
    model = get(ckpt["recipe"]).builder(**ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def _appendix(card: Card, errors: list[dict[str, str]]) -> str:
    """card.md's exact match per format and the first errors."""
    rows = "\n".join(
        f"| {f} | `{dates_data.format_date(dt.date(2021, 3, 3), f)}` | {v} |"
        for f, v in card.metrics["exact_match_by_format"].items()
    )
    errs = "\n".join(f"| `{e['source']}` | `{e['target']}` | `{e['output']}` |" for e in errors)
    return (
        "\n## Exact match by format (held-out dates, greedy)\n\n"
        "| format | example | exact match |\n"
        + "|---|---|---|\n"
        + rows
        + "\n"
        + (
            "\n## Errors (first 20)\n\n| source | target | output |\n|---|---|---|\n" + errs + "\n"
            if errs
            else "\nNo errors on the held-out test pairs.\n"
        )
    )


def export(checkpoint_path: Path, models_root: Path) -> Path:
    """Publish a seq2seq checkpoint's ``encoder`` and ``decoder_step`` graphs and card."""
    ckpt = load_checkpoint(checkpoint_path)
    model = rebuild(ckpt)
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
    special = {name.strip("<>"): i for i, name in enumerate(dates_data.SPECIALS)}
    fields = {
        **card_fields(
            ckpt,
            max_source_len=length,
            max_target_len=ckpt["max_target_len"],
            source_encoding="characters as vocab ids (unknown -> unk), right-padded with "
            "pad to max_source_len; vocab shared by source and target",
            formats=list(dates_data.FORMATS),
        ),
        "vocab": {"tokens": ckpt["tokens"], "special": special},
    }
    extras: dict[str, Path | bytes] = {
        "metrics.jsonl": history_lines(ckpt["history"]),
        "learning_curves.png": learning_curves(ckpt["history"], "exact_match"),
    }
    return publish_run(
        ckpt,
        models_root,
        fields,
        graphs,
        extras,
        appendix=lambda card: _appendix(card, ckpt["errors"]),
    )

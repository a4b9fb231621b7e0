"""Character language models: ``text`` -> ``loop.fit`` -> best checkpoint (``model_args``,
config, vocabulary, data facts) -> the ``step`` graph.

Graph ``step``: ``tokens`` (batch,) int64 and ``state`` (batch, layers*k, hidden) float32 ->
``logits`` (batch, vocab), ``next_state`` (same shape as ``state``). The initial state is zeros;
k = 2 for LSTM (h stacked over c), else 1. (ONNX forbids an output named like an input, hence
``next_state``.)

Task option beside ``loop.TrainConfig``'s (in a recipe's ``train`` dict; recorded in the card's
``training``): ``seq_len``, the truncated back-propagation length: every training sequence starts
from the zero state and is ``seq_len`` characters long.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from service.card import Card
from training.architectures.recurrent import CharRNN, CharRNNStep
from training.data.text import load_text
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

LM_OPTIONS = {"seq_len": 128}
LN2 = math.log(2.0)


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
    """Train a character language model on ``text`` and publish it. ``data_root``: a UTF-8 file
    (default: CPython's help topics)."""
    if (dataset or recipe.dataset) != "text":
        raise ValueError(
            f"{recipe.name}: language models train on 'text' (any UTF-8 file via "
            f"--data-root), not {dataset!r}"
        )
    defaults, train_opts, _ = recipe.resolved(profile)
    cfg, task = split_options({**train_opts, **(options or {})}, LM_OPTIONS)
    data = load_text(data_root)
    sequences = lm_sequences(data.encode(data.train), task["seq_len"])  # (N, T + 1)
    val_ids = data.encode(data.val)
    if cfg.limit is not None:
        sequences, val_ids = sequences[: cfg.limit], val_ids[: cfg.limit * task["seq_len"]]
    model_args = {**defaults, **(model_args or {}), "vocab_size": len(data.tokens)}
    torch.manual_seed(cfg.seed)
    model = recipe.builder(**model_args)
    objective = LanguageModeling()
    meta = run_meta(recipe, model_args, task_options=task)
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
    return export(best, models_root)


def rebuild(ckpt: dict[str, Any]) -> CharRNN:
    """The language model a checkpoint describes, from the checkpoint alone (eval mode)."""
    model = get(ckpt["recipe"]).builder(**ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


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


def export(checkpoint_path: Path, models_root: Path) -> Path:
    """Publish a language-model checkpoint's ``step`` graph and card; nothing is written on
    failure."""
    ckpt = load_checkpoint(checkpoint_path)
    model = rebuild(ckpt)
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
    layout = f"state (batch, {slots}, {hidden}): zeros to start; " + (
        f"[:, :{model.layers}] hidden h, [:, {model.layers}:] cell c per layer"
        if model.cell == "lstm"
        else "one hidden state per layer"
    )
    fields = {
        **card_fields(ckpt, state_layout=layout),
        "vocab": {"tokens": tokens, "special": {"unk": len(tokens) - 1}},
    }
    sample = sample_text(model, tokens, "The ", 300)
    extras: dict[str, Path | bytes] = {
        "metrics.jsonl": history_lines(ckpt["history"]),
        "learning_curves.png": learning_curves(ckpt["history"], "bpc"),
    }

    def appendix(card: Card) -> str:
        return f"\n## Sample\n\nTemperature 0.8, seed 0, from `The `:\n\n```text\n{sample}\n```\n"

    return publish_run(ckpt, models_root, fields, {"step": graph}, extras, appendix=appendix)

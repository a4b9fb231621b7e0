"""The PyTorch module behind each graph of a card, for PyTorch-vs-ONNX-Runtime comparisons.

From the run's best checkpoint (``runs/<name>/best.pt``, rebuilt by the training code) when there is
one; otherwise the card's architecture with random weights, which is as fast (speed does not depend
on the weights) but then the caller must export it again (``training.export.export_graph``) so that
ONNX Runtime runs the same network. :func:`module_for` says which it did.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from service.card import Card
from training import recipes
from training.architectures.gan import ImageGenerator
from training.architectures.recurrent import CharRNNStep
from training.architectures.seq2seq import Seq2SeqDecoderStep, Seq2SeqEncoder
from training.architectures.vae import VAEDecoder, VAEEncoder
from training.loop import load_checkpoint
from training.tasks import rebuild
from training.tasks.classify import Normalized

# task -> role -> the serving half of the rebuilt model, as the exporters wrap it
HALVES = {
    "classify": {"model": lambda m: m},
    "language_model": {"step": CharRNNStep},
    "seq2seq": {"encoder": Seq2SeqEncoder, "decoder_step": Seq2SeqDecoderStep},
    "vae": {"encoder": VAEEncoder, "decoder": VAEDecoder},
    "gan": {"generator": lambda m: ImageGenerator(m.generator)},
}


def _from_card(card: Card) -> nn.Module:
    """The card's architecture with fresh random weights (eval mode)."""
    args = dict(card.training["model_args"])
    recipe = recipes.get(card.architecture if card.architecture in recipes.RECIPES else card.name)
    if card.task == "classify":
        pre = card.preprocess
        net = recipe.builder(
            num_classes=len(card.labels),
            in_channels=pre.channels,
            input_size=tuple(pre.size),
            **args,
        )
        return Normalized(net, pre.mean, pre.std).eval()
    return recipe.builder(**args).eval()


def whole_model(card: Card, runs: Path) -> tuple[nn.Module, str]:
    """(model, source): the checkpoint's weights if ``runs/<name>/best.pt`` loads, else random."""
    path = Path(runs) / card.name / "best.pt"
    if path.is_file():
        try:
            ckpt = load_checkpoint(path)
            return rebuild(ckpt).eval(), f"checkpoint {path}"
        except Exception as exc:
            return _from_card(card), f"random weights ({path} did not load: {exc})"
    return _from_card(card), f"random weights (no {path})"


def module_for(card: Card, role: str, runs: Path) -> tuple[nn.Module, str]:
    model, source = whole_model(card, runs)
    return HALVES[card.task][role](model).eval(), source


def example_inputs(card: Card, role: str, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs shaped by the card (symbolic axes -> ``batch``): valid token ids, a true first
    mask."""
    rng = np.random.default_rng(seed)
    vocab = len(card.vocab.tokens) if card.vocab else 2
    feeds = {}
    for spec in card.io[role].inputs:
        shape = [batch if isinstance(d, str) else d for d in spec.shape]
        if spec.dtype in ("int64", "int32"):
            low = min(4, vocab - 1)
            feeds[spec.name] = rng.integers(low, vocab, size=shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            mask = rng.random(shape) < 0.8
            mask[..., 0] = True
            feeds[spec.name] = mask
        elif spec.name in ("pixels", "image"):
            feeds[spec.name] = rng.random(shape, dtype=np.float32)
        else:
            feeds[spec.name] = (0.5 * rng.standard_normal(shape)).astype(np.float32)
    return feeds


def as_torch(feeds: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values())

"""Characters and choices: a card's vocabulary, and how a token is drawn from a step's logits.

Used by the language models (service/sequence.py) and seq2seq (service/seq2seq.py); the sampling
rules are listed in service/sequence.py's docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# --- vocabulary ---------------------------------------------------------------------------------


class Vocab:
    """A card's vocabulary: characters <-> ids, the unknown id, the special ids."""

    def __init__(self, tokens: Sequence[str], special: dict[str, int]):
        self.tokens = list(tokens)
        self.special = dict(special)
        self.unk = self.special["unk"]
        self.index = {t: i for i, t in enumerate(self.tokens) if i not in self.special.values()}

    @classmethod
    def of(cls, card) -> Vocab:
        return cls(card.vocab.tokens, card.vocab.special)

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """Ids for ``text`` (unknown characters -> unk) and the unknown characters, once each."""
        ids, unknown = [], []
        for ch in text:
            i = self.index.get(ch)
            if i is None:
                i = self.unk
                if ch not in unknown:
                    unknown.append(ch)
            ids.append(i)
        return ids, unknown

    def char(self, i: int) -> str:
        """The text of one generated id (a special token writes nothing)."""
        return "" if i in self.special.values() else self.tokens[i]


# --- sampling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None  # None = all tokens
    top_p: float = 1.0


def choose(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """One token id from a row of logits (see the module docstring for the rule)."""
    if sampling.temperature == 0:
        return int(np.argmax(logits))  # the first maximum, as torch.argmax
    z = np.asarray(logits, np.float64) / sampling.temperature
    if sampling.top_k is None and sampling.top_p >= 1.0:  # no cut: draw in id order, no sort
        cdf = np.cumsum(np.exp(z - z.max()))
        return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(z) - 1)
    order = np.argsort(-z, kind="stable")  # most likely first; ties keep the lower id first
    if sampling.top_k is not None:
        order = order[: sampling.top_k]
    z = z[order]
    p = np.exp(z - z[0])
    p /= p.sum()
    if sampling.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), sampling.top_p) + 1)  # reach top_p, at least one
        p = p[:keep] / p[:keep].sum()
    cdf = np.cumsum(p)
    pick = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return int(order[min(pick, len(p) - 1)])


def choose_many(
    logits: np.ndarray, samplings: Sequence[Sampling], rngs: Sequence[np.random.Generator]
) -> list[int]:
    """``[choose(logits[i], samplings[i], rngs[i]) for i ...]``, the same ids bit for bit, with the
    greedy rows and the rows without a cut each done in a few numpy calls for the whole step.

    Why: one step of 16 streams spent ~25% of the Inference process's GIL time in per-row numpy
    calls (py-spy); the step loop is serial, so that time is every stream's. The arithmetic is the
    same per element and per row (division, exp, a running sum along the row, "how many cdf values
    <= the draw" for ``searchsorted(side="right")``), and each row still draws from its own
    generator.
    Rows with top-k or top-p sort, and go through ``choose`` one by one."""
    out: list[int] = [0] * len(samplings)
    greedy, plain, other = [], [], []
    for i, s in enumerate(samplings):
        if s.temperature == 0:
            greedy.append(i)
        elif s.top_k is None and s.top_p >= 1.0:
            plain.append(i)
        else:
            other.append(i)
    if len(greedy) < 2:  # alone, the whole-step form only adds numpy calls (a single stream: ~15%)
        other, greedy = other + greedy, []
    if len(plain) < 2:
        other, plain = other + plain, []
    for i in other:
        out[i] = choose(logits[i], samplings[i], rngs[i])
    if greedy:
        for i, token in zip(greedy, np.argmax(logits[greedy], axis=1).tolist()):
            out[i] = token
    if plain:
        temps = np.array([samplings[i].temperature for i in plain], np.float64)
        z = np.asarray(logits[plain], np.float64) / temps[:, None]
        cdf = np.cumsum(np.exp(z - z.max(axis=1, keepdims=True)), axis=1)
        draws = np.array([rngs[i].random() for i in plain]) * cdf[:, -1]
        picks = np.minimum((cdf <= draws[:, None]).sum(axis=1), cdf.shape[1] - 1)
        for i, token in zip(plain, picks.tolist()):
            out[i] = token
    return out

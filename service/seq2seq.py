"""Seq2seq decoding: greedy and beam search over exported graphs, plain numpy, no HTTP.

Seq2seq (task ``seq2seq``) serves ``encoder`` (source ids right-padded to the card's
``max_source_len`` -> ``memory``, ``mask``, ``state``) and ``decoder_step`` (``tokens``, ``state``,
``memory``, ``mask`` -> ``logits``, ``next_state``, ``attention``). :meth:`Translator.translate`
runs greedy decoding for ``beam_width`` 1 and beam search otherwise; the greedy path rides along in
the beam's batched step calls, so the best answer is never worse than greedy's.

With ``attention=True`` each candidate also carries the decoder's attention weights, one row per
output token (``<eos>`` included) over the source characters, from the ``attention`` output of
``decoder_step``. Graphs exported before that output existed do not have it: :func:`check_attention`
says so as a 422 before any work is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import Unprocessable
from service.sampling import Vocab

SEQ2SEQ_TASKS = ("seq2seq",)
ATTENTION = "attention"  # the decoder_step output with the attention weights (batch, source)


def has_attention(card) -> bool:
    return ATTENTION in [t.name for t in card.io["decoder_step"].outputs]


def check_attention(card) -> None:
    """A 422 naming the problem when attention is asked of a graph that does not output it."""
    if not has_attention(card):
        raise Unprocessable(
            f"attention: {card.ref}'s decoder_step graph has no '{ATTENTION}' output (it was "
            "exported before attention weights were); ask without attention, or export the model "
            "again with this version of training"
        )


class TextTooLong(ValueError):
    """A source text longer than the seq2seq model reads (the message names the limit)."""


@dataclass
class Candidate:
    ids: list[int]
    log_prob: float
    complete: bool  # ended with <eos> (else cut at max_length)
    attention: list[np.ndarray] | None = None  # (source,) per step, <eos>'s included


class Translator:
    """A seq2seq entry's encoder and decoder_step graphs."""

    def __init__(self, entry):
        card = entry.card
        self.entry = entry
        self.vocab = Vocab.of(card)
        self.encoder, self.decoder = entry.sessions["encoder"], entry.sessions["decoder_step"]
        self.enc_in = card.io["encoder"].inputs[0].name
        self.enc_out = [t.name for t in card.io["encoder"].outputs]  # memory, mask, state
        self.dec_in = [
            t.name for t in card.io["decoder_step"].inputs
        ]  # tokens, state, memory, mask
        self.dec_out = [t.name for t in card.io["decoder_step"].outputs][:2]  # logits, next_state
        self.attends = has_attention(card)
        self.max_source_len = int(card.training["max_source_len"])
        self.max_target_len = int(card.training["max_target_len"])
        self.bos, self.eos, self.pad = (self.vocab.special[k] for k in ("bos", "eos", "pad"))

    def encode(self, text: str) -> tuple[tuple[np.ndarray, ...], list[str]]:
        ids, unknown = self.vocab.encode(text)
        if len(ids) > self.max_source_len:
            raise TextTooLong(
                f"text: {len(ids)} characters; {self.entry.ref} reads at most "
                f"{self.max_source_len} (its card's max_source_len)"
            )
        source = np.full((1, self.max_source_len), self.pad, np.int64)
        source[0, : len(ids)] = ids
        memory, mask, state = self.encoder.run(self.enc_out, {self.enc_in: source})
        return (memory, mask, state), unknown

    def _step(
        self,
        tokens: np.ndarray,
        state: np.ndarray,
        memory: np.ndarray,
        mask: np.ndarray,
        attention: bool = False,
    ):
        """One decoder call for the rows of one source: logits, log-probs, next_state and the
        attention weights (batch, source), or None unless asked."""
        n = len(tokens)
        feed = dict(
            zip(self.dec_in, (tokens, state, np.repeat(memory, n, 0), np.repeat(mask, n, 0)))
        )
        names = self.dec_out + [ATTENTION] if attention else self.dec_out
        logits, next_state, *weights = self.decoder.run(names, feed)
        z = logits.astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return logits, logp, next_state, (weights[0] if weights else None)

    def greedy(
        self, text: str, max_length: int, attention: bool = False
    ) -> tuple[Candidate, list[str]]:
        """The most likely token at every step (argmax of the raw logits, as PyTorch's)."""
        (memory, mask, state), unknown = self.encode(text)
        ids, total, token = [], 0.0, np.array([self.bos], np.int64)
        rows: list[np.ndarray] | None = [] if attention else None
        for _ in range(max_length):
            logits, logp, state, weights = self._step(token, state, memory, mask, attention)
            if rows is not None:
                rows.append(weights[0])
            best = int(np.argmax(logits[0]))
            total += float(logp[0, best])
            if best == self.eos:
                return Candidate(ids, total, True, rows), unknown
            ids.append(best)
            token = np.array([best], np.int64)
        return Candidate(ids, total, False, rows), unknown

    def beam(
        self, text: str, beam_width: int, max_length: int, attention: bool = False
    ) -> tuple[list[Candidate], list[str]]:
        """Beam search by summed log probability, with the greedy path in the same calls.

        Each step is one decoder call over the live beams plus the greedy row. A hypothesis that
        emits ``<eos>`` is finished. The beams stop when ``beam_width`` hypotheses are finished and
        no live beam can still beat the worst of them (log probabilities only fall), or at
        ``max_length`` (live beams are then kept as incomplete candidates). The greedy row goes on
        until its own ``<eos>``. Returns distinct candidates: complete ones first, each group by
        log probability, best first. With ``attention`` each hypothesis keeps its rows of weights.
        """
        (memory, mask, state), unknown = self.encode(text)
        none: list[np.ndarray] | None = [] if attention else None
        Hyp = tuple[list[int], float, list[np.ndarray] | None]  # (ids, log_prob, attention rows)
        beams: list[Hyp] = [([], 0.0, none)]
        beam_state = state
        greedy: Hyp | None = ([], 0.0, none)
        greedy_state = state
        finished: list[Candidate] = []

        def rows_with(rows, weights, r):
            return None if rows is None else rows + [weights[r]]

        for _ in range(max_length):
            if not beams and greedy is None:
                break
            tokens = [ids[-1] if ids else self.bos for ids, _, _ in beams]
            states = [beam_state] if beams else []
            if greedy is not None:
                tokens.append(greedy[0][-1] if greedy[0] else self.bos)
                states.append(greedy_state)
            logits, logp, next_state, weights = self._step(
                np.array(tokens, np.int64), np.concatenate(states), memory, mask, attention
            )
            if greedy is not None:
                g = len(beams)
                best = int(np.argmax(logits[g]))
                ids, score = greedy[0], greedy[1] + float(logp[g, best])
                rows = rows_with(greedy[2], weights, g)
                if best == self.eos:
                    finished.append(Candidate(ids, score, True, rows))
                    greedy = None
                else:
                    greedy, greedy_state = (ids + [best], score, rows), next_state[g : g + 1]
            if not beams:
                continue
            scores = np.array([score for _, score, _ in beams])[:, None] + logp[: len(beams)]
            kept: list[Hyp] = []
            rows_kept: list[int] = []
            for f in np.argsort(-scores, axis=None, kind="stable")[: 2 * beam_width]:
                row, token = divmod(int(f), scores.shape[1])
                ids, _, rows = beams[row]
                score = float(scores[row, token])
                if token == self.eos:
                    finished.append(Candidate(ids, score, True, rows_with(rows, weights, row)))
                elif len(kept) < beam_width:
                    kept.append((ids + [token], score, rows_with(rows, weights, row)))
                    rows_kept.append(row)
            beams, beam_state = kept, next_state[rows_kept]
            complete = sorted((c.log_prob for c in finished if c.complete), reverse=True)
            if len(complete) >= beam_width and (
                not beams or beams[0][1] < complete[beam_width - 1]
            ):
                beams = []  # none of the live beams can enter the top beam_width any more
        finished += [Candidate(ids, score, False, rows) for ids, score, rows in beams]
        if greedy is not None:
            finished.append(Candidate(*greedy[:2], False, greedy[2]))
        order = sorted(finished, key=lambda c: (not c.complete, -c.log_prob))
        unique: dict[tuple[int, ...], Candidate] = {}
        for c in order:
            unique.setdefault(tuple(c.ids), c)
        return list(unique.values()), unknown

    def translate(
        self,
        text: str,
        *,
        beam_width: int = 4,
        num_return: int = 1,
        max_length: int | None = None,
        attention: bool = False,
    ) -> dict[str, Any]:
        if attention:
            check_attention(self.entry.card)
        max_length = self.max_target_len if max_length is None else max_length
        if beam_width == 1:
            best, unknown = self.greedy(text, max_length, attention)
            candidates = [best]
        else:
            candidates, unknown = self.beam(text, beam_width, max_length, attention)
        text_of = lambda c: "".join(self.vocab.char(i) for i in c.ids)  # noqa: E731
        out = [
            {"text": text_of(c), "log_prob": round(c.log_prob, 6), "complete": c.complete}
            for c in candidates[:num_return]
        ]
        if attention:
            for answer, c in zip(out, candidates):
                answer["attention"] = self._attention(text, c)
        return {
            "output": out[0]["text"],
            "score": out[0]["log_prob"],
            "candidates": out,
            "unknown_chars": unknown,
        }

    def _attention(self, text: str, c: Candidate) -> dict[str, Any]:
        """A candidate's attention as a table: ``weights[i][j]``, output token i (as the
        vocabulary writes it, ``<eos>`` last if it ended) on source character j."""
        output = [self.vocab.tokens[i] for i in c.ids]
        if c.complete:
            output.append(self.vocab.tokens[self.eos])
        weights = [[round(float(w), 4) for w in row[: len(text)]] for row in c.attention]
        return {"source": list(text), "output": output, "weights": weights}

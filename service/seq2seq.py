"""Seq2seq decoding: greedy and beam search over exported graphs, plain numpy, no HTTP.

Seq2seq (task ``seq2seq``) serves ``encoder`` (source ids right-padded to the card's
``max_source_len`` -> ``memory``, ``mask``, ``state``) and ``decoder_step`` (``tokens``, ``state``,
``memory``, ``mask`` -> ``logits``, ``next_state``, ``attention``). :meth:`Translator.translate`
runs greedy decoding for ``beam_width`` 1 and beam search otherwise; the greedy path rides along in
the beam's batched step calls, so the best answer is never worse than greedy's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.sampling import Vocab

SEQ2SEQ_TASKS = ("seq2seq",)


class TextTooLong(ValueError):
    """A source text longer than the seq2seq model reads (the message names the limit)."""


@dataclass
class Candidate:
    ids: list[int]
    log_prob: float
    complete: bool  # ended with <eos> (else cut at max_length)


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

    def _step(self, tokens: np.ndarray, state: np.ndarray, memory: np.ndarray, mask: np.ndarray):
        """One decoder call for the rows of one source: logits, log-probs, next_state."""
        n = len(tokens)
        feed = dict(
            zip(self.dec_in, (tokens, state, np.repeat(memory, n, 0), np.repeat(mask, n, 0)))
        )
        logits, next_state = self.decoder.run(self.dec_out, feed)
        z = logits.astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        return logits, z - np.log(np.exp(z).sum(axis=1, keepdims=True)), next_state

    def greedy(self, text: str, max_length: int) -> tuple[Candidate, list[str]]:
        """The most likely token at every step (argmax of the raw logits, as PyTorch's)."""
        (memory, mask, state), unknown = self.encode(text)
        ids, total, token = [], 0.0, np.array([self.bos], np.int64)
        for _ in range(max_length):
            logits, logp, state = self._step(token, state, memory, mask)
            best = int(np.argmax(logits[0]))
            total += float(logp[0, best])
            if best == self.eos:
                return Candidate(ids, total, True), unknown
            ids.append(best)
            token = np.array([best], np.int64)
        return Candidate(ids, total, False), unknown

    def beam(
        self, text: str, beam_width: int, max_length: int
    ) -> tuple[list[Candidate], list[str]]:
        """Beam search by summed log probability, with the greedy path in the same calls.

        Each step is one decoder call over the live beams plus the greedy row. A hypothesis that
        emits ``<eos>`` is finished. The beams stop when ``beam_width`` hypotheses are finished and
        no live beam can still beat the worst of them (log probabilities only fall), or at
        ``max_length`` (live beams are then kept as incomplete candidates). The greedy row goes on
        until its own ``<eos>``. Returns distinct candidates: complete ones first, each group by
        log probability, best first.
        """
        (memory, mask, state), unknown = self.encode(text)
        beams: list[tuple[list[int], float]] = [([], 0.0)]  # (ids, log_prob)
        beam_state = state
        greedy: tuple[list[int], float] | None = ([], 0.0)
        greedy_state = state
        finished: list[Candidate] = []
        for _ in range(max_length):
            if not beams and greedy is None:
                break
            rows = [ids[-1] if ids else self.bos for ids, _ in beams]
            states = [beam_state] if beams else []
            if greedy is not None:
                rows.append(greedy[0][-1] if greedy[0] else self.bos)
                states.append(greedy_state)
            logits, logp, next_state = self._step(
                np.array(rows, np.int64), np.concatenate(states), memory, mask
            )
            if greedy is not None:
                g = len(beams)
                best = int(np.argmax(logits[g]))
                ids, score = greedy[0], greedy[1] + float(logp[g, best])
                if best == self.eos:
                    finished.append(Candidate(ids, score, True))
                    greedy = None
                else:
                    greedy, greedy_state = (ids + [best], score), next_state[g : g + 1]
            if not beams:
                continue
            scores = np.array([score for _, score in beams])[:, None] + logp[: len(beams)]
            kept: list[tuple[list[int], float]] = []
            rows_kept: list[int] = []
            for f in np.argsort(-scores, axis=None, kind="stable")[: 2 * beam_width]:
                row, token = divmod(int(f), scores.shape[1])
                if token == self.eos:
                    finished.append(Candidate(beams[row][0], float(scores[row, token]), True))
                elif len(kept) < beam_width:
                    kept.append((beams[row][0] + [token], float(scores[row, token])))
                    rows_kept.append(row)
            beams, beam_state = kept, next_state[rows_kept]
            complete = sorted((c.log_prob for c in finished if c.complete), reverse=True)
            if len(complete) >= beam_width and (
                not beams or beams[0][1] < complete[beam_width - 1]
            ):
                beams = []  # none of the live beams can enter the top beam_width any more
        finished += [Candidate(ids, score, False) for ids, score in beams]
        if greedy is not None:
            finished.append(Candidate(greedy[0], greedy[1], False))
        order = sorted(finished, key=lambda c: (not c.complete, -c.log_prob))
        unique: dict[tuple[int, ...], Candidate] = {}
        for c in order:
            unique.setdefault(tuple(c.ids), c)
        return list(unique.values()), unknown

    def translate(
        self, text: str, *, beam_width: int = 4, num_return: int = 1, max_length: int | None = None
    ) -> dict[str, Any]:
        max_length = self.max_target_len if max_length is None else max_length
        if beam_width == 1:
            best, unknown = self.greedy(text, max_length)
            candidates = [best]
        else:
            candidates, unknown = self.beam(text, beam_width, max_length)
        text_of = lambda c: "".join(self.vocab.char(i) for i in c.ids)  # noqa: E731
        out = [
            {"text": text_of(c), "log_prob": round(c.log_prob, 6), "complete": c.complete}
            for c in candidates[:num_return]
        ]
        return {
            "output": out[0]["text"],
            "score": out[0]["log_prob"],
            "candidates": out,
            "unknown_chars": unknown,
        }

"""Text generation from exported one-step graphs, and seq2seq beam search: plain numpy, no HTTP.

Language models (task ``language_model``) serve one ``step`` graph: ``tokens`` (batch,) int64 and
``state`` (batch, slots, hidden) float32 -> ``logits`` (batch, vocab) and ``next_state``; the zero
state starts a text. Generation reads the prompt one character per step (prefill), then samples a
character from the last logits, feeds it back, and so on.

Everything a stream needs between steps lives in :class:`Stream` (its state row, its own random
generator, its text), so a step can advance any set of streams in one batched ONNX call:
:func:`advance` does exactly that, and :class:`StepScheduler` (one per model, asyncio) runs it
continuously over whatever streams are active: new streams join between steps, finished or
abandoned ones leave, and a stream never waits for another to finish. A stream in prefill and a
stream that is sampling share the same call; each feeds its next token.

Rules a client can rely on (documented in the README and the OpenAPI descriptions):

- Characters outside the model's vocabulary are read as the unknown token and listed, once each,
  in ``unknown_chars``; they never fail a request.
- An empty prompt starts from a newline (the training text's paragraph boundary), which is not part
  of the answer.
- ``temperature`` 0 is greedy (the first most-likely token, like ``torch.argmax``). Otherwise the
  logits are divided by the temperature, cut to the ``top_k`` largest, then to the smallest set of
  most-likely tokens whose probability reaches ``top_p``, and one token is drawn with one uniform
  number from the stream's own ``numpy.random.default_rng(seed)``. A seed therefore gives the same
  text whatever else runs beside it, as long as a step's outputs for a row do not depend on the
  other rows of the batch: on the CPU provider they are bit-identical (tested); cuBLAS may choose
  other kernels for other batch sizes, so on a GPU a near-tie can go the other way.
- ``stop`` strings end generation where one first appears; the answer stops before it. A stream
  holds back characters that might be the start of a stop string until they cannot be, so the
  streamed text always equals the non-streamed text.

Seq2seq (task ``seq2seq``) serves ``encoder`` (source ids right-padded to the card's
``max_source_len`` -> ``memory``, ``mask``, ``state``) and ``decoder_step`` (``tokens``,
``state``, ``memory``, ``mask`` -> ``logits``, ``next_state``, ``attention``).
:func:`translate` runs greedy decoding for ``beam_width`` 1 and beam search otherwise; the greedy
path rides along in the beam's batched step calls, so the best answer is never worse than greedy's.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

import numpy as np

log = logging.getLogger("dlzoo.generation")

# Request limits, shared by the endpoints (validation) and the tests.
MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = 2000
MAX_TEMPERATURE = 5.0
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 64
MAX_TRANSLATE_CHARS = 200
MAX_BEAM_WIDTH = 16
SEED_LIMIT = 2**32

LM_TASKS = ("language_model",)
SEQ2SEQ_TASKS = ("seq2seq",)


class TextTooLong(ValueError):
    """A source text longer than the seq2seq model reads (the message names the limit)."""


def draw_seed() -> int:
    """A fresh seed for a request that gave none (returned so the client can repeat it)."""
    return secrets.randbelow(SEED_LIMIT)


# --- vocabulary ---------------------------------------------------------------------------------

class Vocab:
    """A card's vocabulary: characters <-> ids, the unknown id, the special ids."""

    def __init__(self, tokens: Sequence[str], special: dict[str, int]):
        self.tokens = list(tokens)
        self.special = dict(special)
        self.unk = self.special["unk"]
        self.index = {t: i for i, t in enumerate(self.tokens) if i not in self.special.values()}

    @classmethod
    def of(cls, card) -> Vocab:  # noqa: ANN001 - a service.card.Card
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


def choose_many(logits: np.ndarray, samplings: Sequence[Sampling],
                rngs: Sequence[np.random.Generator]) -> list[int]:
    """``[choose(logits[i], samplings[i], rngs[i]) for i ...]``, the same ids bit for bit, with the
    greedy rows and the rows without a cut each done in a few numpy calls for the whole step.

    Why: one step of 16 streams spent ~25% of the Inference process's GIL time in per-row numpy
    calls (py-spy); the step loop is serial, so that time is every stream's. The arithmetic is the
    same per element and per row (division, exp, a running sum along the row, "how many cdf values
    <= the draw" for ``searchsorted(side="right")``), and each row still draws from its own generator.
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


# --- streams ------------------------------------------------------------------------------------

@dataclass
class Event:
    """What a step produced for one stream: new text (possibly empty), or the end."""

    text: str = ""
    index: int = 0  # how many tokens the stream has generated, this one included
    finish_reason: str | None = None  # "length" | "stop" | "error" | "cancelled"
    error: str | None = None


@dataclass
class Stream:
    """One generation: its prompt ids, state row, random generator, and the text so far."""

    prompt: list[int]
    state: np.ndarray  # (slots, hidden) float32
    vocab: Vocab
    sampling: Sampling
    max_new_tokens: int
    seed: int
    stop: tuple[str, ...] = ()
    unknown_chars: list[str] = field(default_factory=list)
    rng: np.random.Generator = field(init=False)
    fed: int = 0  # prompt tokens read so far
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # everything generated (stop string included, if one was hit)
    sent: int = 0  # characters of ``text`` released to the client
    finish_reason: str | None = None
    cancelled: bool = False
    created: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    finished: float | None = None
    queue: Any = None  # asyncio.Queue of Event, set by the scheduler when there is no sink
    sink: Channel | None = None  # where the scheduler delivers events instead, shared with other streams
    id: str = field(default_factory=lambda: secrets.token_hex(8))

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @property
    def next_input(self) -> int:
        return self.prompt[self.fed] if self.fed < len(self.prompt) else self.tokens[-1]

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def sampling_now(self) -> bool:
        """Whether the next step's output is a token to choose (else it reads the prompt on)."""
        return self.fed >= len(self.prompt) - 1

    def take(self, logits: np.ndarray, state: np.ndarray, token: int | None = None) -> Event | None:
        """Absorb one step's outputs; an Event when that produced a token (None during prefill).
        ``token``: the id already chosen from ``logits`` (``choose_many``), else chosen here."""
        self.state = state
        if self.fed < len(self.prompt):
            self.fed += 1
            if self.fed < len(self.prompt):
                return None  # still reading the prompt
        if token is None:
            token = choose(logits, self.sampling, self.rng)
        if self.first_token is None:
            self.first_token = time.perf_counter()
        self.tokens.append(token)
        self.text += self.vocab.char(token)
        return self._release()

    def _release(self) -> Event:
        end = len(self.text)
        for s in self.stop:
            if self.text.endswith(s):  # one character per step: a stop string can only complete at the end
                self.text = self.text[: end - len(s)]
                return self._finish("stop")
        if len(self.tokens) >= self.max_new_tokens:
            return self._finish("length")
        held = max((k for s in self.stop for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        piece = self.text[self.sent: end - held]
        self.sent += len(piece)
        return Event(text=piece, index=len(self.tokens))

    def _finish(self, reason: str) -> Event:
        self.finish_reason = reason
        self.finished = time.perf_counter()
        piece = self.text[self.sent:]
        self.sent = len(self.text)
        return Event(text=piece, index=len(self.tokens), finish_reason=reason)

    def timings_ms(self) -> dict[str, float | None]:
        ms = lambda t: None if t is None else round((t - self.created) * 1e3, 3)  # noqa: E731
        return {"first_token": ms(self.first_token), "total": ms(self.finished)}


class LanguageModel:
    """A language-model entry's step graph with the names and shapes its card gives."""

    def __init__(self, entry):  # noqa: ANN001 - a service.catalog.Entry
        io = entry.card.io["step"]
        self.entry = entry
        self.session = entry.sessions["step"]
        self.vocab = Vocab.of(entry.card)
        self.tokens_in, self.state_in = (t.name for t in io.inputs)
        self.logits_out, self.state_out = (t.name for t in io.outputs)
        self.state_shape = tuple(int(d) for d in io.inputs[1].shape[1:])
        newline = self.vocab.index.get("\n")
        self.start = self.vocab.unk if newline is None else newline

    def stream(self, prompt: str, *, max_new_tokens: int, sampling: Sampling, seed: int | None = None,
               stop: Sequence[str] = ()) -> Stream:
        ids, unknown = self.vocab.encode(prompt)
        return Stream(prompt=ids or [self.start], state=np.zeros(self.state_shape, np.float32),
                      vocab=self.vocab, sampling=sampling, max_new_tokens=max_new_tokens,
                      seed=draw_seed() if seed is None else seed, stop=tuple(s for s in stop if s),
                      unknown_chars=unknown)

    def advance(self, streams: Sequence[Stream]) -> list[Event | None]:
        """One batched step call for ``streams`` (all unfinished); their events, in order."""
        tokens = np.fromiter((s.next_input for s in streams), np.int64, len(streams))
        state = np.stack([s.state for s in streams])
        logits, next_state = self.session.run([self.logits_out, self.state_out],
                                              {self.tokens_in: tokens, self.state_in: state})
        rows = [i for i, s in enumerate(streams) if s.sampling_now]
        if len(rows) < 2:  # nothing to share: each stream chooses in take()
            return [s.take(logits[i], next_state[i]) for i, s in enumerate(streams)]
        chosen = logits if len(rows) == len(streams) else logits[rows]
        picks = dict(zip(rows, choose_many(chosen, [streams[i].sampling for i in rows],
                                           [streams[i].rng for i in rows])))
        return [s.take(logits[i], next_state[i], picks.get(i)) for i, s in enumerate(streams)]

    def run(self, stream: Stream) -> Stream:
        """Generate to the end alone, without a scheduler (tests and tools)."""
        while not stream.done:
            self.advance([stream])
        return stream


# --- the shared-step scheduler ------------------------------------------------------------------

class StepScheduler:
    """Advances every active stream of one model with one batched step call, continuously.

    Runs on the event loop of the process that owns the sessions; the ONNX call and the sampling
    run in one worker thread (ONNX Runtime releases the GIL), the loop hands out the events. At
    most ``max_active`` streams share a step; more wait their turn in arrival order.
    ``on_step(model, items, seconds)`` observes each call (metrics).
    """

    def __init__(self, model: LanguageModel, *, max_active: int = 64, on_step=None):  # noqa: ANN001
        self.model = model
        self.max_active = max_active
        self.on_step = on_step
        self.active: list[Stream] = []
        self.waiting: deque[Stream] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"steps-{model.entry.name}")
        self.steps = 0

    def submit(self, stream: Stream) -> Stream:
        """Queue a stream for the next steps: its events go to its ``sink`` (a Channel), or else to a
        queue of its own that :meth:`events` reads."""
        if stream.sink is None:
            stream.queue = asyncio.Queue()
        self.waiting.append(stream)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="dlzoo-steps")
        return stream

    def cancel(self, stream: Stream) -> bool:
        """End a stream now (its client left): it leaves at the next step; False if it had ended."""
        if stream.done:
            return False
        stream.cancelled = True
        stream.finish_reason, stream.finished = "cancelled", time.perf_counter()
        self._deliver([(stream, Event(index=len(stream.tokens), finish_reason="cancelled"))])
        self._wake.set()
        return True

    async def events(self, stream: Stream) -> AsyncIterator[list[Event]]:
        """The stream's events, until its last, in lists: whatever has piled up since the consumer
        last asked (one event when it keeps up; more under load, so that a slow consumer pays its
        per-write costs once per list instead of once per token). Leaving early (a client gone)
        cancels the stream."""
        try:
            while True:
                events = [await stream.queue.get()]
                while not stream.queue.empty():
                    events.append(stream.queue.get_nowait())
                yield events
                if events[-1].finish_reason is not None:
                    return
        finally:
            if not stream.done:
                stream.cancelled = True
                self._wake.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.active = [s for s in self.active if not (s.cancelled or s.done)]
            while self.waiting and len(self.active) < self.max_active:
                s = self.waiting.popleft()
                if not s.cancelled:
                    self.active.append(s)
            if not self.active:
                self._wake.clear()
                if not self.waiting:
                    await self._wake.wait()
                continue
            batch = list(self.active)
            t0 = time.perf_counter()
            try:
                events = await loop.run_in_executor(self._thread, self.model.advance, batch)
            except Exception as exc:  # noqa: BLE001 - a failed step ends its streams, not the service
                log.exception("step call failed for %s", self.model.entry.ref)
                for s in batch:
                    s.finish_reason, s.finished = "error", time.perf_counter()
                self._deliver([(s, Event(index=len(s.tokens), finish_reason="error", error=f"step failed: {exc}"))
                               for s in batch])
                continue
            self.steps += 1
            if self.on_step is not None:
                self.on_step(self.model.entry, len(batch), time.perf_counter() - t0)
            self._deliver([(s, event) for s, event in zip(batch, events) if event is not None and not s.cancelled])

    @staticmethod
    def _deliver(items: list[tuple[Stream, Event]]) -> None:
        """Hand out events: one put per sink for all of its streams' events of this step."""
        sinks: dict[int, tuple[Channel, list[tuple[Stream, Event]]]] = {}
        for stream, event in items:
            if stream.sink is None:
                stream.queue.put_nowait(event)
            else:
                sinks.setdefault(id(stream.sink), (stream.sink, []))[1].append((stream, event))
        for sink, group in sinks.values():
            sink.put(group)


class Channel:
    """One line of events for many streams: the scheduler puts each step's events for all of this
    channel's streams at once, and the reader takes whatever has piled up in one go. The service
    sends a channel's batch in one network write, where a stream of its own per generation costs
    one write (and one pass through every HTTP middleware) per token per stream."""

    def __init__(self) -> None:
        self.id = secrets.token_hex(8)
        self.queue: asyncio.Queue[list[tuple[Stream, Event]] | None] = asyncio.Queue()  # None: closed
        self.streams: dict[str, Stream] = {}  # the unfinished streams delivering here

    def put(self, items: list[tuple[Stream, Event]]) -> None:
        self.queue.put_nowait(items)

    def close(self) -> None:
        """End :meth:`batches` once what was delivered before has been read."""
        self.queue.put_nowait(None)

    async def batches(self, idle: float) -> AsyncIterator[list[tuple[Stream, Event]]]:
        """Everything delivered since the last batch; an empty batch after ``idle`` seconds
        without events (a heartbeat that keeps an idle line from timing out)."""
        while True:
            try:
                items = await asyncio.wait_for(self.queue.get(), idle)
            except asyncio.TimeoutError:
                yield []
                continue
            closed = items is None
            items = items or []
            while not self.queue.empty():
                more = self.queue.get_nowait()
                closed = closed or more is None
                items = items + (more or [])
            for stream, event in items:
                if event.finish_reason is not None:
                    self.streams.pop(stream.id, None)
            if items:
                yield items
            if closed:
                return


# --- seq2seq ------------------------------------------------------------------------------------

@dataclass
class Candidate:
    ids: list[int]
    log_prob: float
    complete: bool  # ended with <eos> (else cut at max_length)


class Translator:
    """A seq2seq entry's encoder and decoder_step graphs."""

    def __init__(self, entry):  # noqa: ANN001 - a service.catalog.Entry
        card = entry.card
        self.entry = entry
        self.vocab = Vocab.of(card)
        self.encoder, self.decoder = entry.sessions["encoder"], entry.sessions["decoder_step"]
        self.enc_in = card.io["encoder"].inputs[0].name
        self.enc_out = [t.name for t in card.io["encoder"].outputs]  # memory, mask, state
        self.dec_in = [t.name for t in card.io["decoder_step"].inputs]  # tokens, state, memory, mask
        self.dec_out = [t.name for t in card.io["decoder_step"].outputs][:2]  # logits, next_state
        self.max_source_len = int(card.training["max_source_len"])
        self.max_target_len = int(card.training["max_target_len"])
        self.bos, self.eos, self.pad = (self.vocab.special[k] for k in ("bos", "eos", "pad"))

    def encode(self, text: str) -> tuple[tuple[np.ndarray, ...], list[str]]:
        ids, unknown = self.vocab.encode(text)
        if len(ids) > self.max_source_len:
            raise TextTooLong(f"text: {len(ids)} characters; {self.entry.ref} reads at most "
                             f"{self.max_source_len} (its card's max_source_len)")
        source = np.full((1, self.max_source_len), self.pad, np.int64)
        source[0, : len(ids)] = ids
        memory, mask, state = self.encoder.run(self.enc_out, {self.enc_in: source})
        return (memory, mask, state), unknown

    def _step(self, tokens: np.ndarray, state: np.ndarray, memory: np.ndarray, mask: np.ndarray):
        """One decoder call for len(tokens) rows sharing one source: (logits, log-probs, next_state)."""
        n = len(tokens)
        feed = dict(zip(self.dec_in, (tokens, state, np.repeat(memory, n, 0), np.repeat(mask, n, 0))))
        logits, next_state = self.decoder.run(self.dec_out, feed)
        z = logits.astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        return logits, z - np.log(np.exp(z).sum(axis=1, keepdims=True)), next_state

    def greedy(self, text: str, max_length: int) -> tuple[Candidate, list[str]]:
        """The most likely token at every step (argmax of the raw logits, as PyTorch's reference)."""
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

    def beam(self, text: str, beam_width: int, max_length: int) -> tuple[list[Candidate], list[str]]:
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
            logits, logp, next_state = self._step(np.array(rows, np.int64), np.concatenate(states),
                                                  memory, mask)
            if greedy is not None:
                g = len(beams)
                best = int(np.argmax(logits[g]))
                ids, score = greedy[0], greedy[1] + float(logp[g, best])
                if best == self.eos:
                    finished.append(Candidate(ids, score, True))
                    greedy = None
                else:
                    greedy, greedy_state = (ids + [best], score), next_state[g: g + 1]
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
            if len(complete) >= beam_width and (not beams or beams[0][1] < complete[beam_width - 1]):
                beams = []  # none of the live beams can enter the top beam_width any more
        finished += [Candidate(ids, score, False) for ids, score in beams]
        if greedy is not None:
            finished.append(Candidate(greedy[0], greedy[1], False))
        order = sorted(finished, key=lambda c: (not c.complete, -c.log_prob))
        unique: dict[tuple[int, ...], Candidate] = {}
        for c in order:
            unique.setdefault(tuple(c.ids), c)
        return list(unique.values()), unknown

    def translate(self, text: str, *, beam_width: int = 4, num_return: int = 1,
                  max_length: int | None = None) -> dict[str, Any]:
        max_length = self.max_target_len if max_length is None else max_length
        if beam_width == 1:
            best, unknown = self.greedy(text, max_length)
            candidates = [best]
        else:
            candidates, unknown = self.beam(text, beam_width, max_length)
        text_of = lambda c: "".join(self.vocab.char(i) for i in c.ids)  # noqa: E731
        out = [{"text": text_of(c), "log_prob": round(c.log_prob, 6), "complete": c.complete}
               for c in candidates[:num_return]]
        return {"output": out[0]["text"], "score": out[0]["log_prob"], "candidates": out,
                "unknown_chars": unknown}


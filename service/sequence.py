"""Text generation from exported one-step graphs: plain numpy, no HTTP.

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
- ``alternatives`` (opt-in, 0 by default): with each token, the ``n`` most likely tokens of its
  step under the model's own distribution (softmax of the raw logits, before temperature, top-k
  and top-p), best first. They travel with the text they explain: a held-back token's go with the
  event that releases its character, and a stop string's are never sent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.sampling import Sampling, Vocab, choose, choose_many
from service.schemas import draw_seed

log = logging.getLogger("dlzoo.sequence")

LM_TASKS = ("language_model",)


def most_likely(logits: np.ndarray, vocab: Vocab, n: int) -> list[dict[str, Any]]:
    """The ``n`` most likely tokens of one step's logits, best first, as {text, probability}:
    the model's own distribution (softmax of the raw logits: no temperature, top-k or top-p), a
    special token as the vocabulary writes it (``<unk>``), probabilities rounded to 6 places."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    top = np.argsort(-p, kind="stable")[:n]
    return [{"text": vocab.tokens[i], "probability": round(float(p[i]), 6)} for i in top]


# --- streams ------------------------------------------------------------------------------------


@dataclass
class Event:
    """What a step produced for one stream: new text (possibly empty), or the end."""

    text: str = ""
    index: int = 0  # how many tokens the stream has generated, this one included
    finish_reason: str | None = None  # "length" | "stop" | "error" | "cancelled"
    error: str | None = None
    # with Stream.alternatives: for each token whose text this event releases, the most likely
    # characters of its step, best first: [[{text, probability}, ...], ...]
    alternatives: list[list[dict[str, Any]]] | None = None


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
    alternatives: int = 0  # with each token, this many most likely characters (0: none)
    rng: np.random.Generator = field(init=False)
    fed: int = 0  # prompt tokens read so far
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # everything generated (stop string included, if one was hit)
    sent: int = 0  # characters of ``text`` released to the client
    # per token, if asked: (len(text) once it was added, its step's most likely characters)
    choices: list[tuple[int, list[dict[str, Any]]]] = field(default_factory=list)
    choices_sent: int = 0  # entries of ``choices`` released with their text
    finish_reason: str | None = None
    cancelled: bool = False
    created: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    finished: float | None = None
    queue: Any = None  # asyncio.Queue of Event, set by the scheduler when there is no sink
    sink: Any = (
        None  # a streams.Channel the scheduler delivers to instead, shared with other streams
    )
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
        if self.alternatives:
            self.choices.append(
                (len(self.text), most_likely(logits, self.vocab, self.alternatives))
            )
        return self._release()

    def _release(self) -> Event:
        end = len(self.text)
        for s in self.stop:
            if self.text.endswith(
                s
            ):  # one character per step: a stop string can only complete at the end
                self.text = self.text[: end - len(s)]
                return self._finish("stop")
        if len(self.tokens) >= self.max_new_tokens:
            return self._finish("length")
        held = max(
            (k for s in self.stop for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0
        )
        piece = self.text[self.sent : end - held]
        self.sent += len(piece)
        return Event(text=piece, index=len(self.tokens), alternatives=self._choices(piece))

    def _finish(self, reason: str) -> Event:
        self.finish_reason = reason
        self.finished = time.perf_counter()
        piece = self.text[self.sent :]
        self.sent = len(self.text)
        return Event(
            text=piece,
            index=len(self.tokens),
            finish_reason=reason,
            alternatives=self._choices(piece),
        )

    def _choices(self, piece: str) -> list[list[dict[str, Any]]] | None:
        """The alternatives of the tokens whose text ``piece`` releases (those held back for a
        stop string go with the text that releases them; a stop string's own are never sent)."""
        if not self.alternatives or not piece:
            return None
        start = self.choices_sent
        while (
            self.choices_sent < len(self.choices)
            and self.choices[self.choices_sent][0] <= self.sent
        ):
            self.choices_sent += 1
        return [alts for _, alts in self.choices[start : self.choices_sent]]

    def timings_ms(self) -> dict[str, float | None]:
        ms = lambda t: None if t is None else round((t - self.created) * 1e3, 3)  # noqa: E731
        return {"first_token": ms(self.first_token), "total": ms(self.finished)}


class LanguageModel:
    """A language-model entry's step graph with the names and shapes its card gives."""

    def __init__(self, entry):
        io = entry.card.io["step"]
        self.entry = entry
        self.session = entry.sessions["step"]
        self.vocab = Vocab.of(entry.card)
        self.tokens_in, self.state_in = (t.name for t in io.inputs)
        self.logits_out, self.state_out = (t.name for t in io.outputs)
        self.state_shape = tuple(int(d) for d in io.inputs[1].shape[1:])
        newline = self.vocab.index.get("\n")
        self.start = self.vocab.unk if newline is None else newline

    def stream(
        self,
        prompt: str,
        *,
        max_new_tokens: int,
        sampling: Sampling,
        seed: int | None = None,
        stop: Sequence[str] = (),
        alternatives: int = 0,
    ) -> Stream:
        ids, unknown = self.vocab.encode(prompt)
        return Stream(
            prompt=ids or [self.start],
            state=np.zeros(self.state_shape, np.float32),
            vocab=self.vocab,
            sampling=sampling,
            max_new_tokens=max_new_tokens,
            seed=draw_seed() if seed is None else seed,
            stop=tuple(s for s in stop if s),
            unknown_chars=unknown,
            alternatives=alternatives,
        )

    def advance(self, streams: Sequence[Stream]) -> list[Event | None]:
        """One batched step call for ``streams`` (all unfinished); their events, in order."""
        tokens = np.fromiter((s.next_input for s in streams), np.int64, len(streams))
        state = np.stack([s.state for s in streams])
        logits, next_state = self.session.run(
            [self.logits_out, self.state_out], {self.tokens_in: tokens, self.state_in: state}
        )
        rows = [i for i, s in enumerate(streams) if s.sampling_now]
        if len(rows) < 2:  # nothing to share: each stream chooses in take()
            return [s.take(logits[i], next_state[i]) for i, s in enumerate(streams)]
        chosen = logits if len(rows) == len(streams) else logits[rows]
        picks = dict(
            zip(
                rows,
                choose_many(
                    chosen, [streams[i].sampling for i in rows], [streams[i].rng for i in rows]
                ),
            )
        )
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

    def __init__(self, model: LanguageModel, *, max_active: int = 64, on_step=None):
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
        """Queue a stream for the next steps: its events go to its ``sink`` (a streams.Channel), or
        to a queue of its own that :meth:`events` reads."""
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

    @property
    def idle(self) -> bool:
        return not self.active and not self.waiting

    def close(self) -> None:
        """Stop the loop and its thread (the model's version was freed; no stream is left)."""
        if self._task is not None:
            self._task.cancel()
        self._thread.shutdown(wait=False)

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
            except Exception as exc:
                log.exception("step call failed for %s", self.model.entry.ref)
                for s in batch:
                    s.finish_reason, s.finished = "error", time.perf_counter()
                self._deliver(
                    [
                        (
                            s,
                            Event(
                                index=len(s.tokens),
                                finish_reason="error",
                                error=f"step failed: {exc}",
                            ),
                        )
                        for s in batch
                    ]
                )
                continue
            self.steps += 1
            if self.on_step is not None:
                self.on_step(self.model.entry, len(batch), time.perf_counter() - t0)
            self._deliver(
                [
                    (s, event)
                    for s, event in zip(batch, events)
                    if event is not None and not s.cancelled
                ]
            )

    @staticmethod
    def _deliver(items: list[tuple[Stream, Event]]) -> None:
        """Hand out events: one put per sink for all of its streams' events of this step."""
        sinks: dict[int, tuple[Any, list[tuple[Stream, Event]]]] = {}
        for stream, event in items:
            if stream.sink is None:
                stream.queue.put_nowait(event)
            else:
                sinks.setdefault(id(stream.sink), (stream.sink, []))[1].append((stream, event))
        for sink, group in sinks.values():
            sink.put(group)

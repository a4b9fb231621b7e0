"""Continuous batching: each call takes every request that arrived while the previous call ran.

Used for classification instead of BentoML's adaptive batching (``batchable=True``), which runs one
batch at a time and holds requests back for a wait it learns from past traffic (measured in
load_tests/FINDINGS.md). Here nothing waits on purpose: a request arriving at an idle batcher runs
at once, alone; under load a batch is whatever queued during the last call, so batches grow
exactly as fast as the model falls behind. The generation step loop (service/sequence.py) does
the same for requests that take many calls.

Requests that have waited longer than ``max_wait`` seconds when their batch is formed are refused
(``Overloaded``) instead of being run late: the caller answers 503 and the client may retry.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(Exception):
    """The request waited longer than the batcher's ``max_wait`` before its turn."""


class Batcher(Generic[T, R]):
    """``await batcher.submit(item)``: runs ``run(items) -> results`` (same order) on batches of at
    most ``max_batch`` items, one batch at a time, in a worker thread (ONNX Runtime releases the
    GIL, so the event loop keeps accepting requests meanwhile)."""

    def __init__(
        self,
        run: Callable[[list[T]], list[R]],
        *,
        max_batch: int,
        max_wait: float,
        name: str = "batch",
    ):
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue: deque[tuple[T, asyncio.Future, float]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.append((item, future, time.monotonic()))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop(), name="dlzoo-batcher")
        return await future

    def _take(self) -> list[tuple[T, asyncio.Future]]:
        batch: list[tuple[T, asyncio.Future]] = []
        now = time.monotonic()
        while self.queue and len(batch) < self.max_batch:
            item, future, queued = self.queue.popleft()
            if future.done():  # its caller has gone
                continue
            if now - queued > self.max_wait:
                future.set_exception(
                    Overloaded(
                        f"waited {now - queued:.1f} s for its turn, over the "
                        f"limit of {self.max_wait:.1f} s"
                    )
                )
                continue
            batch.append((item, future))
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take()
            if not batch:
                continue
            try:
                results: list[Any] = await loop.run_in_executor(
                    self._thread, self.run, [i for i, _ in batch]
                )
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

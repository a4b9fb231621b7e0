"""The continuous batcher (service/batching.py) on its own: what forms a batch, where results and
errors go, and when a request is refused for waiting too long."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.batching import Batcher, Overloaded


class Recorder:
    """A run() that records its batches and can be held until released."""

    def __init__(self, fail_on: int | None = None):
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(5)
        self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError(f"item {self.fail_on} broke the batch")
        return [10 * i for i in items]


def test_a_lone_request_runs_at_once_and_queued_ones_form_the_next_batch():
    async def scenario():
        run = Recorder()
        batcher = Batcher(run, max_batch=4, max_wait=10.0)
        t0 = time.monotonic()
        assert await batcher.submit(1) == 10
        alone = time.monotonic() - t0
        run.gate.clear()  # the next call blocks until released
        first = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.05)  # 2 is running; these queue behind it
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(3, 9)]
        await asyncio.sleep(0.05)
        run.gate.set()
        results = await asyncio.gather(first, *rest)
        return run.batches, results, alone

    batches, results, alone = asyncio.run(scenario())
    assert alone < 1.0, "an idle batcher does not wait for company"
    assert results == [10 * i for i in range(2, 9)], "each caller gets its own result"
    assert batches == [[1], [2], [3, 4, 5, 6], [7, 8]], (
        "what queued during a call, at most max_batch"
    )


def test_an_error_reaches_its_batch_only_and_the_batcher_goes_on():
    async def scenario():
        run = Recorder(fail_on=3)
        batcher = Batcher(run, max_batch=8, max_wait=10.0)
        run.gate.clear()
        blocker = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)
        bad = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0.05)
        run.gate.set()
        outcomes = await asyncio.gather(blocker, *bad, return_exceptions=True)
        after = await batcher.submit(4)
        return outcomes, after

    (one, two, three), after = asyncio.run(scenario())
    assert one == 10 and after == 40
    assert (
        isinstance(two, RuntimeError) and isinstance(three, RuntimeError) and "item 3" in str(three)
    )


def test_requests_that_waited_too_long_are_refused_and_gone_callers_skipped():
    async def scenario():
        run = Recorder()
        batcher = Batcher(run, max_batch=8, max_wait=0.2)
        run.gate.clear()
        blocker = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)
        late = asyncio.create_task(batcher.submit(2))
        gone = asyncio.create_task(batcher.submit(3))
        await asyncio.sleep(0.3)  # both have now waited longer than max_wait
        gone.cancel()
        run.gate.set()
        return await asyncio.gather(blocker, late, return_exceptions=True), run.batches

    (first, late), batches = asyncio.run(scenario())
    assert first == 10
    assert isinstance(late, Overloaded) and "over the limit of 0.2 s" in str(late)
    assert batches == [[1]], "neither the late nor the cancelled request ran"


@pytest.mark.parametrize("max_batch", [1, 3])
def test_max_batch_bounds_every_batch(max_batch):
    async def scenario():
        run = Recorder()
        batcher = Batcher(run, max_batch=max_batch, max_wait=10.0)
        run.gate.clear()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(10)]
        await asyncio.sleep(0.05)
        run.gate.set()
        return await asyncio.gather(*tasks), run.batches

    results, batches = asyncio.run(scenario())
    assert results == [10 * i for i in range(10)]
    assert max(len(b) for b in batches) <= max_batch and sum(map(len, batches)) == 10

"""Admission control: each HTTP worker serves at most ``limit`` requests of one model at a time.

A request past the limit is refused at once with 503 and ``Retry-After`` (a client or a load
balancer then tries again, or elsewhere) instead of waiting in a queue it cannot get through in
time: under overload the requests that are taken keep their latency, and the rest learn it in
milliseconds. A request counts from when its model is resolved until its answer is made, so the
count covers every place it can wait (the image decoder's threads, the batcher, the hop to the
Inference service, a generation waiting for its step); a token stream counts until it ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import Overloaded
from service.metrics import REFUSED


class Admission:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: Counter[str] = Counter()  # model name -> requests in progress here

    @contextmanager
    def admit(self, model: str) -> Iterator[None]:
        """Hold one of ``model``'s places while the block runs, or raise ``Overloaded``."""
        if self.active[model] >= self.limit:
            REFUSED.labels(model=model).inc()
            raise Overloaded(
                f"overloaded: {model} already has {self.limit} requests in progress in this "
                "worker (DLZOO_MAX_QUEUE); try again shortly"
            )
        self.active[model] += 1
        try:
            yield
        finally:
            self.active[model] -= 1
            if not self.active[model]:
                del self.active[model]

"""A generation's answer to the client, from the events the channel brings (service/streams.py):
Server-Sent Events (/generate_stream) or one JSON answer (/generate)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from pydantic import BaseModel

from service.errors import error_for_status
from service.streams import Events

log = logging.getLogger("dlzoo.events")


# What each event of /generate_stream carries (the OpenAPI document's, service/openapi.py).
class StartEvent(BaseModel):
    """``event: start``: the generation's facts, before its first token."""

    model: str
    version: int
    provider: str
    seed: int
    prompt_tokens: int
    unknown_chars: list[str]


class Alternative(BaseModel):
    text: str
    probability: float


class TokenEvent(BaseModel):
    """A data event without a name: one generated token, as soon as it exists; with
    ``alternatives`` asked for, each released token's most likely characters, best first."""

    text: str
    index: int
    alternatives: list[list[Alternative]] = []  # absent unless asked for


class DoneEvent(BaseModel):
    """``event: done``: why it ended, how many tokens, and how long it took."""

    finish_reason: str
    tokens: int
    timings_ms: dict[str, float]


class ErrorEvent(BaseModel):
    """``event: error``: the stream ends early; ``status`` is what an HTTP answer would have had."""

    status: int
    detail: str


STREAM_EVENTS: dict[str | None, type[BaseModel]] = {
    "start": StartEvent,
    None: TokenEvent,
    "done": DoneEvent,
    "error": ErrorEvent,
}


def sse(data: dict[str, Any], event: str | None = None) -> str:
    return (
        f"event: {event}\n" if event else ""
    ) + f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def server_sent_events(
    start: dict[str, Any], events: Events, close: Callable[[], Awaitable[None]]
) -> AsyncIterator[str]:
    """A generation as Server-Sent Events: ``start``, a data event per token, ``done`` or ``error``.
    The status is sent with the first byte: a later failure is said in the stream."""
    finished = False
    try:
        yield sse({k: v for k, v in start.items() if k not in ("event", "id")}, "start")
        async for chunk in events:
            out = []
            for event in chunk:
                kind = event.pop("event")
                event.pop("id", None)
                if kind != "token":
                    finished = True
                    out.append(sse(event, kind))
                elif event["text"]:
                    out.append(sse(event))
            yield "".join(out)  # one write for the tokens that arrived together
        if not finished:
            yield sse(
                {"status": 502, "detail": "the inference service ended the stream early"}, "error"
            )
    except Exception:
        log.exception("generation stream failed")
        yield sse({"status": 500, "detail": "generation failed; see the server log"}, "error")
    finally:
        # A client gone: starlette cancels this task; the shield lets the clean-up finish.
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await close()


async def whole_answer(
    start: dict[str, Any], events: Events, close: Callable[[], Awaitable[None]]
) -> dict[str, Any]:
    """A generation as one answer (/generate): the start's facts and the ``done`` event's text."""
    try:
        async for chunk in events:
            for event in chunk:
                if event["event"] == "error":
                    raise error_for_status(event["status"], event["detail"])
                if event["event"] == "done":
                    keep = ("model", "version", "provider", "seed", "unknown_chars")
                    done = ("text", "tokens", "finish_reason", "timings_ms", "alternatives")
                    return {
                        **{k: start[k] for k in keep},
                        **{k: event[k] for k in done if k in event},
                    }
    finally:
        await close()
    raise error_for_status(502, "the inference service ended the generation without an answer")

"""Generation over HTTP: tokens/s of one stream and of 16 concurrent streams, time to first token.

Streams come from ``POST /generate_stream`` (Server-Sent Events: one ``data:`` event per token, then
``event: done``), read by the load generator in its own process. Temperature 0.8, a different seed
per stream, ``max_new_tokens`` 200 by default. If the route answers 404 the section says "not
available" instead of failing.
"""

from __future__ import annotations

import logging

import httpx

from load_tests.serving import run_loadgen

log = logging.getLogger("bench.generation")

TARGET_RATIO = 4.0
PROMPTS = ["The ", "def ", "In the beginning ", "Return a ", "import ", "This module "]


def bodies(model: str, n: int, max_new_tokens: int) -> list[dict]:
    return [
        {
            "json": {
                "model": model,
                "prompt": PROMPTS[i % len(PROMPTS)],
                "max_new_tokens": max_new_tokens,
                "temperature": 0.8,
                "top_k": None,
                "top_p": 1.0,
                "seed": i,
                "stop": [],
            }
        }
        for i in range(n)
    ]


def generation_section(
    url: str,
    model: str = "lstm",
    quick: bool = False,
    max_new_tokens: int = 200,
    concurrent: int = 16,
) -> dict:
    probe_body = bodies(model, 1, 4)[0]["json"]
    try:
        probe = httpx.post(url + "/generate_stream", json=probe_body, timeout=60)
    except httpx.HTTPError as exc:
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    if probe.status_code != 200:
        return {
            "available": False,
            "reason": f"POST /generate_stream -> HTTP {probe.status_code}: {probe.text[:200]}",
        }
    single_n = 3 if quick else 10
    single = run_loadgen(
        {
            "mode": "stream",
            "url": url,
            "path": "/generate_stream",
            "concurrency": 1,
            "requests": single_n,
            "bodies": bodies(model, single_n, max_new_tokens),
        },
        timeout=600,
    )
    rounds = 1 if quick else 3
    many = run_loadgen(
        {
            "mode": "stream",
            "url": url,
            "path": "/generate_stream",
            "concurrency": concurrent,
            "requests": rounds,
            "bodies": bodies(model, concurrent * rounds, max_new_tokens),
        },
        timeout=900,
    )
    one = single["per_stream_tokens_per_s_median"]
    agg = many["aggregate_tokens_per_s"]
    ratio = agg / one if one and agg else None
    log.info(
        "generation %s: one stream %.0f tok/s, %d streams %.0f tok/s (x%.1f), ttft p50 %.1f ms",
        model,
        one or 0,
        concurrent,
        agg or 0,
        ratio or 0,
        single["ttft_p50_ms"] or -1,
    )
    return {
        "available": True,
        "model": model,
        "max_new_tokens": max_new_tokens,
        "temperature": 0.8,
        "single": single,
        "concurrent": many,
        "streams": concurrent,
        "one_stream_tokens_per_s": one,
        "aggregate_tokens_per_s": agg,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio is not None and ratio >= TARGET_RATIO,
    }

"""The load generator: its own process, asyncio + aiohttp (uvloop when installed), small per
request.

It shares the machine's 2 cores with the server it measures: every request it sends costs CPU the
server cannot use. Bodies are built once, before the clock starts (multipart by hand), responses
are read and dropped, and latencies go into a list; nothing else happens per request.

Modes (one JSON spec on stdin, one JSON result on stdout)::

    closed  `concurrency` clients, each sends its next request when the last one is answered
    open    Poisson arrivals at `rate` per second whatever the server does; latency counts from
            the scheduled send time, so a server that falls behind is charged for the queue.
            `schedule` ([[rate, seconds], ...], instead of rate and duration) changes the rate
            with no gap; `records: true` returns every request as [sent s, latency ms, status]
    stream  `concurrency` clients read Server-Sent Events: time to first event, events, total

Spec fields: mode, url, path, bodies ([{"json": {...}}] or [{"fields": {...}, "file": base64 PNG}]),
warmup and duration (seconds), concurrency, rate, requests (stream: per client), metrics_url.
Only requests sent after `warmup` and answered before its end count; throughput is the answered
ones over `duration`. `metrics_url` is fetched at the window's start and end (Prometheus text).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import sys
import time
import uuid

import aiohttp
import numpy as np

BOUNDARY_PREFIX = "dlzoo-bench-"


def multipart(
    fields: dict[str, str], file: bytes, file_field: str = "image", filename: str = "digit.png"
) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type, built once."""
    boundary = BOUNDARY_PREFIX + uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
        f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
        + file
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def prepare(bodies: list[dict]) -> list[tuple[bytes, str]]:
    out = []
    for b in bodies:
        if "json" in b:
            out.append((json.dumps(b["json"]).encode(), "application/json"))
        else:
            out.append(
                multipart(
                    {k: str(v) for k, v in b.get("fields", {}).items()},
                    base64.b64decode(b["file"]),
                    b.get("file_field", "image"),
                )
            )
    return out


def summarize(
    records: list[tuple[float, float, int]], t_start: float, t_end: float, duration: float
) -> dict:
    """records: (sent, answered, status) with perf_counter times; the window is [t_start, t_end]."""
    kept = [(s, e, st) for s, e, st in records if s >= t_start and e <= t_end]
    ok = [e - s for s, e, st in kept if 200 <= st < 300]
    statuses: dict[str, int] = {}
    for _, _, st in kept:
        statuses[str(st)] = statuses.get(str(st), 0) + 1
    lat = np.asarray(ok) * 1e3
    out = {
        "requests": len(kept),
        "ok": len(ok),
        "statuses": statuses,
        "errors": len(kept) - len(ok),
        "throughput": len(ok) / duration,
        "mean_ms": float(lat.mean()) if lat.size else None,
    }
    for q in (50, 90, 95, 99):
        out[f"p{q}_ms"] = float(np.percentile(lat, q)) if lat.size else None
    return out


async def fetch_text(session: aiohttp.ClientSession, url: str | None) -> str | None:
    if not url:
        return None
    try:
        async with session.get(url) as r:
            return await r.text()
    except aiohttp.ClientError:
        return None


async def _send(session, url, body, ctype) -> int:
    try:
        async with session.post(url, data=body, headers={"Content-Type": ctype}) as r:
            await r.read()
            return r.status
    except (TimeoutError, aiohttp.ClientError):
        return 599  # connection-level failure, counted as an error


async def closed_loop(spec: dict) -> dict:
    url = spec["url"] + spec["path"]
    bodies = prepare(spec["bodies"])
    conc, warmup, duration = (
        int(spec["concurrency"]),
        float(spec["warmup"]),
        float(spec["duration"]),
    )
    records: list[tuple[float, float, int]] = []
    timeout = aiohttp.ClientTimeout(total=spec.get("timeout", 60))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=conc + 2), timeout=timeout
    ) as session:
        t0 = time.perf_counter()
        t_start, t_end = t0 + warmup, t0 + warmup + duration
        metrics: dict[str, str | None] = {}

        async def client(i: int) -> None:
            k = i
            while True:
                now = time.perf_counter()
                if now >= t_end:
                    return
                body, ctype = bodies[k % len(bodies)]
                k += conc
                status = await _send(session, url, body, ctype)
                records.append((now, time.perf_counter(), status))

        async def scrape() -> None:
            await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
            metrics["start"] = await fetch_text(session, spec.get("metrics_url"))
            await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
            metrics["end"] = await fetch_text(session, spec.get("metrics_url"))

        cpu0 = time.process_time()
        await asyncio.gather(scrape(), *(client(i) for i in range(conc)))
        cpu = time.process_time() - cpu0
    out = summarize(records, t_start, t_end, duration)
    # the generator's own CPU: the share of one core it took from the server under test
    out.update(
        mode="closed",
        concurrency=conc,
        duration=duration,
        metrics=metrics,
        client_cpu_share=cpu / (warmup + duration),
        client_cpu_ms_per_request=1e3 * cpu / max(1, len(records)),
        total_requests=len(records),
    )
    return out


async def open_loop(spec: dict) -> dict:
    """Poisson arrivals at ``rate``/s; at most ``max_in_flight`` outstanding (more are counted as
    dropped: the client, not the server, would be the limit)."""
    url = spec["url"] + spec["path"]
    bodies = prepare(spec["bodies"])
    warmup = float(spec["warmup"])
    schedule = spec.get("schedule") or [[spec["rate"], spec["duration"]]]
    schedule = [(float(r), float(s)) for r, s in schedule]
    rate, duration = schedule[0][0], sum(s for _, s in schedule)
    cap = int(spec.get("max_in_flight", 512))
    rng = random.Random(spec.get("seed", 0))
    records: list[tuple[float, float, int]] = []
    lag: list[float] = []
    dropped = 0
    timeout = aiohttp.ClientTimeout(total=spec.get("timeout", 60))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=cap), timeout=timeout
    ) as session:
        t0 = time.perf_counter()
        t_start, t_end = t0 + warmup, t0 + warmup + duration
        tasks: set[asyncio.Task] = set()

        async def one(scheduled: float, k: int) -> None:
            body, ctype = bodies[k % len(bodies)]
            lag.append(time.perf_counter() - scheduled)
            status = await _send(session, url, body, ctype)
            records.append((scheduled, time.perf_counter(), status))

        # the rate in force at each moment: warm-up at the first one, then the schedule's
        ends, at = [], t_start
        for r, seconds in schedule:
            at += seconds
            ends.append((at, r))
        t, k, phase = t0, 0, 0
        while True:
            while phase < len(ends) - 1 and t >= ends[phase][0]:
                phase += 1
            t += rng.expovariate(ends[phase][1])
            if t >= t_end:
                break
            delay = t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= cap:
                dropped += 1
                continue
            task = asyncio.create_task(one(t, k))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        if tasks:
            await asyncio.wait(tasks, timeout=spec.get("timeout", 60))
        # answers that came after the window still count for an open loop: every request sent in
        # the window is charged its full latency (a late answer is a slow one, not a missing one)
        t_after = time.perf_counter()
    out = summarize(records, t_start, t_after, duration)
    if spec.get("records"):
        out["records"] = [
            [round(s - t_start, 4), round((e - s) * 1e3, 3), st] for s, e, st in records
        ]
    out.update(
        mode="open",
        rate=rate,
        duration=duration,
        dropped=dropped,
        send_lag_p99_ms=float(np.percentile(np.asarray(lag) * 1e3, 99)) if lag else None,
    )
    return out


async def stream(spec: dict) -> dict:
    """``concurrency`` clients each read ``requests`` SSE streams one after another."""
    url = spec["url"] + spec["path"]
    bodies = prepare(spec["bodies"])
    conc, per_client = int(spec["concurrency"]), int(spec.get("requests", 1))
    streams: list[dict] = []
    timeout = aiohttp.ClientTimeout(total=spec.get("timeout", 300))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=conc + 2), timeout=timeout
    ) as session:

        async def one(body: bytes, ctype: str) -> dict:
            sent = time.perf_counter()
            first, events, finish, status, error = None, 0, None, 0, None
            try:
                async with session.post(url, data=body, headers={"Content-Type": ctype}) as r:
                    status = r.status
                    if status != 200:
                        await r.read()
                    else:
                        event = "message"
                        async for raw in r.content:
                            line = raw.decode("utf-8", "replace").rstrip("\r\n")
                            if line.startswith("event:"):
                                event = line[6:].strip()
                            elif line.startswith("data:"):
                                if event == "message":
                                    events += 1
                                    if first is None:
                                        first = time.perf_counter()
                                elif event == "done":
                                    finish = json.loads(line[5:].strip() or "{}")
                                elif event == "error":
                                    error = line[5:].strip()
                            elif not line:
                                event = "message"
            except (TimeoutError, aiohttp.ClientError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            end = time.perf_counter()
            return {
                "status": status,
                "events": events,
                "ttft_ms": (first - sent) * 1e3 if first else None,
                "total_ms": (end - sent) * 1e3,
                "done": finish,
                "error": error,
                "sent": sent,
                "end": end,
            }

        async def client(i: int) -> None:
            for j in range(per_client):
                body, ctype = bodies[(i * per_client + j) % len(bodies)]
                streams.append(await one(body, ctype))

        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(conc)))
        wall = time.perf_counter() - t0
    good = [s for s in streams if s["status"] == 200 and s["error"] is None]
    tokens = sum(s["events"] for s in good)
    ttft = [s["ttft_ms"] for s in good if s["ttft_ms"] is not None]
    per_stream = [s["events"] / (s["total_ms"] / 1e3) for s in good if s["total_ms"] > 0]
    return {
        "mode": "stream",
        "concurrency": conc,
        "streams": len(streams),
        "ok": len(good),
        "statuses": sorted({s["status"] for s in streams}),
        "errors": [s["error"] for s in streams if s["error"]][:5],
        "wall_s": wall,
        "tokens": tokens,
        "aggregate_tokens_per_s": tokens / wall if wall else None,
        "per_stream_tokens_per_s_median": float(np.median(per_stream)) if per_stream else None,
        "ttft_p50_ms": float(np.percentile(ttft, 50)) if ttft else None,
        "ttft_p99_ms": float(np.percentile(ttft, 99)) if ttft else None,
        "finish_reasons": sorted({str((s["done"] or {}).get("finish_reason")) for s in good}),
    }


MODES = {"closed": closed_loop, "open": open_loop, "stream": stream}


def main() -> int:
    spec = json.loads(sys.stdin.read())
    try:
        import uvloop

        run = uvloop.run
    except (ImportError, AttributeError):
        run = asyncio.run
    result = run(MODES[spec["mode"]](spec))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

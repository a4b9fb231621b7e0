"""Overload: what the service does with more than it can serve (admission control, issue #17).

    python -m load_tests.overload [--models models] [--model lenet5] [--quick]

One server with its defaults. First its capacity: closed loop, 32 clients, /classify. Then one
open-loop Poisson run (load_tests.loadgen) with no gap between its phases: half the capacity (the
normal latency), twice the capacity (the overload), half again (the recovery). Targets: goodput
under overload >= 80% of the capacity, p99 of the accepted requests <= 1 s, every refusal (503)
answered in <= 50 ms at p99, and latency back to normal within 5 s of the overload's end.
`make bench` runs it as its "overload" section; run alone, it writes
load_tests/results/<timestamp>-overload.json and prints its table.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np

from load_tests import common
from load_tests.serving import classify_bodies, run_loadgen

TARGETS = {"goodput": 0.8, "accepted_p99_ms": 1000.0, "refused_p99_ms": 50.0, "recovery_s": 5.0}


def _p(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def phase(records: list[list], start: float, end: float) -> dict:
    """The requests sent in [start, end): counts by status, goodput, latency of each kind."""
    sent = [r for r in records if start <= r[0] < end]
    ok = [r[1] for r in sent if r[2] == 200]
    refused = [r[1] for r in sent if r[2] == 503]
    seconds = end - start
    return {
        "seconds": seconds,
        "offered_per_s": len(sent) / seconds,
        "goodput_per_s": len(ok) / seconds,
        "ok": len(ok),
        "refused": len(refused),
        "other": len(sent) - len(ok) - len(refused),
        "accepted_p50_ms": _p(ok, 50),
        "accepted_p99_ms": _p(ok, 99),
        "refused_p50_ms": _p(refused, 50),
        "refused_p99_ms": _p(refused, 99),
    }


def _bins(records: list[list], start: float, end: float) -> list[tuple[float, dict]]:
    return [(float(t), phase(records, t, t + 1.0)) for t in np.arange(start, end, 1.0)]


def recovery_seconds(records: list[list], start: float, end: float, normal: tuple) -> float:
    """Seconds after ``start`` until every later one-second bin looks like a second of the normal
    phase (``normal``: its start and end): its p99 (answered requests) within twice the normal p99
    or the worst normal second's, its refused share within 1% or the worst normal second's, and no
    other error."""
    seconds = [b for _, b in _bins(records, *normal)]
    p99 = phase(records, *normal)["accepted_p99_ms"] or 0.0
    limit = max([2 * p99, p99 + 20] + [b["accepted_p99_ms"] or 0.0 for b in seconds])
    share = max([0.01] + [b["refused"] / max(1, b["ok"] + b["refused"]) for b in seconds])
    bad_until = start
    for t, b in _bins(records, start, end):
        late = b["accepted_p99_ms"] is not None and b["accepted_p99_ms"] > limit
        refusing = b["refused"] > share * max(1, b["ok"] + b["refused"])
        if late or refusing or b["other"]:
            bad_until = t + 1.0
    return float(bad_until - start)


def measure(url: str, model: str, pngs, quick: bool) -> dict:
    bodies = classify_bodies(pngs, model)
    closed = run_loadgen(
        {
            "mode": "closed",
            "url": url,
            "path": "/classify",
            "concurrency": 32,
            "warmup": 3 if quick else 5,
            "duration": 10 if quick else 20,
            "bodies": bodies,
        }
    )
    capacity = closed["throughput"]
    normal, over, after = (5, 10, 10) if quick else (15, 30, 20)
    low, high = 0.5 * capacity, 2.0 * capacity
    run = run_loadgen(
        {
            "mode": "open",
            "url": url,
            "path": "/classify",
            "warmup": 2,
            "schedule": [[low, normal], [high, over], [low, after]],
            "bodies": bodies,
            "records": True,
            "max_in_flight": 8192,
            "timeout": 30,
        },
        timeout=normal + over + after + 120,
    )
    records = run.pop("records")
    base = phase(records, 0, normal)
    overload = phase(records, normal, normal + over)
    end = normal + over + after
    recovery = recovery_seconds(records, normal + over, end, (0, normal))
    return {
        "model": model,
        "capacity_per_s": capacity,
        "capacity_p99_ms": closed["p99_ms"],
        "rates": {"normal": low, "overload": high},
        "normal": base,
        "overload": overload,
        "after": phase(records, normal + over, end),
        "recovery_s": recovery,
        "client": {k: run[k] for k in ("dropped", "send_lag_p99_ms") if k in run},
        "met": {
            "goodput": bool(overload["goodput_per_s"] >= TARGETS["goodput"] * capacity),
            "accepted_p99_ms": bool(
                (overload["accepted_p99_ms"] or 0) <= TARGETS["accepted_p99_ms"]
            ),
            "refused_p99_ms": bool((overload["refused_p99_ms"] or 0) <= TARGETS["refused_p99_ms"]),
            "recovery_s": bool(recovery <= TARGETS["recovery_s"]),
        },
    }


def section(models: Path, quick: bool, model: str = "lenet5") -> dict:
    """The measurement against a server with its defaults (``make bench``'s overload section)."""
    from service.settings import Settings

    with common.ours(models) as server:
        result = measure(server.url, model, common.digit_pngs(64), quick)
    result["max_queue"] = Settings.from_env().max_queue
    return result


def render(r: dict | None, source: str | None) -> list[str]:
    """An overload result as a BENCHMARKS.md section (none: nothing)."""
    if not r:
        return []
    o, n = r["overload"], r["normal"]

    def ms(x):
        return "n/a" if x is None else f"{x:.0f} ms"

    def met(key):
        return "met" if r["met"][key] else "**missed**"

    return [
        "## Overload: admission control",
        "",
        f"`python -m load_tests.overload` ({source}, "
        f"{r['model']}, the server's defaults, `DLZOO_MAX_QUEUE` {r.get('max_queue', '?')}): "
        f"closed-loop capacity {r['capacity_per_s']:.0f} req/s (32 clients); then open-loop "
        f"Poisson arrivals at half of it ({r['rates']['normal']:.0f}/s, p50 "
        f"{ms(n['accepted_p50_ms'])}, p99 {ms(n['accepted_p99_ms'])}), at twice it "
        f"({r['rates']['overload']:.0f}/s for {o['seconds']:.0f} s) and at half again. The load "
        "generator shares the machine's cores; it sent its requests within "
        f"{ms(r.get('client', {}).get('send_lag_p99_ms'))} of their Poisson times (p99), and "
        "latency counts from those times.",
        "",
        "| under 2x overload | measured | target | |",
        "|---|---|---|---|",
        f"| goodput | {o['goodput_per_s']:.0f} req/s "
        f"({o['goodput_per_s'] / r['capacity_per_s']:.0%} of capacity) | >= 80% | "
        f"{met('goodput')} |",
        f"| accepted requests, p50 / p99 | {ms(o['accepted_p50_ms'])} / "
        f"{ms(o['accepted_p99_ms'])} | p99 <= 1 s | {met('accepted_p99_ms')} |",
        f"| refused (503 + Retry-After), p50 / p99 | {o['refused']} requests, "
        f"{ms(o['refused_p50_ms'])} / {ms(o['refused_p99_ms'])} | p99 <= 50 ms | "
        f"{met('refused_p99_ms')} |",
        f"| anything else (not 200 or 503) | {o['other']} | 0 | |",
        f"| back to normal latency after it | {r['recovery_s']:.0f} s | <= 5 s | "
        f"{met('recovery_s')} |",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=common.ROOT / "models")
    p.add_argument("--model", default="lenet5")
    p.add_argument("--quick", action="store_true", help="shorter phases (~1 min)")
    args = p.parse_args(argv)
    result = section(args.models, args.quick, args.model)
    result["machine"] = common.machine()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = common.RESULTS / f"{stamp}-overload.json"
    common.write_json(path, result)
    print("\n".join(render(result, path.name)))
    return 0 if all(result["met"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

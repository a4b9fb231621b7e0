"""Over HTTP: closed-loop sweeps of ``/classify`` against ours (batching on and off), the naive
baseline and the LitServe peer; an open-loop Poisson search; and the batch sizes the server formed.

Every measurement runs the load generator (``load_tests.loadgen``) as its own process; it shares
the 2 cores with the server under test.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import subprocess
import sys

from load_tests import common

log = logging.getLogger("bench.serving")


def run_loadgen(spec: dict, timeout: float | None = None) -> dict:
    budget = timeout or (spec.get("warmup", 0) + spec.get("duration", 0) + 120)
    proc = subprocess.run(
        [sys.executable, "-m", "load_tests.loadgen"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=common.ROOT,
        timeout=budget,
        env={**__import__("os").environ, "PYTHONPATH": str(common.ROOT)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def classify_bodies(pngs: list[tuple[bytes, int]], model: str) -> list[dict]:
    return [
        {"fields": {"model": model, "top_k": 5}, "file": base64.b64encode(p).decode()}
        for p, _ in pngs
    ]


_SAMPLE = re.compile(r"^(dlzoo_\w+?)_(sum|count)\{([^}]*)\}\s+([0-9.eE+-]+)$")


def scrape(text: str | None) -> dict[tuple[str, str], float]:
    """(metric_sum|metric_count, model label) -> value, for the dlzoo histograms."""
    out: dict[tuple[str, str], float] = {}
    for line in (text or "").splitlines():
        m = _SAMPLE.match(line.strip())
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3)))
            if "stage" in labels:
                key = f"{m.group(1)}:{labels['stage']}_{m.group(2)}"
            else:
                key = f"{m.group(1)}_{m.group(2)}"
            k = (key, labels.get("model", ""))
            out[k] = out.get(k, 0.0) + float(m.group(4))
    return out


def formed_batches(metrics: dict, model: str) -> dict:
    """Mean items per ONNX call and ORT ms per call in the measured window, from /metrics deltas."""
    start, end = scrape(metrics.get("start")), scrape(metrics.get("end"))

    def delta(name: str) -> float:
        return sum(
            v - start.get(k, 0.0)
            for k, v in end.items()
            if k[0] == name and k[1].startswith(model + "@")
        )

    calls = delta("dlzoo_batch_size_count")
    if calls <= 0:
        return {}
    out = {
        "onnx_calls": calls,
        "mean_batch": delta("dlzoo_batch_size_sum") / calls,
        "ort_ms_per_call": 1e3
        * delta("dlzoo_inference_seconds_sum")
        / max(1.0, delta("dlzoo_inference_seconds_count")),
    }
    for stage in ("queue", "preprocess"):
        n = delta(f"dlzoo_stage_seconds:{stage}_count")
        if n:
            out[f"{stage}_ms_mean"] = 1e3 * delta(f"dlzoo_stage_seconds:{stage}_sum") / n
    return out


def interpolate_curve(curve: dict, batch: float) -> float | None:
    """ORT items/s at a (fractional) batch size, linear in log2(batch) between measured points."""
    if not curve:
        return None
    pts = sorted((int(b), v) for b, v in curve.items())
    if batch <= pts[0][0]:
        return pts[0][1]
    for (b0, v0), (b1, v1) in zip(pts, pts[1:]):
        if batch <= b1:
            t = (math.log2(batch) - math.log2(b0)) / (math.log2(b1) - math.log2(b0))
            return v0 + t * (v1 - v0)
    return pts[-1][1]


def sweep(
    server: common.Server,
    label: str,
    names: list[str],
    pngs,
    concurrencies,
    warmup: float,
    duration: float,
    with_metrics: bool,
) -> list[dict]:
    rows = []
    for name in names:
        for conc in concurrencies:
            spec = {
                "mode": "closed",
                "url": server.url,
                "path": "/classify",
                "concurrency": conc,
                "warmup": warmup,
                "duration": duration,
                "bodies": classify_bodies(pngs, name),
                "metrics_url": server.url + "/metrics" if with_metrics else None,
            }
            try:
                procs0 = common.process_cpu(server.proc.pid)
                out = run_loadgen(spec)
                procs1 = common.process_cpu(server.proc.pid)
                cpu0, cpu1 = common.by_role(procs0), common.by_role(procs1)
            except Exception as exc:
                log.exception("%s %s c=%d failed", label, name, conc)
                rows.append(
                    {"server": label, "model": name, "concurrency": conc, "error": str(exc)}
                )
                continue
            row = {
                "server": label,
                "model": name,
                "concurrency": conc,
                **{
                    k: out[k]
                    for k in (
                        "throughput",
                        "p50_ms",
                        "p95_ms",
                        "p99_ms",
                        "mean_ms",
                        "requests",
                        "ok",
                        "errors",
                        "statuses",
                        "client_cpu_share",
                        "client_cpu_ms_per_request",
                    )
                },
            }
            # the server's CPU per request (all its processes, warm-up included), by role for ours
            n = max(1, out.get("total_requests", 0))
            row["server_cpu_ms_per_request"] = {
                k: 1e3 * (cpu1[k] - cpu0[k]) / n for k in cpu1 if cpu1[k] - cpu0[k] > 0
            }
            row["server_cpu_ms_per_request"]["total"] = (
                1e3 * sum(cpu1[k] - cpu0[k] for k in cpu1) / n
            )
            shares = common.front_shares(procs0, procs1)
            if shares:
                row["front_worker_cpu_shares"] = shares
            if with_metrics:
                row.update(formed_batches(out.get("metrics") or {}, name))
            log.info(
                "%-22s %-9s c=%-3d %7.1f req/s  p50 %6.1f  p99 %6.1f ms  batch %s  errors %d",
                label,
                name,
                conc,
                row["throughput"],
                row["p50_ms"] or -1,
                row["p99_ms"] or -1,
                round(row.get("mean_batch", 0), 1) or "-",
                row["errors"],
            )
            rows.append(row)
    return rows


def poisson_search(
    server: common.Server,
    name: str,
    pngs,
    capacity: float,
    fractions,
    warmup: float,
    duration: float,
    slo_ms: float = 100.0,
) -> dict:
    """Open-loop Poisson runs at rising fractions of the closed-loop capacity; the highest rate
    whose p99 stays <= ``slo_ms`` with no errors."""
    runs, best = [], None
    fractions = list(fractions)
    while fractions:
        f = fractions.pop(0)
        rate = max(1.0, round(f * capacity))
        spec = {
            "mode": "open",
            "url": server.url,
            "path": "/classify",
            "rate": rate,
            "warmup": warmup,
            "duration": duration,
            "bodies": classify_bodies(pngs, name),
            "seed": len(runs),
        }
        out = run_loadgen(spec)
        ok = out["errors"] == 0 and out["p99_ms"] is not None and out["p99_ms"] <= slo_ms
        runs.append(
            {
                "rate": rate,
                "achieved": out["throughput"],
                "p50_ms": out["p50_ms"],
                "p99_ms": out["p99_ms"],
                "errors": out["errors"],
                "dropped": out["dropped"],
                "send_lag_p99_ms": out["send_lag_p99_ms"],
                "meets_slo": ok,
            }
        )
        log.info(
            "poisson %s %5.0f/s: p99 %.1f ms, errors %d -> %s",
            name,
            rate,
            out["p99_ms"] or -1,
            out["errors"],
            "ok" if ok else "over",
        )
        if ok:
            best = rate
        elif best is None and f > 0.05:
            fractions = [f / 2]  # even the first rate was too much: halve until one passes
        else:
            break
    return {
        "model": name,
        "slo_p99_ms": slo_ms,
        "capacity_closed_loop": capacity,
        "highest_rate_meeting_slo": best,
        "runs": runs,
    }

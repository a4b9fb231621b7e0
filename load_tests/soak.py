"""``make soak DURATION=30m``: the locust scenario (every endpoint, mixed) against a server it
starts, for a long time, with each server process's resident memory sampled throughout.

    python -m load_tests.soak --duration 30m --users 16

Pass criteria, each one failing the run (exit code 1):
- no failed request and no 5xx (locust's CSVs, as ``make load`` checks them), every endpoint served;
- memory: each process's RSS stays within 10% (``--tolerance``) of its value after the warm-up,
  at every sample after it. The warm-up is the first sixth of the run (5 min of 30; ``--warmup``
  sets it): the allocator's arenas, ONNX Runtime's buffers at each batch size and the batcher's
  queues grow to their working size under the load first. "Its value after the warm-up" is the
  first sample taken at or after the warm-up's end. A process that is gone or replaced (a worker
  restarted) fails the run too.

Processes: the ``bentoml serve`` arbiter (the process it starts everything from), each HTTP worker
of the front service and the Inference worker. Writes ``load_tests/results/<UTC>-soak.json``,
``<UTC>-soak.png`` (RSS over time) and locust's CSV and HTML beside them, and puts the figures in
BENCHMARKS.md's soak section (:func:`section`, which ``load_tests/report.py`` renders too).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from load_tests import common, load

HEADING = "## Soak: every endpoint for a long time"
UNITS = {"h": 3600, "m": 60, "s": 1}
ROLES = ["arbiter", "front", "inference", "other"]


def seconds(duration: str) -> float:
    """Locust's run-time syntax (``90s``, ``30m``, ``1h30m``, or plain seconds) in seconds."""
    text = duration.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+)\s*([hms])", text)
    if not parts or re.sub(r"\d+\s*[hms]", "", text).strip():
        raise argparse.ArgumentTypeError(f"not a duration: {duration!r} (e.g. 90s, 30m, 1h30m)")
    return float(sum(int(n) * UNITS[u] for n, u in parts))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m load_tests.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", default="30m", help="locust run time, e.g. 30m (default 30m)")
    p.add_argument(
        "--warmup",
        default=None,
        help="warm-up before the memory baseline, e.g. 5m (default: a sixth of --duration)",
    )
    p.add_argument("--users", type=int, default=16, help="simulated users (default 16)")
    p.add_argument(
        "--spawn-rate", type=float, default=8.0, help="users started per second (default 8)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.10,
        help="RSS band, a fraction (default 0.10)",
    )
    p.add_argument(
        "--sample-seconds", type=float, default=10.0, help="RSS sampling period (default 10)"
    )
    p.add_argument(
        "--models",
        type=Path,
        default=Path(os.environ.get("DLZOO_MODELS", common.ROOT / "models")),
        help="model repository (default $DLZOO_MODELS or models/)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=common.RESULTS,
        help="results (default load_tests/results)",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=common.ROOT / "BENCHMARKS.md",
        help="where the soak section goes (default BENCHMARKS.md; 'none': nowhere)",
    )
    args = p.parse_args(argv)
    args.duration_s = seconds(args.duration)
    args.warmup_s = seconds(args.warmup) if args.warmup else args.duration_s / 6
    if not 0 < args.warmup_s < args.duration_s:
        p.error("--warmup must be shorter than --duration")
    return args


# ------------------------------------------------------------------------------------ the memory


def rss_by_process(root: int) -> dict[str, float]:
    """MB of resident memory of the server's processes, named ``<role>-<pid>``: ``arbiter`` (the
    ``bentoml serve`` process), ``front``, ``inference``, and ``other`` for anything else."""
    out = {}
    for pid, (role, _) in common.process_cpu(root).items():
        try:
            out[f"{'arbiter' if pid == root else role}-{pid}"] = (
                psutil.Process(pid).memory_info().rss / 2**20
            )
        except psutil.Error:
            pass
    return out


class Sampler:
    """Reads :func:`rss_by_process` every ``period`` seconds in a thread, from ``start()``."""

    def __init__(self, root: int, period: float):
        self.root, self.period = root, period
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while True:
            rss = rss_by_process(self.root)
            self.samples.append(
                {
                    "t": round(time.monotonic() - t0, 1),
                    "rss_mb": {k: round(v, 2) for k, v in rss.items()},
                }
            )
            if self._stop.wait(self.period):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def judge_memory(samples: list[dict], warmup: float, tolerance: float) -> dict:
    """Each process's RSS against its value after the warm-up (module docstring).

    ``samples``: ``[{"t": seconds, "rss_mb": {process: MB}}]`` in time order. Returns
    ``{"processes": {process: {...}}, "problems": [...]}``; each process has its ``first``,
    ``warm`` and ``last`` MB, its ``min``/``max`` after the warm-up and their ratios to ``warm``,
    and ``within`` (every sample after the warm-up inside the band)."""
    after = [s for s in samples if s["t"] >= warmup]
    if not after:
        return {"processes": {}, "problems": [f"no RSS sample after the warm-up ({warmup:.0f} s)"]}
    warm = after[0]
    problems: list[str] = []
    processes: dict[str, dict] = {}
    names = sorted({name for s in samples for name in s["rss_mb"]}, key=_process_order)
    for name in names:
        seen = [s for s in samples if name in s["rss_mb"]]
        if name not in warm["rss_mb"]:
            problems.append(f"{name}: not running at the end of the warm-up")
            continue
        base = warm["rss_mb"][name]
        later = [s["rss_mb"][name] for s in after if name in s["rss_mb"]]
        missing = len(after) - len(later)
        lo, hi = min(later), max(later)
        row = {
            "first": seen[0]["rss_mb"][name],
            "warm": base,
            "last": later[-1],
            "min": lo,
            "max": hi,
            "min_ratio": round(lo / base, 4),
            "max_ratio": round(hi / base, 4),
            "last_ratio": round(later[-1] / base, 4),
            "samples_after_warmup": len(later),
            "within": (1 - tolerance) * base <= lo and hi <= (1 + tolerance) * base,
        }
        processes[name] = row
        if missing:
            problems.append(f"{name}: gone in {missing} of {len(after)} samples after the warm-up")
        if not row["within"]:
            problems.append(
                f"{name}: RSS {lo:.1f}-{hi:.1f} MB after the warm-up, outside "
                f"{base:.1f} MB ± {tolerance:.0%}"
            )
    return {"processes": processes, "problems": problems}


def _process_order(name: str) -> tuple[int, str]:
    role = name.split("-")[0]
    return (ROLES.index(role) if role in ROLES else len(ROLES), name)


# --------------------------------------------------------------------------------------- the run


def endpoint_rows(prefix: Path) -> list[dict]:
    """Locust's per-endpoint figures: name, requests, failures, req/s, p50 and p99 ms."""
    import csv

    with open(f"{prefix}_stats.csv", newline="") as f:
        return [
            {
                "name": r["Name"],
                "requests": int(r["Request Count"] or 0),
                "failures": int(r["Failure Count"] or 0),
                "rps": float(r["Requests/s"] or 0),
                "p50_ms": _number(r.get("50%")),
                "p99_ms": _number(r.get("99%")),
            }
            for r in csv.DictReader(f)
        ]


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = args.out / f"soak-{stamp}"
    server = common.ours(args.models)
    print(f"soak: starting bentoml serve over {args.models} ...", flush=True)
    t0 = time.time()
    with server:
        print(f"soak: ready in {server.ready_seconds:.1f} s at {server.url}", flush=True)
        cmd = load.locust_command(
            server.url, args.users, args.spawn_rate, f"{args.duration_s:.0f}s", prefix
        )
        print(
            f"soak: {args.users} users for {args.duration} (warm-up {args.warmup_s:.0f} s), RSS "
            f"every {args.sample_seconds:.0f} s",
            flush=True,
        )
        with Sampler(server.proc.pid, args.sample_seconds) as sampler:
            proc = subprocess.run(
                cmd,
                cwd=common.ROOT,
                env={**os.environ, "PYTHONPATH": str(common.ROOT)},
                capture_output=True,
                text=True,
            )
    sys.stdout.write(proc.stdout[-4000:])
    sys.stderr.write(proc.stderr[-4000:])
    problems, total = load.check(prefix)
    skipped = load.skipped_endpoints(proc.stdout + proc.stderr)
    if skipped:
        problems.append(f"endpoints not served: {skipped}")
    if proc.returncode != 0 and not problems:
        problems.append(f"locust exited with {proc.returncode}")
    memory = judge_memory(sampler.samples, args.warmup_s, args.tolerance)
    result = {
        "timestamp": stamp,
        "command": f"make soak DURATION={args.duration} USERS={args.users}",
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "tolerance": args.tolerance,
        "users": args.users,
        "wall_s": round(time.time() - t0, 1),
        "ready_s": server.ready_seconds,
        "requests": int(total.get("Request Count", 0) or 0),
        "failures": int(total.get("Failure Count", 0) or 0),
        "rps": float(total.get("Requests/s", 0) or 0),
        "endpoints": endpoint_rows(prefix),
        "processes": memory["processes"],
        "samples": sampler.samples,
        "problems": problems + memory["problems"],
        "passed": not problems and not memory["problems"],
        "machine": common.machine(),
    }
    path = args.out / f"{stamp}-soak.json"
    common.write_json(path, result)
    plot(result, path.with_suffix(".png"))
    if str(args.report) != "none":
        write_section(args.report, args.out)
    print(summary(result))
    print(f"soak: {path}")
    return 0 if result["passed"] else 1


# ---------------------------------------------------------------------------- plot and report


def plot(r: dict, path: Path) -> Path | None:
    """RSS over time, one line per process, and each relative to its warm value with the band."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (absolute, relative) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name, row in r["processes"].items():
        points = [(s["t"] / 60, s["rss_mb"][name]) for s in r["samples"] if name in s["rss_mb"]]
        xs, ys = zip(*points, strict=True)
        (line,) = absolute.plot(xs, ys, label=name, linewidth=1.2)
        relative.plot(xs, [y / row["warm"] for y in ys], color=line.get_color(), linewidth=1.2)
    tol = r["tolerance"]
    for ax in (absolute, relative):
        ax.axvline(r["warmup_s"] / 60, color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    relative.axhspan(1 - tol, 1 + tol, color="green", alpha=0.08, label=f"±{tol:.0%}")
    relative.axhline(1.0, color="grey", linewidth=0.8)
    relative.set_ylim(1 - 3 * tol, 1 + 3 * tol)  # start-up's lower readings fall off the bottom
    absolute.set_ylabel("RSS (MB)")
    relative.set_ylabel("RSS / value after warm-up")
    relative.set_xlabel("minutes (dashed: end of the warm-up)")
    absolute.legend(fontsize=8, loc="center right")
    relative.legend(fontsize=8, loc="lower right")
    verdict = "passed" if r["passed"] else "FAILED"
    absolute.set_title(
        f"make soak: {r['requests']:,} requests, {r['failures']} failures, {r['users']} users "
        f"({verdict})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary(r: dict) -> str:
    lines = [
        f"soak: {r['requests']:,} requests in {r['duration_s'] / 60:.0f} min, {r['failures']} "
        f"failures, {r['rps']:.1f} req/s; RSS after the warm-up ({r['warmup_s'] / 60:.1f} min):"
    ]
    for name, row in r["processes"].items():
        lines.append(
            f"  {name:16s} first {row['first']:7.1f}  warm {row['warm']:7.1f}  last "
            f"{row['last']:7.1f} MB  after warm-up {row['min_ratio']:.3f}-{row['max_ratio']:.3f}"
        )
    lines.append("soak: " + ("OK" if r["passed"] else "FAILED\n  " + "\n  ".join(r["problems"])))
    return "\n".join(lines)


def section(results: Path) -> list[str]:
    """BENCHMARKS.md's soak section from the latest ``*-soak.json`` in ``results`` (none: [])."""
    runs = sorted(Path(results).glob("*-soak.json"))
    if not runs:
        return []
    r = json.loads(runs[-1].read_text())
    rel = "load_tests/results/"
    tol = r["tolerance"]
    out = [
        HEADING,
        "",
        f"`{r['command']}` ([{runs[-1].name}]({rel}{runs[-1].name})): the locust scenario "
        f"(`load_tests/locustfile.py`, every endpoint, mixed) for {r['duration_s'] / 60:.0f} min "
        f"against a server with its defaults: **{r['requests']:,} requests, {r['failures']} "
        f"failures** ({r['rps']:.1f} req/s on the shared 2 cores). Criteria: no failure and no "
        f"5xx, and each process's RSS within {tol:.0%} of its value after the warm-up (the first "
        f"{r['warmup_s'] / 60:.1f} min; the value is the first sample after it) at every sample "
        f"after it: **{'passed' if r['passed'] else 'failed'}**.",
        "",
        "| process | RSS first (MB) | after warm-up | last | after warm-up: min-max ratio |",
        "|---|---|---|---|---|",
    ]
    for name, row in r["processes"].items():
        out.append(
            f"| {name} | {row['first']:.1f} | {row['warm']:.1f} | {row['last']:.1f} | "
            f"{row['min_ratio']:.3f}-{row['max_ratio']:.3f} |"
        )
    out += [
        "",
        "| endpoint | requests | failures | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for e in r["endpoints"]:
        out.append(
            f"| {e['name']} | {e['requests']:,} | {e['failures']} | {_ms(e['p50_ms'])} | "
            f"{_ms(e['p99_ms'])} |"
        )
    png = runs[-1].with_suffix(".png")
    if png.is_file():
        out += ["", f"![RSS over time]({rel}{png.name})"]
    if r["problems"]:
        out += ["", "Problems: " + "; ".join(r["problems"])]
    return [*out, ""]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def write_section(report: Path, results: Path) -> None:
    """Replace (or add, before "## Reproduce") the soak section of an existing BENCHMARKS.md."""
    if not report.is_file():
        return
    text = report.read_text()
    new = "\n".join(section(results))
    start = text.find(HEADING)
    if start >= 0:
        end = text.find("\n## ", start + len(HEADING))
        end = len(text) if end < 0 else end + 1
        text = text[:start] + new + text[end:]
    else:
        at = text.find("## Reproduce")
        at = len(text) if at < 0 else at
        text = text[:at] + new + "\n" + text[at:]
    report.write_text(text)


if __name__ == "__main__":
    sys.exit(main())

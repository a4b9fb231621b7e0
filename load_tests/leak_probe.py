"""Memory per internal call: the Inference process's RSS under front -> Inference calls, on two
revisions of ``service/`` in the same run.

    python -m load_tests.leak_probe 803d507              # that revision, then the working tree
    python -m load_tests.leak_probe 803d507 HEAD --seconds 120

Each revision runs from a temporary ``git worktree`` (as ``load_tests.ab`` does) over a copy of
``--models``' lenet5, with ``DLZOO_CLASSIFY_IN=inference`` (every ``/classify`` is a call from a
front worker to the Inference service) and polling off; closed-loop clients classify for
``--seconds``. The server's RSS by process is read every 5 s; the figures compare the reading at
10 s (past start-up) with the last. Prints one markdown row per revision.

``--trace`` also runs tracemalloc inside each Inference process (a ``sitecustomize`` put on the
server's ``PYTHONPATH``; it slows that process several times): the allocation sites that grew most
between a snapshot 10 s into the load and one at its end, and the count of live event-loop timers
and futures then, are printed and kept in the results (its RSS figures mean little then). That is
how the timer every request left behind was found (load_tests/FINDINGS.md, session 5).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from load_tests import common
from load_tests.ab import worktree
from load_tests.soak_repository import Clients, rss_by_process

# Runs at start-up in every Python process the server starts; acts only in the Inference worker.
TRACER = """
import os, sys, threading, time

if "--service-name dlzoo-inference" in " ".join(sys.argv):
    import gc, tracemalloc

    tracemalloc.start(8)

    def _when(name):  # the probe creates the file when it is time
        while not os.path.exists(os.path.join(os.environ["DLZOO_TRACE"], name)):
            time.sleep(0.2)

    def _snapshots():
        _when("start")
        gc.collect()
        base = tracemalloc.take_snapshot()
        _when("stop")
        gc.collect()
        grown = tracemalloc.take_snapshot().compare_to(base, "traceback")[:8]
        live = {}
        for o in gc.get_objects():
            name = type(o).__name__
            if name in ("TimerHandle", "UVTimer", "Future", "Context"):
                live[name] = live.get(name, 0) + 1
        lines = [f"live {k}: {v}" for k, v in sorted(live.items())]
        for stat in grown:
            frames = " <- ".join(str(f) for f in reversed(stat.traceback[-3:]))
            lines.append(f"{stat.size_diff / 1024:.0f} KiB, {stat.count_diff} blocks: {frames}")
        out = os.path.join(os.environ["DLZOO_TRACE"], "inference.txt")
        with open(out + ".tmp", "w") as f:
            f.write("\\n".join(lines) + "\\n")
        os.replace(out + ".tmp", out)

    threading.Thread(target=_snapshots, daemon=True).start()
"""


def probe(root: Path, models: Path, seconds: float, clients: int, trace: Path | None) -> dict:
    """Run one revision's server under load; RSS (MB) by process every 5 s, and the requests;
    with ``trace`` (a folder), tracemalloc's findings in the Inference process."""
    server = common.ours(models, env={"DLZOO_CLASSIFY_IN": "inference", "DLZOO_POLL_SECONDS": "0"})
    server.root = root
    if trace is not None:
        trace.mkdir(parents=True, exist_ok=True)
        (trace / "sitecustomize.py").write_text(TRACER)
        server.env.update(PYTHONPATH=f"{root}:{trace}", DLZOO_TRACE=str(trace))
    image = common.digit_pngs(1)[0][0]
    readings: list[tuple[float, int, dict[str, float]]] = []
    with server, Clients(server.url, image, clients) as load:
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(5)
            done = sum(load.statuses.values())
            readings.append((round(elapsed, 1), done, rss_by_process(server.proc.pid)))
            if trace is not None and len(readings) == 2:
                (trace / "start").touch()  # 10 s into the load
        if trace is not None:
            (trace / "stop").touch()
            deadline = time.monotonic() + 120
            while not (trace / "inference.txt").is_file() and time.monotonic() < deadline:
                time.sleep(1)
    first, last = readings[min(2, len(readings) - 1)], readings[-1]  # from 10 s: past start-up
    requests = last[1] - first[1]
    rows = {}
    for name, mb in last[2].items():
        role = name.split("-")[0]
        start = first[2].get(name)
        if start is None:
            continue
        rows[name] = {
            "role": role,
            "first_mb": round(start, 1),
            "last_mb": round(mb, 1),
            "kb_per_1000_requests": round((mb - start) * 1024 / max(requests, 1) * 1000, 1),
        }
    found = trace / "inference.txt" if trace is not None else None
    return {
        "tracemalloc": found.read_text().splitlines() if found and found.is_file() else None,
        "statuses": {str(k): v for k, v in load.statuses.items()},
        "requests_between_readings": requests,
        "seconds_between_readings": round(last[0] - first[0], 1),
        "processes": rows,
        "readings": [
            {"t": t, "requests": n, "rss_mb": {k: round(v, 1) for k, v in rss.items()}}
            for t, n, rss in readings
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m load_tests.leak_probe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("before", help="git revision before the change")
    p.add_argument(
        "after", nargs="?", default=None, help="git revision after it (default: the working tree)"
    )
    p.add_argument("--seconds", type=float, default=80.0, help="load per revision (default 80)")
    p.add_argument("--clients", type=int, default=4, help="closed-loop clients (default 4)")
    p.add_argument("--models", type=Path, default=common.ROOT / "models", help="has lenet5")
    p.add_argument(
        "--trace", action="store_true", help="tracemalloc in the Inference process (module doc)"
    )
    args = p.parse_args(argv)
    latest = common.latest_version(args.models, "lenet5")
    if latest is None:
        sys.exit(f"no lenet5 in {args.models}: run `make models` first")
    tmp = Path(tempfile.mkdtemp(prefix="dlzoo-leak-"))
    models = tmp / "models"
    shutil.copytree(latest, models / "lenet5" / latest.name)
    roots = {
        args.before: worktree(args.before, tmp),
        args.after or "working tree": worktree(args.after, tmp) if args.after else common.ROOT,
    }
    results = {}
    try:
        for label, root in roots.items():
            trace = tmp / f"trace-{len(results)}" if args.trace else None
            results[label] = probe(root, models, args.seconds, args.clients, trace)
            print(label, json.dumps(results[label]["processes"]), flush=True)
            for line in results[label]["tracemalloc"] or []:
                print(f"  {line}", flush=True)
    finally:
        for root in roots.values():
            if root != common.ROOT:
                subprocess.run(
                    ["git", "-C", str(common.ROOT), "worktree", "remove", "--force", str(root)],
                    capture_output=True,
                )
        shutil.rmtree(tmp, ignore_errors=True)
    out = common.RESULTS / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-leak-probe.json"
    common.write_json(
        out,
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "results": results,
            "machine": common.machine(),
        },
    )
    print(f"\nDLZOO_CLASSIFY_IN=inference, {args.clients} clients classifying, {out.name}:\n")
    print("| revision | requests | s | Inference RSS MB first -> last | KB per 1,000 requests |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        for row in r["processes"].values():
            if row["role"] == "inference":
                print(
                    f"| {label} | {r['requests_between_readings']:,} | "
                    f"{r['seconds_between_readings']:.0f} | {row['first_mb']} -> {row['last_mb']} "
                    f"| {row['kb_per_1000_requests']} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make load``: start our server on a free port, run the locust scenario headless against it, keep
locust's CSV and HTML report, and fail if any request failed or any answer was a 5xx.

    python -m load_tests.load --duration 60s --users 16
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

from load_tests import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m load_tests.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", default="60s", help="locust run time, e.g. 30s, 2m (default 60s)")
    p.add_argument("--users", type=int, default=16, help="simulated users (default 16)")
    p.add_argument(
        "--spawn-rate", type=float, default=8.0, help="users started per second (default 8)"
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
        help="where the CSV and HTML go (default load_tests/results)",
    )
    p.add_argument(
        "--host",
        default=None,
        help="an already running server instead of starting one (default: start one)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help=(
            "also fail when an endpoint was skipped because the server does not serve it "
            "(default: off)"
        ),
    )
    return p.parse_args(argv)


def check(prefix: Path) -> tuple[list[str], dict]:
    """Problems found in locust's CSVs (empty: a clean run) and the aggregated row."""
    problems: list[str] = []
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    total = next((r for r in rows if r["Name"] == "Aggregated"), {})
    if int(total.get("Request Count", 0) or 0) == 0:
        problems.append("no requests were made")
    if int(total.get("Failure Count", 0) or 0):
        problems.append(f"{total['Failure Count']} of {total['Request Count']} requests failed")
    failures = Path(f"{prefix}_failures.csv")
    if failures.is_file():
        with open(failures, newline="") as f:
            for r in csv.DictReader(f):
                error = r.get("Error", "")
                tag = "5xx: " if re.search(r"\b5\d\d\b", error) else ""
                problems.append(
                    f"{tag}{r.get('Method')} {r.get('Name')}: {r.get('Occurrences')}x {error[:200]}"
                )
    return problems, total


def locust_command(host: str, users: int, spawn_rate: float, duration: str, prefix: Path):
    """Locust, headless, running the scenario against ``host``; CSVs and HTML at ``prefix``."""
    return [
        common.bin_path("locust"),
        "-f",
        str(common.ROOT / "load_tests" / "locustfile.py"),
        "--headless",
        "--host",
        host,
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "-t",
        duration,
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--only-summary",
        "--stop-timeout",
        "30",
    ]


def skipped_endpoints(output: str) -> str | None:
    """The endpoints the scenario skipped (not in the server's OpenAPI document), from locust's
    output: ``"/a,/b"``, or None."""
    lines = [
        line.split(":", 1)[1].strip()
        for line in output.splitlines()
        if line.startswith("SKIPPED ENDPOINTS:")
    ]
    return lines[-1] if lines else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = args.out / f"load-{stamp}"
    server = None
    if args.host is None:
        server = common.ours(args.models)
        print(f"load: starting bentoml serve over {args.models} ...", flush=True)
        server.start()
        print(f"load: ready in {server.ready_seconds:.1f} s at {server.url}", flush=True)
    host = args.host or server.url
    cmd = locust_command(host, args.users, args.spawn_rate, args.duration, prefix)
    try:
        proc = subprocess.run(
            cmd,
            cwd=common.ROOT,
            env={**os.environ, "PYTHONPATH": str(common.ROOT)},
            capture_output=True,
            text=True,
        )
    finally:
        if server is not None:
            server.stop()
    sys.stdout.write(proc.stdout[-6000:])
    sys.stderr.write(proc.stderr[-6000:])
    skipped = skipped_endpoints(proc.stdout + proc.stderr)
    problems, total = check(prefix)
    if skipped:
        print(f"load: skipped (not served): {skipped}")
        if args.strict:
            problems.append(f"endpoints not served: {skipped}")
    print(
        f"load: {total.get('Request Count', 0)} requests, "
        f"{total.get('Failure Count', 0)} failures, "
        f"{float(total.get('Requests/s', 0) or 0):.1f} req/s, p99 {total.get('99%', '?')} ms; "
        f"report {prefix}.html, CSV {prefix}_stats.csv"
    )
    if problems:
        print("load: FAILED\n  " + "\n  ".join(problems))
        return 1
    if proc.returncode != 0:
        print(f"load: FAILED (locust exited with {proc.returncode})")
        return 1
    print("load: OK (no failures, no 5xx)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

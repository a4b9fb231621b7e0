"""The live model repository under churn: publish/delete cycles while clients classify.

    python -m load_tests.soak_repository --cycles 50        # ~4 min on 2 cores

A copy of ``--models``' lenet5 is served; each cycle publishes lenet5@2 (a dot folder renamed into
place), waits until it answers, deletes it (``rm -rf``) and waits until version 1 answers again,
while closed-loop clients classify. Reports every non-200 answer, and each server process's RSS
after every cycle: memory must not grow with swaps. Writes
``load_tests/results/<UTC>-soak-repository.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from load_tests import common

POLL = "0.5"


class Clients:
    """Closed-loop clients classifying one digit until stopped."""

    def __init__(self, url: str, image: bytes, n: int):
        self.url, self.image = url, image
        self.statuses: Counter = Counter()
        self.versions: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(n)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while not self._stop.is_set():
                files = {"image": ("d.png", self.image, "image/png")}
                r = c.post("/classify", files=files, data={"model": "lenet5", "top_k": "1"})
                self.statuses[r.status_code] += 1
                if r.status_code == 200:
                    self.versions.append(r.json()["version"])

    def wait_for(self, version: int, timeout: float = 30.0) -> None:
        seen = len(self.versions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if version in self.versions[max(seen, len(self.versions) - 4) :]:
                return
            time.sleep(0.02)
        raise RuntimeError(f"lenet5@{version} not served within {timeout} s")

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def rss_by_process(root: int) -> dict[str, float]:
    """MB of resident memory of each BentoML worker under ``root``, by role and pid."""
    out = {}
    for pid, (role, _) in common.process_cpu(root).items():
        if role != "other":
            try:
                out[f"{role}-{pid}"] = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.Error:
                pass
    return out


def publish(src: Path, root: Path, version: int) -> None:
    tmp = root / f".tmp-lenet5-{version}"
    shutil.copytree(src, tmp)
    card = json.loads((tmp / "card.json").read_text())
    (tmp / "card.json").write_text(json.dumps({**card, "version": version}))
    tmp.rename(root / "lenet5" / str(version))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m load_tests.soak_repository", description=__doc__)
    p.add_argument("--cycles", type=int, default=50, help="publish/delete cycles (default 50)")
    p.add_argument("--clients", type=int, default=4, help="closed-loop clients (default 4)")
    p.add_argument("--models", type=Path, default=common.ROOT / "models", help="has lenet5")
    args = p.parse_args(argv)
    latest = common.latest_version(args.models, "lenet5")
    if latest is None:
        sys.exit(f"no lenet5 in {args.models}: run `make models` first")
    root = Path(tempfile.mkdtemp(prefix="dlzoo-soak-")) / "models"
    (root / "lenet5").mkdir(parents=True)
    shutil.copytree(latest, root / "lenet5" / "1")
    card = json.loads((root / "lenet5" / "1" / "card.json").read_text())
    (root / "lenet5" / "1" / "card.json").write_text(json.dumps({**card, "version": 1}))
    image = common.digit_pngs(1)[0][0]
    rss: list[dict[str, float]] = []
    t0 = time.monotonic()
    server = common.ours(root, env={"DLZOO_POLL_SECONDS": POLL})
    with server, Clients(server.url, image, args.clients) as clients:
        for cycle in range(args.cycles):
            publish(root / "lenet5" / "1", root, 2)
            clients.wait_for(2)
            shutil.rmtree(root / "lenet5" / "2")
            clients.wait_for(1)
            time.sleep(6 * float(POLL))  # the drain grace, then the sessions are freed
            rss.append(rss_by_process(server.proc.pid))  # after every cycle: the trend shows
            print(f"cycle {cycle + 1}/{args.cycles}: {dict(clients.statuses)}", flush=True)
    shutil.rmtree(root.parent, ignore_errors=True)
    first, middle, last = rss[0], rss[len(rss) // 2], rss[-1]
    growth = {k: round(last[k] / first[k], 3) for k in first if k in last}
    # growth over the second half: a leak keeps growing, an allocator's warm-up levels off
    late = {k: round(last[k] / middle[k], 3) for k in middle if k in last}
    result = {
        "cycles": args.cycles,
        "clients": args.clients,
        "seconds": round(time.monotonic() - t0, 1),
        "requests": sum(clients.statuses.values()),
        "statuses": {str(k): v for k, v in clients.statuses.items()},
        "rss_mb_after_first": {k: round(v, 1) for k, v in first.items()},
        "rss_mb_after_last": {k: round(v, 1) for k, v in last.items()},
        "rss_ratio": growth,
        "rss_ratio_second_half": late,
        "rss_mb_by_cycle": [{k: round(v, 1) for k, v in r.items()} for r in rss],
        "within_10_percent": all(r <= 1.10 for r in growth.values()),
        "machine": common.machine(),
    }
    out = common.RESULTS / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-soak-repository.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: v for k, v in result.items() if k not in ("machine", "rss_mb_by_cycle")}, indent=2
        )
    )
    print(out)
    failures = sum(v for k, v in clients.statuses.items() if k != 200)
    return 0 if failures == 0 and result["within_10_percent"] else 1


if __name__ == "__main__":
    sys.exit(main())

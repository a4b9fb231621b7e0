"""Before/after for one change to the service: the same load on two revisions, alternated.

    python -m load_tests.ab 4f5b367^            # that revision against the working tree
    python -m load_tests.ab HEAD~3 HEAD --model lenet5 --concurrency 8 --rounds 3

Each revision's ``service/`` runs from a temporary ``git worktree`` over the same model repository;
the two servers take turns (before, after, before, after...) so that a noisy neighbour hits both.
Prints one markdown row per revision (medians over rounds): throughput, p50/p99 and the server's CPU
per request by process, and with ``--streams N`` the aggregate tokens/s of N concurrent generation
streams (``--lm``): the before/after rows a change needs in ``load_tests/FINDINGS.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from load_tests import common
from load_tests import serving as sv
from load_tests.generation import generation_section


def worktree(rev: str, into: Path) -> Path:
    path = into / rev.replace("/", "_").replace("^", "-parent").replace("~", "-back")
    subprocess.run(
        ["git", "-C", str(common.ROOT), "worktree", "add", "--detach", "--force", str(path), rev],
        check=True,
        capture_output=True,
    )
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m load_tests.ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("before", help="git revision before the change")
    p.add_argument(
        "after", nargs="?", default=None, help="git revision after it (default: the working tree)"
    )
    p.add_argument("--model", default="resnet18", help="classifier to load (default resnet18)")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop clients (default 32)")
    p.add_argument("--rounds", type=int, default=2, help="alternations (default 2)")
    p.add_argument(
        "--streams",
        type=int,
        default=0,
        help="also N concurrent generation streams (default 0: no)",
    )
    p.add_argument("--lm", default="lstm", help="language model for --streams (default lstm)")
    p.add_argument(
        "--duration", type=float, default=8.0, help="seconds measured per round (default 8)"
    )
    p.add_argument(
        "--models",
        type=Path,
        default=Path(os.environ.get("DLZOO_MODELS", common.ROOT / "models")),
        help="model repository (default $DLZOO_MODELS or models/)",
    )
    args = p.parse_args(argv)
    pngs = common.digit_pngs(64)
    tmp = Path(tempfile.mkdtemp(prefix="dlzoo-ab-"))
    roots = {
        args.before: worktree(args.before, tmp),
        args.after or "working tree": worktree(args.after, tmp) if args.after else common.ROOT,
    }
    rows: dict[str, list[dict]] = {k: [] for k in roots}
    tokens: dict[str, list[float]] = {k: [] for k in roots}
    try:
        for _ in range(args.rounds):
            for label, root in roots.items():
                server = common.ours(args.models)
                server.root = root
                with server:
                    sv.sweep(server, label, [args.model], pngs, (8,), 0.0, 3.0, False)  # warm up
                    rows[label] += sv.sweep(
                        server,
                        label,
                        [args.model],
                        pngs,
                        (args.concurrency,),
                        1.0,
                        args.duration,
                        True,
                    )
                    if args.streams:
                        gen = generation_section(
                            server.url, args.lm, quick=True, concurrent=args.streams
                        )
                        tokens[label].append(gen.get("aggregate_tokens_per_s") or 0.0)
    finally:
        for root in roots.values():
            if root != common.ROOT:
                subprocess.run(
                    ["git", "-C", str(common.ROOT), "worktree", "remove", "--force", str(root)],
                    capture_output=True,
                )
    print(
        f"\n{args.model}, {args.concurrency} clients, median of {args.rounds} alternated rounds:\n"
    )
    print("| revision | req/s | p50 ms | p99 ms | server CPU ms/request (front, inference) |")
    print("|---|---|---|---|---|")
    for label, rs in rows.items():
        ok = [r for r in rs if "throughput" in r]
        if not ok:
            print(f"| {label} | error | | | |")
            continue
        med = {k: float(np.median([r[k] for r in ok])) for k in ("throughput", "p50_ms", "p99_ms")}
        cpu = {
            k: float(np.median([r["server_cpu_ms_per_request"].get(k, 0.0) for r in ok]))
            for k in ("total", "front", "inference")
        }
        print(
            f"| {label} | {med['throughput']:.0f} | {med['p50_ms']:.1f} | {med['p99_ms']:.1f} | "
            f"{cpu['total']:.2f} ({cpu['front']:.2f}, {cpu['inference']:.2f}) |"
        )
    if args.streams:
        print(f"\n{args.lm}, {args.streams} concurrent streams, median of {args.rounds} rounds:\n")
        print("| revision | tokens/s |")
        print("|---|---|")
        for label, ts in tokens.items():
            print(f"| {label} | {float(np.median(ts)) if ts else 0:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A longer schemathesis fuzz than `make test`'s: every check, against a server with the zoo.

    python -m load_tests.fuzz [--models models] [--examples 200]

`make bench` runs it as its "fuzz" section; the summary (operations, cases, failures, seconds) goes
into BENCHMARKS.md. The configuration is the test's (tests/schemathesis.toml).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

from load_tests import common

CONFIG = common.ROOT / "tests" / "schemathesis.toml"


def summary(stdout: str) -> dict:
    """Operations tested, cases generated and passed, and failures, from schemathesis's summary."""
    tail = stdout[stdout.rfind("SUMMARY") :]
    tested = re.search(r"Tested: (\d+)", tail)
    cases = re.search(r"(\d+) generated, (\d+) (?:passed|found (\d+) unique failures?)", tail)
    return {
        "operations": int(tested.group(1)) if tested else None,
        "cases": int(cases.group(1)) if cases else None,
        "failures": int(cases.group(3) or 0) if cases else None,
    }


def run(url: str, examples: int, seed: int = 1) -> dict:
    cmd = [common.bin_path("schemathesis"), "--config-file", str(CONFIG), "run"]
    cmd += [url + "/docs.json", "--checks", "all", "--no-color"]
    cmd += ["--max-examples", str(examples), "--seed", str(seed)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=3600)
    out = summary(proc.stdout)
    out.update(examples=examples, seed=seed, seconds=time.perf_counter() - t0)
    out["exit_code"] = proc.returncode
    if proc.returncode:
        out["report_tail"] = proc.stdout[-4000:]
    return out


def section(models: Path, examples: int) -> dict:
    with common.ours(models) as server:
        return run(server.url, examples)


def render(r: dict | None) -> list[str]:
    if not r:
        return []
    return [
        "## Fuzzing the API (schemathesis)",
        "",
        f"`python -m load_tests.fuzz --examples {r['examples']}` against the zoo, every check of "
        f"schemathesis (tests/schemathesis.toml): {r['operations']} operations, {r['cases']} "
        f"generated cases, {r['failures']} failures, {r['seconds']:.0f} s (seed {r['seed']}). "
        "`make test` runs the same with 25 examples per operation.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=common.ROOT / "models")
    p.add_argument("--examples", type=int, default=200)
    args = p.parse_args(argv)
    r = section(args.models, args.examples)
    print("\n".join(render(r)))
    return 0 if r["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

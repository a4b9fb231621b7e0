"""The README's first command on a fresh clone: `make serve`, then every `curl` line the README
shows.

The clone holds what `git clone` gives plus this checkout's changes to tracked files (so a broken
Makefile line fails here before it is committed; in CI the two are the same). Only make variables a
user could pass too are given: the port, the fast `dry-run` training profile, and this suite's
virtualenv (`VENV`, which the Makefile offers for reuse). Each server gets a BentoML home of its own
(tests/conftest.py says why).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from load_tests.common import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parents[1]
# Variables of the outer `make test` that must not leak into the clone's own make runs.
_OUTER = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PYTHONPATH", "VIRTUAL_ENV")


def readme_curl_commands(readme: str) -> list[str]:
    """Every shell line of README.md's ```bash blocks that runs curl, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            code = line.split("  #")[0].strip()
            if re.search(r"(^|[;&|]\s*|do\s+)curl\s", code):
                commands.append(code)
    return commands


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OUTER and not k.startswith("DLZOO_")}
    return {**env, "BENTOML_HOME": str(home)}


def make(clone: Path, target: str, env: dict[str, str], *variables: str, timeout: float) -> str:
    out = subprocess.run(
        ["make", target, f"VENV={VENV}", *variables],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, f"make {target} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Iterator[Path]:
    dest = tmp_path_factory.mktemp("fresh") / "dlzoo"
    snapshot = (
        subprocess.run(
            ["git", "stash", "create"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        or "HEAD"
    )
    commit = subprocess.run(
        ["git", "rev-parse", snapshot], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    # a local clone copies every object, the snapshot's too
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(dest)], check=True)
    subprocess.run(["git", "checkout", "--quiet", commit], cwd=dest, check=True)
    assert not (dest / "models").exists() or not any((dest / "models").glob("*/*/card.json"))
    stamps = set(VENV.glob(".installed-*"))
    yield dest
    if set(VENV.glob(".installed-*")) != stamps:
        # the clone's `make setup` installed this project from the clone (its pyproject.toml
        # differed): point the shared virtualenv's editable install back at this checkout
        subprocess.run(
            [
                str(VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "-e",
                str(ROOT),
            ],
            check=True,
        )


def test_readme_parses_curl_lines():
    commands = readme_curl_commands((ROOT / "README.md").read_text())
    endpoints = {m for c in commands for m in re.findall(r"localhost:3000(/\w+)", c)}
    assert {"/classify", "/generate", "/generate_stream", "/translate", "/sample"} <= endpoints, (
        endpoints
    )


def test_make_serve_on_a_fresh_clone_answers_every_readme_curl(clone, tmp_path):
    port = free_port()
    env = clean_env(tmp_path / "bentoml")
    log = open(tmp_path / "make-serve.log", "w+")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["make", "serve", f"PORT={port}", "PROFILE=dry-run", f"VENV={VENV}"],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def output() -> str:
        log.flush()
        log.seek(0)
        return log.read()[-6000:]

    zoo = {
        "mlp",
        "lenet5",
        "alexnet",
        "vgg16",
        "resnet18",
        "rnn",
        "lstm",
        "gru",
        "seq2seq",
        "vae",
        "gan",
    }
    url = f"http://127.0.0.1:{port}"

    def until(what: str, check) -> float:
        """Seconds from `make serve` until ``check()`` holds (make serve must keep running)."""
        deadline = time.monotonic() + 900
        while True:
            assert proc.poll() is None, f"make serve exited with {proc.returncode}:\n{output()}"
            assert time.monotonic() < deadline, f"{what}: not after 900 s:\n{output()}"
            try:
                if check():
                    return time.monotonic() - t0
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)

    def served() -> set[str]:
        listing = httpx.get(f"{url}/models", timeout=5).json()
        if any(m["status"] in ("training", "queued") for m in listing):
            return set()
        return {m["name"] for m in listing if m["status"] == "ready"}

    try:
        # the server starts at once; the zoo trains beside it and each model serves when published
        ready = until("/readyz", lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200)
        files = {"image": ("digit.png", (clone / "examples" / "digit.png").read_bytes())}
        classify = until(
            "a /classify answer",
            lambda: httpx.post(f"{url}/classify", files=files, timeout=10).status_code == 200,
        )
        whole = until("the whole zoo", lambda: served() == zoo)
        print(f"make serve: /readyz {ready:.0f} s, /classify {classify:.0f} s, zoo {whole:.0f} s")
        assert sorted(p.parent.name for p in (clone / "models").glob("*/1")) == sorted(zoo)
        # Each README curl line as written, from the clone's root, but for the port. A wrapper
        # prints each answer's status, so loops and `-o FILE` lines are checked too.
        for command in readme_curl_commands((clone / "README.md").read_text()):
            script = (
                "curl() { command curl --max-time 120 -w '\\n@@HTTP %{http_code}\\n' \"$@\"; }\n"
                + command.replace("localhost:3000", f"127.0.0.1:{port}")
            )
            run = subprocess.run(
                ["bash", "-c", script], cwd=clone, capture_output=True, text=True, timeout=300
            )
            codes = re.findall(r"@@HTTP (\d+)", run.stdout)
            assert run.returncode == 0 and codes and set(codes) == {"200"}, (
                f"{command}\nexit {run.returncode}, statuses {codes}\n{run.stdout[-1500:]}\n"
                f"{run.stderr[-1500:]}"
            )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_make_models_and_build_on_the_fresh_clone(clone, tmp_path):
    env = clean_env(tmp_path / "bentoml")
    make(
        clone,
        "models",
        env,
        "PROFILE=dry-run",
        "DLZOO_MODELS=" + str(tmp_path / "repo"),
        timeout=900,
    )
    published = {p.parents[1].name for p in (tmp_path / "repo").glob("*/1/card.json")}
    assert {"lenet5", "lstm", "seq2seq", "vae", "gan"} <= published, published
    # make build packs whatever models/ holds (the serve test's, or a dry-run zoo it trains itself)
    make(clone, "build", env, "PROFILE=dry-run", timeout=900)
    assert any((tmp_path / "bentoml" / "bentos" / "dlzoo").glob("*/bento.yaml"))
    listed = subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "training", "list"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0 and "lenet5" in listed.stdout, listed.stderr
    shutil.rmtree(tmp_path / "repo")

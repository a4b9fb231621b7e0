"""What every benchmark needs: the machine's facts, percentiles, model folders, test images, and
servers started in their own process groups (ours, the naive baseline, the LitServe peer).

No torch here: the serving benchmarks import this and stay light.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "load_tests" / "results"

# Two torch processes with spinning OpenMP threads on 2 cores run many times slower; every process
# the benchmark starts gets this (the benchmark itself sets it before importing torch).
QUIET_THREADS = {"OMP_WAIT_POLICY": "PASSIVE"}


# ----------------------------------------------------------------------------------- the machine


def machine() -> dict:
    """Cores, CPU model, library versions and ORT providers: written beside every table."""
    import onnxruntime as ort

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts = {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "ort_available_providers": ort.get_available_providers(),
        "ort_provider_used": "CPUExecutionProvider",  # no GPU here; sessions report their own
        "load_average": os.getloadavg(),
    }
    for name in ("torch", "bentoml", "litserve", "fastapi", "numpy"):
        try:
            facts[name] = __import__(name).__version__
        except Exception:
            facts[name] = None
    try:
        facts["memory_gb"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1
        )
    except (ValueError, OSError):
        pass
    return facts


# ------------------------------------------------------------------------------------ statistics


def percentiles(values, qs=(50, 95, 99)) -> dict[str, float | None]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(np.percentile(a, q)) for q in qs}


# ------------------------------------------------------------------------------------- the models


def latest_version(models: Path, name: str) -> Path | None:
    """``models/<name>/<highest version>``, or None."""
    from service.card import versions

    found = versions(models, name)
    return Path(models) / name / str(found[-1]) if found else None


def zoo_cards(models: Path) -> dict[str, Path]:
    """name -> latest version folder, for every model with a card."""
    out = {}
    if not Path(models).is_dir():
        return out
    for folder in sorted(Path(models).iterdir()):
        if folder.is_dir() and not folder.name.startswith("."):
            latest = latest_version(models, folder.name)
            if latest is not None and (latest / "card.json").is_file():
                out[folder.name] = latest
    return out


# --------------------------------------------------------------------------------------- images


def digit_pngs(count: int = 64, size: int = 32, seed: int = 0) -> list[tuple[bytes, int]]:
    """Real handwritten digits (scikit-learn's test-like tail), white ink on black, as PNG bytes.

    The 8x8 originals are enlarged to ``size`` (bilinear), as a client with a small scan would send.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(digits.images), size=count, replace=False)
    out = []
    for i in idx:
        a = (digits.images[i] / 16.0 * 255.0).astype(np.uint8)
        img = Image.fromarray(a, mode="L").resize((size, size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append((buf.getvalue(), int(digits.target[i])))
    return out


# -------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A server in its own process group; ``ready_seconds`` is process start -> ready. The one
    harness of the benchmarks and the tests: ``with server:`` starts it, waits until it is ready
    and stops it after, also on failure."""

    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/readyz"
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    ready_seconds: float | None = None
    root: Path = ROOT  # the checkout whose code runs (another revision's worktree for A/B runs)
    private_home: bool = False  # remove BENTOML_HOME when stopped (ours() made it)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> Server:
        """Start the process; :meth:`wait_ready` waits for it."""
        cmd = [c.replace("{port}", str(self.port)) for c in self.cmd]
        self.log_path = self.log_path or RESULTS / "logs" / f"{self.name}-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        env = {**os.environ, **QUIET_THREADS, "PYTHONPATH": str(self.root), **self.env}
        self._t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.root,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 300.0) -> Server:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; log: {self.log_path}\n"
                    + self.tail()
                )
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    self.ready_seconds = time.perf_counter() - self._t0
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} not ready after {timeout} s; log: {self.log_path}\n" + self.tail()
        )

    def start(self, timeout: float = 300.0) -> Server:
        self.launch()
        try:
            return self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text()[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        home = self.env.get("BENTOML_HOME")
        if home:
            # A worker BentoML's supervisor restarts while stopping can land in a process group of
            # its own and outlive the group: find leftovers by this server's home.
            import psutil

            for leftover in psutil.process_iter():
                try:
                    if leftover.environ().get("BENTOML_HOME") == home:
                        leftover.kill()
                except psutil.Error:
                    pass
            if self.private_home:
                shutil.rmtree(home, ignore_errors=True)
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def bin_path(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def ours(
    models: Path, env: dict[str, str] | None = None, name: str = "dlzoo", logs: Path | None = None
) -> Server:
    """``bentoml serve service.app:DLZoo`` over ``models``, with a BentoML home of its own: every
    ``bentoml serve`` empties its home's Prometheus folder at start, which would reset the
    ``/metrics`` of any other server on the machine sharing it (and theirs ours). ``logs``: the
    folder for its log (default load_tests/results/logs)."""
    import tempfile

    home = tempfile.mkdtemp(prefix="dlzoo-bentoml-", dir=logs)
    server = Server(
        name,
        [
            bin_path("bentoml"),
            "serve",
            "service.app:DLZoo",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ],
        env={"DLZOO_MODELS": str(models), "BENTOML_HOME": home, **(env or {})},
        private_home=logs is None,
    )
    if logs is not None:
        server.log_path = Path(logs) / f"server-{server.port}.log"
    return server


def naive(models: Path, runs: Path, names: list[str]) -> Server:
    return Server(
        "naive",
        [
            sys.executable,
            "-m",
            "load_tests.baselines.naive_server",
            "--port",
            "{port}",
            "--models",
            str(models),
            "--runs",
            str(runs),
            "--names",
            ",".join(names),
        ],
    )


def litserve(models: Path, names: list[str], max_batch: int, batch_timeout: float) -> Server:
    return Server(
        "litserve",
        [
            sys.executable,
            "-m",
            "load_tests.baselines.litserve_server",
            "--port",
            "{port}",
            "--models",
            str(models),
            "--names",
            ",".join(names),
            "--max-batch",
            str(max_batch),
            "--batch-timeout",
            str(batch_timeout),
        ],
        ready_path="/health",
    )


def _role(cmd: str) -> str:
    return (
        "inference"
        if "--service-name dlzoo-inference" in cmd
        else "front"
        if "--service-name dlzoo " in cmd
        else "other"
    )


def process_cpu(root: int) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds (user + system) used so far) for a process and its descendants;
    roles: ``front`` and ``inference`` for our two BentoML services' workers, ``other`` for the
    rest."""
    tick = os.sysconf("SC_CLK_TCK")
    stats, children = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
        pid, ppid = int(entry.name), int(fields[1])
        stats[pid] = ((int(fields[11]) + int(fields[12])) / tick, cmd)
        children.setdefault(ppid, []).append(pid)
    out: dict[int, tuple[str, float]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        if pid in stats:
            seconds, cmd = stats[pid]
            out[pid] = (_role(cmd), seconds)
    return out


def by_role(procs: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds of a :func:`process_cpu` reading, summed by role."""
    out = {"front": 0.0, "inference": 0.0, "other": 0.0}
    for role, seconds in procs.values():
        out[role] += seconds
    return out


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds used so far by a process and its descendants, by role (see
    :func:`process_cpu`)."""
    return by_role(process_cpu(root))


def ours_defaults():
    """Our server's settings as this environment gives them, and whether its front workers run the
    classifiers themselves (service/settings.py decides; on a CPU they do)."""
    from service.settings import Settings

    settings = Settings.from_env()
    return settings, settings.classifiers_in_front


def front_shares(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> list[float]:
    """Each front worker's share of the front's CPU between two :func:`process_cpu` readings,
    largest first: how evenly the clients' connections spread over the workers (a worker serves the
    connections it accepted, for as long as they stay open)."""
    used = [
        after[pid][1] - before.get(pid, (role, 0.0))[1]
        for pid, (role, _) in after.items()
        if role == "front"
    ]
    total = sum(used)
    return sorted((u / total for u in used), reverse=True) if total > 0 and len(used) > 1 else []


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float) + "\n")
    tmp.replace(path)


def latest_section(
    results: dict, folder: Path, name: str, usable=bool
) -> tuple[dict | None, str | None]:
    """This run's section ``name`` (whatever it says), else the newest results file in ``folder``
    with a usable one (a run of other sections keeps showing the last figures), and the timestamp
    it is from."""
    sec = results.get("sections", {}).get(name)
    if sec:
        return sec, results.get("timestamp")
    for path in sorted(Path(folder).glob("*.json"), reverse=True):
        try:
            other = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        sec = other.get("sections", {}).get(name) if isinstance(other, dict) else None
        if sec and usable(sec):
            return sec, other.get("timestamp")
    return None, None

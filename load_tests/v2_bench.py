"""``make bench``'s V2 section: the Open Inference Protocol measured by Triton's own load generator.

``perf_analyzer`` (the binary inside ``tritonclient[http]==2.51.0``) drives, in the same run:

- dlzoo's V2 path: binary tensors to ``/v2/models/{m}/infer`` (pixels in [0, 1]; the rows join
  ``/classify``'s continuous batcher);
- the peer on the same protocol: Triton through PyTriton
  (``load_tests/baselines/pytriton_server.py``) serving the same ONNX graph with the service's
  ONNX Runtime settings, one instance per session the service runs side by side, a dynamic batcher
  of the same size;
- and, on the same dlzoo server, ``/classify`` (PNG uploads, through ``load_tests.loadgen``, as the
  serving section measures it), so the three stand side by side.

perf_analyzer reads ``GET /v2``, the model's metadata, its configuration and its statistics
before and after every measurement window, then sends binary ``/infer`` requests of batch 1 (random
data) from as many threads as the concurrency (synchronous mode). The servers take turns, every
round, so that a noisy neighbour hits all of them. The batch each server formed comes from its own
Triton statistics (inference over execution counts, read around each run), and the serving
efficiency divides the V2 throughput by what the same number of ONNX Runtime sessions do in
process at that batch size.

Everything Triton-side lives in a virtualenv of its own, ``.venv-pytriton`` (``make bench`` makes
it: nvidia-pytriton pins numpy<2): PyTriton, tritonclient 2.51.0 with its perf_analyzer, and the
CUDA runtime library perf_analyzer links against (no GPU is used). perf_analyzer also needs
Debian's ``libb64-0d``.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from load_tests import common

log = logging.getLogger("bench.v2")
logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per statistics read otherwise
TRITON_VENV = common.ROOT / ".venv-pytriton"
CONCURRENCIES = (1, 32)
DLZOO_V2 = "dlzoo V2 binary"
PYTRITON = "PyTriton (Triton 2.51)"
CLASSIFY = "dlzoo /classify"
TARGET_RATIO = 1.5  # dlzoo V2 at 32 clients over PyTriton's, and over /classify's
TARGET_EFFICIENCY = 0.5
BATCHES = (1, 2, 4, 8, 16, 32)  # the in-process curve, measured before and after the servers


# --------------------------------------------------------------------------------- perf_analyzer


@dataclass(frozen=True)
class Tools:
    """Where the Triton-side programs are: the peer's Python and perf_analyzer, and the library
    folder perf_analyzer needs on ``LD_LIBRARY_PATH``."""

    python: Path
    perf_analyzer: Path
    cuda_lib: Path | None

    @classmethod
    def find(cls, venv: Path = TRITON_VENV) -> Tools:
        libs = sorted(glob.glob(str(venv / "lib/python3*/site-packages/nvidia/cuda_runtime/lib")))
        return cls(
            venv / "bin" / "python",
            venv / "bin" / "perf_analyzer",
            Path(libs[-1]) if libs else None,
        )

    def problem(self) -> str | None:
        """Why the section cannot run here, or None."""
        for path in (self.python, self.perf_analyzer):
            if not path.exists():
                return f"{path} missing: `make bench` creates {TRITON_VENV.name}"
        if self.cuda_lib is None:
            return f"nvidia-cuda-runtime-cu12 missing from {TRITON_VENV.name}"
        try:
            out = subprocess.run(
                [str(self.perf_analyzer), "--version"],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=30,
            )
        except OSError as exc:
            return f"perf_analyzer does not start: {exc}"
        if out.returncode != 0:
            return (
                f"perf_analyzer does not start (libb64-0d installed?): {out.stderr.strip()[-300:]}"
            )
        return None

    def version(self) -> str:
        """``perf_analyzer --version`` (which sometimes prints nothing into a pipe), else the
        version of the tritonclient wheel it came in."""
        out = subprocess.run(
            [str(self.perf_analyzer), "--version"], env=self.env(), capture_output=True, text=True
        )
        if out.stdout.strip():
            return out.stdout.strip()
        wheels = sorted(self.python.parent.parent.glob("lib/python3*/site-packages/tritonclient-*"))
        found = wheels[-1].name.split("-")[1].removesuffix(".dist") if wheels else "?"
        return f"perf_analyzer of tritonclient {found}"

    def env(self) -> dict[str, str]:
        paths = [str(self.cuda_lib)] if self.cuda_lib else []
        if os.environ.get("LD_LIBRARY_PATH"):
            paths.append(os.environ["LD_LIBRARY_PATH"])
        return {**os.environ, "LD_LIBRARY_PATH": ":".join(paths)}


def perf_analyzer_cmd(
    binary: Path | str,
    url: str,
    model: str,
    concurrency: int,
    window_ms: int,
    csv_path: Path | str,
    stability: int = 25,
    headers: dict[str, str] | None = None,
) -> list[str]:
    """One perf_analyzer run: HTTP, batch 1, binary tensors, ``concurrency`` synchronous clients,
    measurement windows of ``window_ms`` until three in a row agree within ``stability`` percent
    (throughput and average latency), the last three averaged into ``csv_path``."""
    cmd = [
        str(binary),
        "-m",
        model,
        "-u",
        url.removeprefix("http://"),
        "-i",
        "http",
        "-b",
        "1",
        "--concurrency-range",
        str(concurrency),
        "--measurement-interval",
        str(window_ms),
        "--stability-percentage",
        str(stability),
        "--max-trials",
        "8",
        "-f",
        str(csv_path),
    ]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}:{value}"]
    return cmd


def parse_csv(text: str) -> list[dict]:
    """perf_analyzer's ``-f`` CSV (latencies in microseconds) -> rows in req/s and milliseconds."""
    rows = []
    for rec in csv.DictReader(io.StringIO(text)):
        ms = lambda key, rec=rec: float(rec[key]) / 1e3 if rec.get(key) else None  # noqa: E731
        rows.append(
            {
                "concurrency": int(rec["Concurrency"]),
                "throughput": float(rec["Inferences/Second"]),
                "p50_ms": ms("p50 latency"),
                "p90_ms": ms("p90 latency"),
                "p95_ms": ms("p95 latency"),
                "p99_ms": ms("p99 latency"),
                "server_queue_ms": ms("Server Queue"),
                "server_compute_ms": sum(
                    ms(k) or 0.0
                    for k in (
                        "Server Compute Input",
                        "Server Compute Infer",
                        "Server Compute Output",
                    )
                ),
            }
        )
    return rows


def run_perf_analyzer(
    tools: Tools,
    url: str,
    model: str,
    concurrency: int,
    window_ms: int,
    headers: dict[str, str] | None = None,
) -> dict:
    """One measurement: perf_analyzer's row, and the batch the server formed meanwhile (from its
    own statistics). An unstable one (a noisy machine) is measured again accepting any three
    windows, and marked ``stable: False``."""
    import httpx

    def counts() -> tuple[int, int]:
        body = httpx.get(f"{url}/v2/models/{model}/stats", headers=headers, timeout=30).json()
        (s,) = [s for s in body["model_stats"] if s["name"] == model]
        return int(s["inference_count"]), int(s["execution_count"])

    with tempfile.TemporaryDirectory(prefix="dlzoo-pa-") as tmp:
        path = Path(tmp) / "pa.csv"
        before = counts()
        for stability in (25, 100):
            cmd = perf_analyzer_cmd(
                tools.perf_analyzer, url, model, concurrency, window_ms, path, stability, headers
            )
            out = subprocess.run(
                cmd,
                env=tools.env(),
                capture_output=True,
                text=True,
                timeout=60 + 12 * window_ms / 1e3,
            )
            if out.returncode == 0 and path.is_file():
                break
            log.warning(
                "perf_analyzer %s c=%d (stability %d%%): %s",
                model,
                concurrency,
                stability,
                (out.stdout + out.stderr).strip()[-300:],
            )
        else:
            raise RuntimeError(f"perf_analyzer failed: {(out.stdout + out.stderr).strip()[-500:]}")
        after = counts()
        (row,) = [r for r in parse_csv(path.read_text()) if r["concurrency"] == concurrency]
    inferences, executions = after[0] - before[0], after[1] - before[1]
    row["stable"] = stability != 100
    row["inferences"] = inferences
    row["executions"] = executions
    row["mean_batch"] = inferences / executions if executions > 0 else None
    return row


def cpu_per_request(before: dict, after: dict, requests: int) -> dict[str, float]:
    """Server CPU milliseconds per request between two :func:`common.tree_cpu` readings, in total
    and by role (our front and Inference processes; the peer's are all ``other``)."""
    used = {k: after[k] - before.get(k, 0.0) for k in after}
    out = {k: 1e3 * v / max(1, requests) for k, v in used.items() if v > 0}
    out["total"] = 1e3 * sum(used.values()) / max(1, requests)
    return out


# ------------------------------------------------------------------------------------ the peer


class PyTritonServer(common.Server):
    """``load_tests/baselines/pytriton_server.py`` in its own virtualenv; stopped by SIGINT (with
    SIGTERM, Triton's processes outlive PyTriton's)."""

    def stop(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        super().stop()


def pytriton(
    tools: Tools, models: Path, names: list[str], instances: int, max_batch: int, threads: int
) -> tuple[PyTritonServer, dict[str, str]]:
    """The peer server, and the header its restricted endpoints (statistics) want."""
    token = secrets.token_urlsafe(24)
    server = PyTritonServer(
        "pytriton",
        [
            str(tools.python),
            "-m",
            "load_tests.baselines.pytriton_server",
            "--port",
            "{port}",
            "--models",
            str(models),
            "--names",
            ",".join(names),
            "--instances",
            str(instances),
            "--max-batch",
            str(max_batch),
            "--threads",
            str(threads),
            "--access-token",
            token,
        ],
        ready_path=f"/v2/models/{names[-1]}/ready",  # models load after the server is up
    )
    return server, {"triton-access-token": token}


def start_peer(peer: PyTritonServer, attempts: int = 3) -> str | None:
    """Start the peer; None, or why it did not start. PyTriton gives each model's backend 1 s to
    find its handshake socket, which a busy machine can miss: it is tried again."""
    error = None
    for attempt in range(attempts):
        try:
            peer.start()
            return None
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc)[-300:]}"
            log.warning("PyTriton did not start (attempt %d): %s", attempt + 1, error[:200])
    return error


def measure(tools, server, headers, target, name, conc, window_ms, classify) -> dict:
    """One row: perf_analyzer for the V2 targets, ``load_tests.loadgen`` for /classify (``classify``
    is its PNGs, warm-up and duration); an error is a row too."""
    from load_tests import serving as sv

    try:
        if target == CLASSIFY:
            pngs, warmup, duration = classify
            (got,) = sv.sweep(server, target, [name], pngs, (conc,), warmup, duration, True)
            got = {k: v for k, v in got.items() if k not in ("server", "model", "concurrency")}
        else:
            cpu0 = common.tree_cpu(server.proc.pid)
            got = run_perf_analyzer(tools, server.url, name, conc, window_ms, headers)
            cpu1 = common.tree_cpu(server.proc.pid)
            got["server_cpu_ms_per_request"] = cpu_per_request(cpu0, cpu1, got["inferences"])
            got.pop("concurrency", None)
    except Exception as exc:
        log.exception("%s %s c=%d", target, name, conc)
        return {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
    if "throughput" not in got:  # the sweep records a failed run as a row with its error
        return {"error": str(got.get("error", "no figures"))[-300:]}
    log.info(
        "%-22s %-9s c=%-3d %7.1f req/s  p50 %6.1f  p99 %6.1f ms  batch %s",
        target,
        name,
        conc,
        got["throughput"],
        got.get("p50_ms") or -1,
        got.get("p99_ms") or -1,
        round(got.get("mean_batch") or 0, 1) or "-",
    )
    return got


# ---------------------------------------------------------------------------------- the section


def v2_section(
    models: Path,
    names: list[str],
    window_ms: int,
    rounds: int,
    classify_warmup: float,
    classify_duration: float,
    curve_budget: float,
    progress=None,
) -> dict:
    """Every server at concurrency 1 and 32 for each model, ``rounds`` times in turn; the ORT
    curve of as many sessions as the service runs side by side, for the efficiency. ``progress``
    is called with the section after every measurement (the bench saves it)."""
    from load_tests import runtime_bench as rb
    from service.runtime import RuntimeConfig

    tools = Tools.find()
    problem = tools.problem()
    if problem:
        log.warning("V2 section skipped: %s", problem)
        return {"available": False, "reason": problem}
    settings, _ = common.ours_defaults()
    sessions = rb.serving_sessions()
    threads = RuntimeConfig.from_env().intra_op_threads
    section: dict = {
        "available": True,
        "perf_analyzer": tools.version(),
        "models": names,
        "concurrencies": list(CONCURRENCIES),
        "window_ms": window_ms,
        "rounds": rounds,
        "sessions": sessions,
        "note": (
            f"perf_analyzer: HTTP, binary tensors, batch 1, random FP32 data, synchronous clients; "
            f"windows of {window_ms} ms until three agree within 25% (else any three: "
            f"stable=false). PyTriton: {sessions} instance(s) per model, one ORT session each "
            f"({threads} intra-op thread(s), the service's options), dynamic batcher up to "
            f"{settings.max_batch} rows with no queue delay. /classify: PNG uploads through "
            "load_tests.loadgen (Python, aiohttp), as in the serving section. Every client shares "
            "the 2 cores with the server under test."
        ),
        "rows": [],
    }

    def curve() -> dict:
        return rb.batch_curve(models, names, curve_budget, batches=BATCHES, parallel=sessions)

    curves = [curve()]
    ours = common.ours(models)
    peer, token = pytriton(tools, models, names, sessions, settings.max_batch, threads)
    pngs = common.digit_pngs(64)
    with ours:
        section["peer_error"] = start_peer(peer)
        try:
            for n in range(rounds):
                for name in names:
                    for target in (DLZOO_V2, PYTRITON, CLASSIFY):
                        if target == PYTRITON and section["peer_error"]:
                            continue
                        server, headers = (peer, token) if target == PYTRITON else (ours, None)
                        for conc in CONCURRENCIES:
                            base = {"server": target, "model": name, "concurrency": conc}
                            row = measure(
                                tools,
                                server,
                                headers,
                                target,
                                name,
                                conc,
                                window_ms,
                                (pngs, classify_warmup, classify_duration),
                            )
                            section["rows"].append({**base, "round": n, **row})
                            if progress:
                                progress(section)
        finally:
            peer.stop()
    curves.append(curve())
    section["curves_measured"] = curves
    section["curve_parallel"] = best_curve(curves)
    section["summary"] = summarize(section)
    return section


# ------------------------------------------------------------------------------------- figures


def best_curve(curves: list[dict]) -> dict:
    """model -> {batch: items/s}, the best of each point over ``curves``: what the sessions can do
    is the most they did; a neighbour only ever takes some away."""
    out: dict = {}
    for c in curves:
        for model, points in c.items():
            for batch, rate in points.items():
                mine = out.setdefault(model, {})
                mine[batch] = max(mine.get(batch, 0.0), rate)
    return out


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarize(section: dict) -> list[dict]:
    """One row per server, model and concurrency: medians over the rounds, and for dlzoo V2 its
    ratios to the others (each ratio a median of same-round ratios) and its efficiency."""
    from load_tests.serving import interpolate_curve

    good = [r for r in section.get("rows", []) if "throughput" in r]
    keys = sorted(
        {(r["model"], r["concurrency"], r["server"]) for r in good},
        key=lambda k: (k[0], k[1], [DLZOO_V2, PYTRITON, CLASSIFY].index(k[2])),
    )
    out = []
    for model, conc, server in keys:
        mine = [
            r for r in good if (r["model"], r["concurrency"], r["server"]) == (model, conc, server)
        ]
        row = {"model": model, "concurrency": conc, "server": server, "rounds": len(mine)}
        for k in ("throughput", "p50_ms", "p99_ms", "mean_batch"):
            row[k] = _median([r.get(k) for r in mine])
        row["cpu_ms"] = _median(
            [(r.get("server_cpu_ms_per_request") or {}).get("total") for r in mine]
        )
        row["stable"] = all(r.get("stable", True) for r in mine)
        curve = section.get("curve_parallel", {}).get(model)
        if curve and row["mean_batch"]:
            ort = interpolate_curve(curve, row["mean_batch"])
            row["ort_items_per_s"] = ort
            row["efficiency"] = row["throughput"] / ort if ort else None
        if server == DLZOO_V2:
            for other, key in ((PYTRITON, "vs_pytriton"), (CLASSIFY, "vs_classify")):
                ratios = []
                for r in mine:
                    peer = next(
                        (
                            p
                            for p in good
                            if (p["model"], p["concurrency"], p["server"], p["round"])
                            == (model, conc, other, r["round"])
                        ),
                        None,
                    )
                    if peer and peer["throughput"]:
                        ratios.append(r["throughput"] / peer["throughput"])
                row[key] = _median(ratios)
        out.append(row)
    return out


def targets(section: dict) -> list[dict]:
    """The issue's targets, at 32 clients, per model: target, measured, met."""
    out = []
    for row in section.get("summary") or summarize(section):
        if row["server"] != DLZOO_V2 or row["concurrency"] != max(CONCURRENCIES):
            continue
        m = row["model"]
        for key, what in (("vs_pytriton", "PyTriton's"), ("vs_classify", "/classify's")):
            if row.get(key) is not None:
                out.append(
                    {
                        "target": f"{m}: V2 binary at 32 clients >= {TARGET_RATIO}x {what}",
                        "measured": f"{row[key]:.2f}x",
                        "met": row[key] >= TARGET_RATIO,
                    }
                )
        if row.get("efficiency") is not None:
            measured = (
                f"{row['efficiency']:.2f} ({row['throughput']:.0f} req/s over "
                f"{row['ort_items_per_s']:.0f}/s in process at batch {row['mean_batch']:.1f})"
            )
            met = row["efficiency"] >= TARGET_EFFICIENCY
            over = [  # a server above 1: the in-process figure was held down by other work
                r
                for r in section.get("summary") or summarize(section)
                if (r["model"], r["concurrency"]) == (m, row["concurrency"])
                and (r.get("efficiency") or 0) > 1
            ]
            if over:
                measured += (
                    f"; not judged: {over[0]['server']} served {over[0]['efficiency']:.2f}x that "
                    "figure, so the in-process measurement was held down by other work"
                )
                met = None
            out.append(
                {
                    "target": f"{m}: V2 serving efficiency >= {TARGET_EFFICIENCY}",
                    "measured": measured,
                    "met": met,
                }
            )
    return out


# -------------------------------------------------------------------------------------- report


def latest(results: dict, folder: Path) -> tuple[dict | None, str | None]:
    """This run's V2 section, else the newest one measured (common.latest_section)."""
    return common.latest_section(results, folder, "v2", lambda sec: sec.get("available"))


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def render(results: dict, folder: Path) -> list[str]:
    """BENCHMARKS.md's V2 section (markdown lines), or nothing when no run measured it."""
    sec, stamp = latest(results, folder)
    if sec is None:
        return []
    out = ["## Open Inference Protocol (V2): perf_analyzer, dlzoo against Triton (PyTriton)", ""]
    if not sec.get("available"):
        return out + [f"Not measured in this run: {sec.get('reason')}", ""]
    if stamp != results.get("timestamp"):
        out += [f"*From the run {stamp} (`--sections v2`), the newest that measured it.*", ""]
    out += [
        f"`{sec.get('perf_analyzer') or 'perf_analyzer'}` against dlzoo's "
        "`/v2/models/{m}/infer` and a Triton server "
        "(PyTriton) serving the same ONNX graph; `/classify` on the same dlzoo server beside them. "
        f"{sec['note']} Medians of {sec['rounds']} round(s) taken in turn; the ratios are medians "
        "of same-round ratios. Batch: rows per ONNX call the server formed (its own Triton "
        "statistics); server CPU: all its processes over the whole measurement, per request; "
        "efficiency: req/s over what "
        f"{sec['sessions']} ORT session(s) do at once in process at that batch (the best of a "
        "measurement before and one after the servers).",
        "",
        "| model | clients | server | req/s | p50 ms | p99 ms | batch | server CPU ms/req | "
        "efficiency | V2 / PyTriton | V2 / /classify |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sec.get("summary") or summarize(sec):
        ratio = lambda k, r=r: "–" if r.get(k) is None else f"{r[k]:.2f}x"  # noqa: E731
        eff = "–" if r.get("efficiency") is None else f"{r['efficiency']:.2f}"
        unstable = "" if r.get("stable", True) else " (unstable)"
        out.append(
            f"| {r['model']} | {r['concurrency']} | {r['server']} | {r['throughput']:,.0f}"
            f"{unstable} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | "
            f"{'–' if r.get('mean_batch') is None else format(r['mean_batch'], '.1f')} | "
            f"{'–' if r.get('cpu_ms') is None else format(r['cpu_ms'], '.2f')} | {eff} | "
            f"{ratio('vs_pytriton')} | {ratio('vs_classify')} |"
        )
    if sec.get("peer_error"):
        out.append(f"\n> PyTriton did not start: {sec['peer_error'][:300]}")
    errors = [r for r in sec.get("rows", []) if "error" in r]
    for r in errors[:5]:
        out.append(f"\n> {r['server']} {r['model']} c={r['concurrency']}: {r['error'][:200]}")
    out += ["", "| target | measured | met |", "|---|---|---|"]
    for t in targets(sec):
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        out.append(f"| {t['target']} | {t['measured']} | {met} |")
    return out + [""]


if __name__ == "__main__":
    sys.exit("run it as a section: python -m load_tests.bench --sections v2")

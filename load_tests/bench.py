"""``make bench``: every measurement of issue #7, one command, one results file, one report.

    python -m load_tests.bench            # the full run (~15-17 min on 2 cores; run it on a
                                          # quiet machine)
    python -m load_tests.bench --quick    # the same sections, short measurements (~3-4 min):
                                          # a smoke run

Writes ``load_tests/results/<UTC timestamp>.json`` (after every section, so a crash keeps what was
measured), the plots ``load_tests/results/<timestamp>-*.png``, and regenerates ``BENCHMARKS.md``
(``load_tests/report.py``; the hand-written findings come from ``load_tests/FINDINGS.md``).

Sections (``--sections``, default all): runtime (ORT vs PyTorch in process), ceiling (MatMul
GFLOP/s and ResNet-50's fraction of it), serving (closed-loop sweeps: ours with batching on and
off, the naive baseline, LitServe; the Poisson search; cold start; generation and quality through
HTTP on our server while it is up), v2 (the Open Inference Protocol under Triton's perf_analyzer:
ours against Triton through PyTriton, with /classify beside them; load_tests/v2_bench.py),
overload (Poisson arrivals at twice the capacity: admission control; load_tests/overload.py), fuzz
(schemathesis, every check, longer than make test's; load_tests/fuzz.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads anywhere

from load_tests import common

log = logging.getLogger("bench")
SECTIONS = ("runtime", "ceiling", "serving", "v2", "overload", "fuzz")
SERVED = ("lenet5", "resnet18")


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs."""

    runtime_budget: float  # seconds per graph and batch size (both engines)
    curve_budget: float  # seconds per served classifier for the ORT batch curve
    ceiling_budget: float
    concurrencies: tuple[int, ...]
    warmup: float
    duration: float
    poisson_fractions: tuple[float, ...]
    poisson_duration: float
    extra_cold_starts: int
    prime: float  # seconds at 8 clients per model right after a server starts, not counted
    wide_duration: float  # seconds measured per server for ResNet-18 at paper width (after priming)
    matmul_sizes: tuple[int, ...] = (1024, 2048, 4096)
    ceiling_passes: int = 2
    v2_window_ms: int = 5000  # perf_analyzer's measurement window
    v2_rounds: int = 2  # the V2 servers take turns this many times

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        if quick:
            return cls(
                runtime_budget=0.15,
                curve_budget=0.5,
                ceiling_budget=2.0,
                concurrencies=(1, 8, 32, 64),
                warmup=0.5,
                duration=1.5,
                poisson_fractions=(0.4, 0.7, 0.9),
                poisson_duration=2.5,
                extra_cold_starts=0,
                prime=1.5,
                wide_duration=2.5,
                matmul_sizes=(1024, 2048),
                ceiling_passes=1,
                v2_window_ms=1500,
                v2_rounds=1,
            )
        return cls(
            runtime_budget=2.0,
            curve_budget=4.0,
            ceiling_budget=20.0,
            concurrencies=(1, 8, 32, 64),
            warmup=3.0,
            duration=12.0,
            poisson_fractions=(0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            poisson_duration=10.0,
            extra_cold_starts=1,
            prime=4.0,
            wide_duration=12.0,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m load_tests.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick", action="store_true", help="short measurements, a smoke run (default: off)"
    )
    p.add_argument(
        "--models",
        type=Path,
        default=Path(os.environ.get("DLZOO_MODELS", common.ROOT / "models")),
        help="model repository (default $DLZOO_MODELS or models/)",
    )
    p.add_argument(
        "--runs",
        type=Path,
        default=common.ROOT / "runs",
        help="training runs with the checkpoints (default runs/)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=common.RESULTS,
        help="results folder (default load_tests/results)",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default all)",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=common.ROOT / "BENCHMARKS.md",
        help="the report to regenerate (default BENCHMARKS.md)",
    )
    p.add_argument("--no-report", action="store_true", help="write the JSON only (default: off)")
    args = p.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        p.error(f"--sections: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(SECTIONS)}")
    return args


def serving(results: dict, args: argparse.Namespace, plan: Plan, save) -> None:
    from load_tests import generation, quality
    from load_tests import serving as sv

    zoo = common.zoo_cards(args.models)
    names = [n for n in SERVED if n in zoo]
    pngs = common.digit_pngs(64)
    sec = results["sections"]
    sweep_rows: list[dict] = sec.setdefault("serving", {}).setdefault("rows", [])
    cold: list[dict] = sec.setdefault("cold_start", {"starts": [], "models": sorted(zoo)})["starts"]
    primes: list[dict] = sec["serving"].setdefault("priming", [])
    sec["serving"].update(
        load_generator="load_tests.loadgen: its own process, aiohttp+uvloop, closed loop; "
        "it shares the 2 cores with the server under test",
        warmup_s=plan.warmup,
        duration_s=plan.duration,
        models=names,
        images="64 scikit-learn digits (8x8) enlarged to 32x32 PNG",
        ours=ours_description(),
    )

    def measure(server: common.Server, label: str, metrics: bool, also=None) -> None:
        try:
            server.start()
        except Exception as exc:
            log.exception("%s did not start", label)
            sweep_rows.append({"server": label, "error": f"did not start: {exc}"})
            return
        try:
            if server.name == "dlzoo":
                cold.append({"label": label, "seconds": server.ready_seconds})
            primes.extend(prime(server, label, names, pngs, plan.prime))
            sweep_rows.extend(
                sv.sweep(
                    server,
                    label,
                    names,
                    pngs,
                    plan.concurrencies,
                    plan.warmup,
                    plan.duration,
                    metrics,
                )
            )
            save()
            if also:
                also(server)
        finally:
            server.stop()
        save()

    def extras(server: common.Server) -> None:
        lenet = [
            r
            for r in sweep_rows
            if r.get("server") == "dlzoo batching on"
            and r.get("model") == "lenet5"
            and "throughput" in r
        ]
        if lenet:
            capacity = max(r["throughput"] for r in lenet)
            try:
                sec["poisson"] = sv.poisson_search(
                    server,
                    "lenet5",
                    pngs,
                    capacity,
                    plan.poisson_fractions,
                    1.0,
                    plan.poisson_duration,
                )
            except Exception as exc:
                log.exception("poisson")
                sec["poisson"] = {"error": str(exc)}
            save()
        try:
            sec["generation"] = generation.generation_section(server.url, quick=args.quick)
        except Exception as exc:
            log.exception("generation")
            sec["generation"] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
        save()
        sec["quality"] = quality.quality_section(server.url, args.quick, args.models)

    measure(common.ours(args.models), "dlzoo batching on", True, extras)
    measure(common.ours(args.models, {"DLZOO_MAX_BATCH": "1"}), "dlzoo batching off", True)
    measure(common.naive(args.models, args.runs, names), "naive FastAPI+PyTorch", False)
    measure(
        common.litserve(args.models, names, max_batch=64, batch_timeout=0.005),
        "LitServe+ORT",
        False,
    )
    sec["serving_wide"] = wide_resnet(args, plan, pngs)
    save()
    for i in range(plan.extra_cold_starts):
        server = common.ours(args.models)
        try:
            server.start()
            cold.append({"label": f"extra start {i + 1}", "seconds": server.ready_seconds})
        finally:
            server.stop()


def prime(server: common.Server, label: str, names: list[str], pngs, seconds: float) -> list[dict]:
    """A few seconds at 8 clients per model before measuring, recorded but not counted: the first
    calls after a start warm each worker's sessions and connections, and every server gets the
    same treatment."""
    from load_tests import serving as sv

    rows = sv.sweep(server, label, names, pngs, (8,), 0.0, seconds, False) if seconds > 0 else []
    return [
        {k: r.get(k) for k in ("server", "model", "throughput", "p50_ms", "p99_ms", "errors")}
        for r in rows
    ]


def ours_description() -> str:
    """How our server runs with its defaults on this machine (service/settings.py decides)."""
    st, front = common.ours_defaults()
    workers = f"{st.front_workers} front worker{'s' if st.front_workers > 1 else ''}"
    where = (
        "each front worker runs the classifier sessions itself (DLZOO_CLASSIFY_IN=auto on a CPU)"
        if front
        else f"classification in {st.inference_workers} inference worker(s)"
    )
    return f"{workers}, {where}"


def wide_resnet(args: argparse.Namespace, plan: Plan, pngs) -> dict:
    """The same comparison at concurrency 32 with ResNet-18 at its paper width (width 1.0 instead of
    the quick profile's 0.25; 32x32 digits): ~16x the FLOPs per image, so the per-request cost of
    HTTP weighs less. Weights from a one-batch dry run (speed does not depend on them), exported and
    carded by the real pipeline into a temporary model repository."""
    import tempfile

    from load_tests import runtime_bench as rb
    from training import pipeline

    tmp = Path(tempfile.mkdtemp(prefix="dlzoo-wide-"))
    try:
        try:
            pipeline.train(
                "resnet18",
                profile="dry-run",
                model_args={"width": 1.0},
                models_root=tmp / "models",
                runs_root=tmp / "runs",
                progress=False,
            )
        except Exception as exc:
            log.exception("wide resnet18 export")
            return {"error": f"{type(exc).__name__}: {exc}"}
        parallel = rb.serving_sessions()
        return {
            "curve": rb.batch_curve(tmp / "models", ["resnet18"], plan.curve_budget)["resnet18"],
            "sessions": parallel,
            "curve_parallel": (
                rb.batch_curve(tmp / "models", ["resnet18"], plan.curve_budget, parallel=parallel)[
                    "resnet18"
                ]
                if parallel > 1
                else None
            ),
            "rows": _wide_rows(tmp, plan, pngs),
            "note": "resnet18 width 1.0 (paper width) on 32x32 digits, one-batch dry-run weights, "
            "exported by training.pipeline; concurrency 32",
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ~250 MB of graph and checkpoints


def _wide_rows(tmp: Path, plan: Plan, pngs) -> list[dict]:
    from load_tests import serving as sv

    rows: list[dict] = []
    for server, label, metrics in (
        (common.ours(tmp / "models"), "dlzoo batching on", True),
        (common.ours(tmp / "models", {"DLZOO_MAX_BATCH": "1"}), "dlzoo batching off", True),
        (common.naive(tmp / "models", tmp / "runs", ["resnet18"]), "naive FastAPI+PyTorch", False),
        (
            common.litserve(tmp / "models", ["resnet18"], max_batch=64, batch_timeout=0.005),
            "LitServe+ORT",
            False,
        ),
    ):
        try:
            with server:
                prime(
                    server, label, ["resnet18"], pngs, max(plan.prime, 2.0)
                )  # ~13 ms per image: longer
                rows += sv.sweep(
                    server,
                    label,
                    ["resnet18"],
                    pngs,
                    (32,),
                    max(plan.warmup, 1.0),
                    plan.wide_duration,
                    metrics,
                )
        except Exception as exc:
            log.exception("wide %s", label)
            rows.append({"server": label, "error": str(exc)[-300:]})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    plan = Plan.for_run(args.quick)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"{stamp}.json"
    if not common.zoo_cards(args.models):
        log.error("%s has no models: run `make models` first", args.models)
        return 2
    results = {
        "timestamp": stamp,
        "quick": args.quick,
        "machine": common.machine(),
        "plan": plan.__dict__,
        "models_dir": str(args.models),
        "sections": {},
    }
    t0 = time.perf_counter()

    def save() -> None:
        results["elapsed_s"] = time.perf_counter() - t0
        common.write_json(path, results)

    save()
    chosen = args.sections.split(",")
    sections = results["sections"]

    def run(name: str, fn) -> None:
        """One section; a failure is recorded in the results and the run goes on."""
        try:
            out = fn()
            if out is not None:
                sections[name] = out
        except Exception as exc:
            log.exception("section %s failed", name)
            sections.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        save()

    from load_tests import runtime_bench as rb  # torch: after OMP_WAIT_POLICY is set

    if "runtime" in chosen:
        run("runtime", lambda: rb.runtime_section(args.models, args.runs, plan.runtime_budget))
    if "serving" in chosen:
        run("batch_curve", lambda: rb.batch_curve(args.models, list(SERVED), plan.curve_budget))
        parallel = rb.serving_sessions()
        if parallel > 1:
            run(
                "batch_curve_parallel",
                lambda: {
                    "sessions": parallel,
                    "curves": rb.batch_curve(
                        args.models, list(SERVED), plan.curve_budget, parallel=parallel
                    ),
                },
            )
    if "ceiling" in chosen:
        run(
            "ceiling",
            lambda: rb.ceiling_section(
                plan.ceiling_budget, plan.matmul_sizes, passes=plan.ceiling_passes
            ),
        )
    if "serving" in chosen:
        run("serving", lambda: serving(results, args, plan, save))
    if "v2" in chosen:
        from load_tests import v2_bench

        def v2_progress(section: dict) -> None:
            sections["v2"] = section
            save()

        run(
            "v2",
            lambda: v2_bench.v2_section(
                args.models,
                [n for n in SERVED if n in common.zoo_cards(args.models)],
                plan.v2_window_ms,
                plan.v2_rounds,
                plan.warmup,
                plan.duration,
                plan.curve_budget,
                v2_progress,
            ),
        )
    if "overload" in chosen:
        from load_tests import overload

        run("overload", lambda: overload.section(args.models, args.quick))
    if "fuzz" in chosen:
        from load_tests import fuzz

        run("fuzz", lambda: fuzz.section(args.models, 50 if args.quick else 200))
    results["machine"]["load_average_end"] = os.getloadavg()
    save()
    log.info("results: %s (%.0f s)", path, results["elapsed_s"])
    if not args.no_report:
        from load_tests import report

        report.write(path, args.report)
        log.info("report: %s", args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

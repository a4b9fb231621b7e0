"""Render ``BENCHMARKS.md`` and the plots from one results file.

    python -m load_tests.report load_tests/results/<timestamp>.json   # -> BENCHMARKS.md +
                                                                      # <timestamp>-serving.png

The report is regenerated on every run; what people write by hand (findings, changes with their
before/after rows) lives in ``load_tests/FINDINGS.md`` and is included as it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from load_tests import common, fuzz, overload, v2_bench
from load_tests.common import ROOT
from load_tests.soak import section as locust_soak_section

FINDINGS = ROOT / "load_tests" / "FINDINGS.md"
CNNS = ("lenet5", "alexnet", "vgg16", "resnet18")  # the zoo's convolutional classifiers
SERVERS = (
    "dlzoo batching on",
    "dlzoo batching off",
    "dlzoo max batch 2",
    "naive FastAPI+PyTorch",
    "LitServe+ORT",
)


def _f(x, digits: int = 1, suffix: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}{suffix}"
    return f"{x}{suffix}"


def _cpu(by_role: dict | None, shares: list[float] | None = None) -> str:
    """Server CPU per request: the total, our front/inference split, and how the front's CPU was
    shared by its workers (an uneven split: the clients' connections landed unevenly)."""
    if not by_role:
        return "–"
    parts = [f"{by_role[k]:.1f} {k}" for k in ("front", "inference") if k in by_role]
    if shares and parts:
        parts[0] += " [" + "/".join(f"{100 * x:.0f}" for x in shares) + "%]"
    return f"{by_role['total']:.1f}" + (f" ({', '.join(parts)})" if parts else "")


def ort_curve(r: dict, model: str) -> tuple[dict | None, int]:
    """The in-process ORT curve to judge serving efficiency by: as many sessions at once as the
    service runs side by side (one per front worker when the front classifies), and that number."""
    par = r["sections"].get("batch_curve_parallel") or {}
    if par.get("curves", {}).get(model):
        return par["curves"][model], int(par["sessions"])
    return r["sections"].get("batch_curve", {}).get(model), 1


def machine_line(r: dict) -> str:
    m = r["machine"]
    load = "/".join(f"{x:.1f}" for x in m.get("load_average", []))
    end = "/".join(f"{x:.1f}" for x in m.get("load_average_end", []))
    return (
        f"*Machine: {m['cores']} cores ({m['cpu']}), onnxruntime-gpu {m['onnxruntime']} on "
        f"{m['ort_provider_used']} (built with: {', '.join(m['ort_available_providers'])}), "
        f"torch {m['torch']}, "
        f"bentoml {m['bentoml']}, litserve {m['litserve']}, Python {m['python']}; load average "
        f"{load} at start, {end or '?'} at end; {'quick smoke run' if r['quick'] else 'full run'} "
        f"{r['timestamp']}.*"
    )


def _row(model: str, server: str, conc: int, rows: list[dict]) -> dict | None:
    return next(
        (
            x
            for x in rows
            if x.get("model") == model
            and x.get("server") == server
            and x.get("concurrency") == conc
            and "throughput" in x
        ),
        None,
    )


def best_ours(rows: list[dict], model: str, conc: int) -> dict | None:
    """Our best configuration (batching on or off) at this point, by throughput."""
    ours = [
        x
        for x in rows
        if x.get("server", "").startswith("dlzoo")
        and x.get("model") == model
        and x.get("concurrency") == conc
        and "throughput" in x
    ]
    return max(ours, key=lambda x: x["throughput"]) if ours else None


def efficiency(r: dict, model: str, conc: int, server: str = "dlzoo batching on") -> dict | None:
    """HTTP images/s over in-process ORT images/s at the batch size the server formed."""
    from load_tests.serving import interpolate_curve

    row = _row(model, server, conc, r["sections"].get("serving", {}).get("rows", []))
    curve, sessions = ort_curve(r, model)
    if not row or not curve or not row.get("mean_batch"):
        return None
    ort = interpolate_curve(curve, row["mean_batch"])
    return {
        "http": row["throughput"],
        "batch": row["mean_batch"],
        "ort": ort,
        "sessions": sessions,
        "efficiency": row["throughput"] / ort if ort else None,
    }


def targets(r: dict) -> list[dict]:
    """target, measured, met (None: not measured)."""
    s = r["sections"]
    out = []
    rt = [x for x in s.get("runtime", {}).get("rows", []) if "speedup" in x and x["batch"] == 1]
    cnn = [x for x in rt if x["model"] in CNNS]
    if cnn:
        worst = min(cnn, key=lambda x: x["speedup"])
        out.append(
            {
                "target": "ORT >= 1.5x PyTorch at batch 1, every CNN",
                "measured": ", ".join(f"{x['model']} {x['speedup']:.2f}x" for x in cnn),
                "met": worst["speedup"] >= 1.5,
            }
        )
    lstm = [x for x in rt if x["model"] == "lstm" and x["role"] == "step"]
    if lstm:
        out.append(
            {
                "target": "ORT >= 3x PyTorch for the LSTM step (batch 1)",
                "measured": f"{lstm[0]['speedup']:.2f}x",
                "met": lstm[0]["speedup"] >= 3,
            }
        )
    c = s.get("ceiling")
    if c:
        out.append(
            {
                "target": "ResNet-50 (224, batch 32) >= 70% of MatMul GFLOP/s",
                "measured": (
                    f"{c['resnet50']['gflops']:.1f} / {c['matmul']['gflops']:.1f} GFLOP/s = "
                    f"{100 * c['fraction']:.0f}%"
                ),
                "met": c["fraction"] >= 0.7,
            }
        )
    rows = s.get("serving", {}).get("rows", [])
    ours = best_ours(rows, "resnet18", 32)  # the better of our two batching settings, named
    for other, goal, label in (
        ("naive FastAPI+PyTorch", 3.0, "the naive baseline"),
        ("LitServe+ORT", 1.0, "LitServe"),
    ):
        theirs = _row("resnet18", other, 32, rows)
        if ours and theirs and theirs["throughput"]:
            ratio = ours["throughput"] / theirs["throughput"]
            out.append(
                {
                    "target": f"resnet18, concurrency 32: >= {goal:g}x {label}'s throughput",
                    "measured": (
                        f"{ours['throughput']:.0f} ({ours['server']}) / "
                        f"{theirs['throughput']:.0f} req/s = {ratio:.2f}x"
                    ),
                    "met": ratio >= goal,
                }
            )
    eff = efficiency(r, "resnet18", 32, ours["server"]) if ours else None
    if eff and eff["efficiency"] is not None:
        out.append(
            {
                "target": "serving efficiency >= 0.6 (resnet18, concurrency 32)",
                "measured": (
                    f"{eff['http']:.0f} req/s ({ours['server']}) over ORT {eff['ort']:.0f} img/s "
                    f"at batch {eff['batch']:.1f} = {eff['efficiency']:.2f}"
                ),
                "met": eff["efficiency"] >= 0.6,
            }
        )
    p = s.get("poisson")
    if p and "runs" in p:
        out.append(
            {
                "target": "open loop: highest lenet5 rate with p99 <= 100 ms (no numeric target)",
                "measured": f"{_f(p['highest_rate_meeting_slo'], 0)} req/s",
                "met": None,
            }
        )
    g = s.get("generation")
    if g is not None:
        out.append(
            {
                "target": ">= 4x tokens/s with 16 concurrent streams over one",
                "measured": (
                    f"{g['aggregate_tokens_per_s']:.0f} / "
                    f"{g['one_stream_tokens_per_s']:.0f} tok/s = {g['ratio']:.1f}x"
                    if g.get("available") and g.get("ratio")
                    else "not available: " + str(g.get("reason", ""))[:80]
                ),
                "met": g.get("meets_target") if g.get("available") else None,
            }
        )
    q = s.get("quality", {})
    for model in ("vae", "gan"):
        x = q.get(f"{model}_samples")
        if x:
            out.append(
                {
                    "target": (
                        f"{model}: 200 samples, lenet5 mean top probability >= 0.8, 10 digits"
                    ),
                    "measured": (
                        f"{x['mean_top_probability']:.3f}, {x['digits_covered']} digits"
                        if x.get("available")
                        else "not available"
                    ),
                    "met": x.get("meets_target") if x.get("available") else None,
                }
            )
        x = q.get(f"{model}_interpolation")
        if x:
            out.append(
                {
                    "target": f"{model}: interpolation neighbours closer than endpoints",
                    "measured": (
                        f"{x['pairs_smooth']}/{x['pairs']} pairs "
                        f"(mean step {x['mean_neighbour_mad']:.3f}"
                        f" vs endpoints {x['mean_endpoint_mad']:.3f})"
                        if x.get("available")
                        else "not available"
                    ),
                    "met": x.get("meets_target") if x.get("available") else None,
                }
            )
    d = q.get("dates")
    if d:
        out.append(
            {
                "target": "every date format normalized >= 99% through /translate",
                "measured": (
                    f"worst format {100 * d['worst_format_accuracy']:.1f}%, overall "
                    f"{100 * d['overall']:.2f}%"
                    if d.get("available")
                    else "not available: " + str(d.get("reason", ""))[:80]
                ),
                "met": d.get("meets_target") if d.get("available") else None,
            }
        )
    return out


def plot(r: dict, path: Path) -> Path | None:
    rows = [x for x in r["sections"].get("serving", {}).get("rows", []) if "throughput" in x]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({x["model"] for x in rows}, key=lambda m: (m != "lenet5", m))
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for server in SERVERS:
            pts = sorted(
                (x["concurrency"], x["throughput"], x["p99_ms"])
                for x in rows
                if x["model"] == model and x["server"] == server
            )
            if not pts:
                continue
            conc = [p[0] for p in pts]
            axes[i][0].plot(conc, [p[1] for p in pts], marker="o", label=server)
            axes[i][1].plot(conc, [p[2] for p in pts], marker="o", label=server)
        axes[i][0].set(
            title=f"{model}: throughput",
            xlabel="concurrent clients",
            ylabel="requests/s",
            xscale="log",
        )
        axes[i][1].set(
            title=f"{model}: p99 latency",
            xlabel="concurrent clients",
            ylabel="ms",
            xscale="log",
            yscale="log",
        )
        for ax in axes[i]:
            ax.set_xticks([c for c in sorted({x["concurrency"] for x in rows})])
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.grid(True, alpha=0.3)
        axes[i][0].legend(fontsize=8)
    fig.suptitle(
        f"/classify, closed loop, load generator on the same 2 cores ({r['timestamp']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render(r: dict, results_path: Path, plot_path: Path | None, report_path: Path) -> str:
    s = r["sections"]
    ml = machine_line(r)

    def rel(p):
        return Path(p).resolve().relative_to(report_path.resolve().parent).as_posix()

    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` "
        f"(`python -m load_tests.bench{' --quick' if r['quick'] else ''}`) from "
        f"[`{rel(results_path)}`]({rel(results_path)}) in {r.get('elapsed_s', 0) / 60:.1f} min; "
        "regenerated on every run, so edit `load_tests/FINDINGS.md`, not this file. These machines "
        "are shared and noisy: every figure is a median, and every ratio compares two numbers "
        "taken in the same run.",
        "",
    ]
    if r["quick"]:
        out += [
            "> **Quick smoke run**: measurements of a second or two each, for checking that "
            "everything runs; the figures are indicative only. `make bench` without `QUICK=1` "
            "gives the real ones.",
            "",
        ]
    out += ["## Targets", "", ml, "", "| target | measured | met |", "|---|---|---|"]
    for t in targets(r):
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        out.append(f"| {t['target']} | {t['measured']} | {met} |")
    out.append("")
    for name, error in s.get("errors", {}).items():
        out += [f"> Section `{name}` failed in this run: {error[:300]}", ""]
    if FINDINGS.is_file():
        out += [FINDINGS.read_text().strip(), ""]

    rt = s.get("runtime")
    if rt:
        out += [
            "## 1. Runtime in process: ONNX Runtime against PyTorch eager",
            "",
            ml,
            "",
            f"{rt['note']}. ORT threads per session: {rt['threads']} (the service's "
            f"`DLZOO_INTRA_OP_THREADS` default), PyTorch the same.",
            "",
            "| model | graph | batch | ORT ms | PyTorch ms | ORT items/s | PyTorch items/s "
            "| ORT / PyTorch |",
            "|---|---|---|---|---|---|---|---|",
        ]
        sources = set()
        for x in rt["rows"]:
            if "error" in x:
                out.append(f"| {x['model']} | {x['role']} | – | error: {x['error'][:80]} | | | | |")
                continue
            sources.add(f"{x['model']}: {x['weights'].replace(str(ROOT) + '/', '')}")
            out.append(
                f"| {x['model']} | {x['role']} | {x['batch']} | {x['ort_ms']:.3f} | "
                f"{x['torch_ms']:.3f} | {x['ort_items_per_s']:,.0f} | "
                f"{x['torch_items_per_s']:,.0f} | {x['speedup']:.2f}x |"
            )
        out += ["", "Weights: " + "; ".join(sorted(sources)) + ".", ""]

    c = s.get("ceiling")
    if c:
        rn = c["resnet50"]
        out += [
            "## 2. Compute ceiling",
            "",
            ml,
            "",
            c["note"] + ".",
            "",
            "| measurement | value |",
            "|---|---|",
            *[
                f"| MatMul {m['n']}x{m['n']} float32 | "
                f"{m.get('best_s', m['median_s']) * 1e3:.1f} ms, "
                f"{m['gflops']:.1f} GFLOP/s (median {_f(m.get('gflops_median'))}; {m['reps']} runs)"
                f"{' (**the ceiling**: the best)' if m['n'] == c['matmul']['n'] else ''} |"
                for m in c.get("matmuls", [c["matmul"]])
            ],
            f"| ResNet-50 graph FLOPs at batch {rn['batch']} | {rn['graph_gflop']:.1f} GFLOP "
            f"({rn['gflop_per_image']:.2f} per image; Conv {rn['graph_gflop_by_op']['Conv']:.1f}, "
            f"Gemm {rn['graph_gflop_by_op']['Gemm']:.2f}) |",
            f"| ResNet-50 batch {rn['batch']} through ORT | "
            f"{rn.get('best_s', rn['median_s']):.2f} s, "
            f"{rn['images_per_s']:.1f} img/s, **{rn['gflops']:.1f} GFLOP/s** "
            f"(median {_f(rn.get('gflops_median'))}; "
            f"{rn['reps']} runs) |",
            f"| fraction of the MatMul ceiling | **{100 * c['fraction']:.0f}%** (of medians: "
            f"{_f(100 * c['fraction_of_medians'] if 'fraction_of_medians' in c else None, 0, '%')}"
            ") |",
            "",
        ]

    sv = s.get("serving")
    if sv:
        out += [
            "## 3. Serving `/classify`",
            "",
            ml,
            "",
            f"Closed loop, {sv['warmup_s']:g} s warm-up then {sv['duration_s']:g} s measured per "
            f"point, after {r['plan'].get('prime', 0):g} s of priming per model at 8 clients when "
            "a server starts (listed under 'Priming'); "
            f"{sv['load_generator']}. Images: {sv['images']}. Servers: ours (`bentoml serve`, "
            f"whole zoo, {sv.get('ours', 'one front and one inference worker')}, ORT 1 "
            "thread/session) with batching on "
            "(`DLZOO_MAX_BATCH=64`, continuous batching since `22e413f`, BentoML's adaptive "
            "batching before) and off (`DLZOO_MAX_BATCH=1`); the naive baseline "
            "(`load_tests/baselines/naive_server.py`: FastAPI, PyTorch eager, one request at a "
            "time); LitServe (`load_tests/baselines/litserve_server.py`: the same ONNX graphs "
            "through `service.runtime`, the same preprocessing, `max_batch_size=64`, "
            "`batch_timeout=5 ms`). "
            "'batch' is the mean number of items per ONNX call in the window (`dlzoo_batch_size` "
            "from `/metrics`). 'Server CPU ms/request' is the user+system CPU time of all the "
            "server's processes during the point (warm-up included) over the requests sent, for "
            "ours split into the front (HTTP, multipart, preprocessing) and the inference service; "
            "with 2 cores, 2000 / that figure is the most requests per second the server could "
            "answer.",
            "",
        ]
        if sv.get("batching_off_note"):
            out += [f"Batching off: {sv['batching_off_note']}.", ""]
        if plot_path:
            out += [f"![throughput and p99 against concurrency]({rel(plot_path)})", ""]
        for model in sv.get("models", []):
            out += [
                f"### {model}",
                "",
                "| server | clients | req/s | p50 ms | p95 ms | p99 ms | errors | batch | "
                "ORT ms/call | server CPU ms/request | load generator CPU |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for x in sv["rows"]:
                if x.get("model") != model:
                    continue
                if "throughput" not in x:
                    out.append(
                        f"| {x['server']} | {x.get('concurrency', '–')} | "
                        f"error: {x.get('error', '')[:80]} "
                        "| | | | | | | | |"
                    )
                    continue
                out.append(
                    f"| {x['server']} | {x['concurrency']} | {x['throughput']:,.0f} | "
                    f"{_f(x['p50_ms'])} | {_f(x['p95_ms'])} | {_f(x['p99_ms'])} | {x['errors']} | "
                    f"{_f(x.get('mean_batch'))} | {_f(x.get('ort_ms_per_call'), 2)} | "
                    f"{_cpu(x.get('server_cpu_ms_per_request'), x.get('front_worker_cpu_shares'))}"
                    " | "
                    f"{_f(100 * x.get('client_cpu_share', 0), 0, '%')} |"
                )
            out.append("")
        for x in sv["rows"]:
            if "throughput" not in x and "model" not in x:
                out += [f"{x['server']}: {x.get('error', '').strip().splitlines()[-1][:300]}", ""]
        if sv.get("priming"):
            out += [
                "Priming, right after each server started (8 clients, not counted above): "
                + "; ".join(
                    f"{x['server']} {x['model']} {x['throughput']:,.0f} req/s, "
                    f"p99 {_f(x['p99_ms'])} ms"
                    for x in sv["priming"]
                    if x.get("throughput") is not None
                )
                + ".",
                "",
            ]
        par = s.get("batch_curve_parallel") or {}
        n_par = int(par.get("sessions", 1))
        out += [
            "### Serving efficiency",
            "",
            "HTTP images/s of ours over in-process ORT images/s at the batch size the "
            "server formed (ORT batch curve measured in this run, sessions as the service opens "
            "them"
            + (
                f", {n_par} at once: one per front worker, as the service runs them on a CPU"
                if n_par > 1
                else ""
            )
            + ").",
            "",
            "| model | clients | HTTP req/s | formed batch | ORT img/s at that batch "
            "| efficiency |",
            "|---|---|---|---|---|---|",
        ]
        for server in [x for x in SERVERS if x.startswith("dlzoo")]:
            for model in sv.get("models", []):
                for conc in (1, 8, 32, 64):
                    e = efficiency(r, model, conc, server)
                    if e:
                        out.append(
                            f"| {model} ({server}) | {conc} | {e['http']:,.0f} | "
                            f"{e['batch']:.1f} | {_f(e['ort'], 0)} | {_f(e['efficiency'], 3)} |"
                        )
        curve = s.get("batch_curve", {})
        if curve:
            bs = sorted({int(b) for c_ in curve.values() for b in c_})
            out += [
                "",
                "ORT in process, images/s by batch size (1 thread, as served):",
                "",
                "| model | " + " | ".join(str(b) for b in bs) + " |",
                "|---|" + "---|" * len(bs),
            ]
            for model, c_ in curve.items():
                out.append(
                    f"| {model} | "
                    + " | ".join(f"{c_.get(str(b), c_.get(b, 0)):,.0f}" for b in bs)
                    + " |"
                )
            for model, c_ in (par.get("curves") or {}).items():
                out.append(
                    f"| {model}, {n_par} sessions at once | "
                    + " | ".join(f"{c_.get(str(b), c_.get(b, 0)):,.0f}" for b in bs)
                    + " |"
                )
        out.append("")
    w = s.get("serving_wide")
    if w and w.get("rows"):
        from load_tests.serving import interpolate_curve

        out += [
            "### The same at ResNet-18's paper width",
            "",
            f"{w['note']}. ORT in process (1 thread): "
            + ", ".join(f"batch {b}: {v:,.0f} img/s" for b, v in w["curve"].items())
            + "."
            + (
                f" {w['sessions']} sessions at once (the efficiency's denominator): "
                + ", ".join(f"batch {b}: {v:,.0f} img/s" for b, v in w["curve_parallel"].items())
                + "."
                if w.get("curve_parallel")
                else ""
            ),
            "",
            "| server | req/s | p50 ms | p99 ms | errors | batch | server CPU ms/request "
            "| efficiency |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for x in w["rows"]:
            if "throughput" not in x:
                out.append(f"| {x['server']} | error: {x.get('error', '')[-80:]} | | | | | | |")
                continue
            wide_curve = w.get("curve_parallel") or w["curve"]
            eff = (
                (x["throughput"] / interpolate_curve(wide_curve, x["mean_batch"]))
                if x.get("mean_batch")
                else None
            )
            out.append(
                f"| {x['server']} | {x['throughput']:,.0f} | {_f(x['p50_ms'])} | "
                f"{_f(x['p99_ms'])} | {x['errors']} | {_f(x.get('mean_batch'))} | "
                f"{_cpu(x.get('server_cpu_ms_per_request'), x.get('front_worker_cpu_shares'))} | "
                f"{_f(eff, 2)} |"
            )
        out.append("")
    p = s.get("poisson")
    if p:
        out += [
            "### Open loop (Poisson arrivals), lenet5",
            "",
            ml,
            "",
            "Arrivals at rising fractions of the closed-loop capacity; latency counts from the "
            "scheduled send time (a server that falls behind is charged for the queue). Highest "
            "rate with p99 <= 100 ms and no errors: "
            f"**{_f(p.get('highest_rate_meeting_slo'), 0)} req/s**.",
            "",
            "| offered req/s | answered req/s | p50 ms | p99 ms | errors | client send lag p99 ms "
            "| p99 <= 100 ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in p.get("runs", []):
            out.append(
                f"| {x['rate']:,.0f} | {x['achieved']:,.0f} | {_f(x['p50_ms'])} | "
                f"{_f(x['p99_ms'])} | {x['errors']} | {_f(x['send_lag_p99_ms'])} | "
                f"{'yes' if x['meets_slo'] else 'no'} |"
            )
        out.append("")

    g = s.get("generation")
    out += ["## 4. Generation", "", ml, ""]
    if not g:
        out += ["Not measured in this run.", ""]
    elif not g.get("available"):
        out += [f"Not available: {g.get('reason')}", ""]
    else:
        one, many = g["single"], g["concurrent"]
        out += [
            f"`POST /generate_stream`, model `{g['model']}`, {g['max_new_tokens']} new tokens, "
            f"temperature {g['temperature']}, one seed per stream; the load generator reads the "
            "events in its own process.",
            "",
            "| measurement | one stream | " + f"{g['streams']} concurrent streams |",
            "|---|---|---|",
            f"| streams (ok) | {one['streams']} ({one['ok']}) | {many['streams']} ({many['ok']}) |",
            f"| tokens/s | {_f(g['one_stream_tokens_per_s'], 0)} (median per stream) | "
            f"{_f(g['aggregate_tokens_per_s'], 0)} (aggregate) |",
            f"| per-stream tokens/s (median) | {_f(one['per_stream_tokens_per_s_median'], 0)} | "
            f"{_f(many['per_stream_tokens_per_s_median'], 0)} |",
            "| time to first token p50 / p99 ms | "
            f"{_f(one['ttft_p50_ms'])} / {_f(one['ttft_p99_ms'])} | "
            f"{_f(many['ttft_p50_ms'])} / {_f(many['ttft_p99_ms'])} |",
            f"| aggregate over one stream | | **{_f(g['ratio'], 2)}x** "
            f"(target >= {g['target_ratio']:g}x) |",
            "",
        ]

    cs = s.get("cold_start")
    if cs and cs.get("starts"):
        secs = sorted(x["seconds"] for x in cs["starts"] if x.get("seconds"))
        out += [
            "## 5. Cold start",
            "",
            ml,
            "",
            f"Seconds from `bentoml serve` process start to `GET /readyz` = 200 with the whole zoo "
            f"({len(cs['models'])} models: {', '.join(cs['models'])}; every session opened, "
            "checked against its card and warmed up).",
            "",
            "| start | seconds |",
            "|---|---|",
        ]
        out += [f"| {x['label']} | {_f(x['seconds'], 2)} |" for x in cs["starts"]]
        if secs:
            out += [f"| **median** | **{secs[len(secs) // 2]:.2f}** |"]
        out.append("")

    q = s.get("quality")
    if q:
        out += ["## Quality through HTTP", "", ml, ""]
        rows = []
        for model in ("vae", "gan"):
            x = q.get(f"{model}_samples") or {}
            if x.get("available"):
                rows.append(
                    f"| {model} | 200 samples (`/sample`, 4 seeds x 50) classified by lenet5 "
                    "(`/classify`) | "
                    f"mean top probability {x['mean_top_probability']:.3f}, "
                    f"{x['digits_covered']} digits "
                    f"(counts {x['class_counts']}) | >= 0.8, 10 | "
                    f"{'yes' if x['meets_target'] else '**no**'} |"
                )
            else:
                rows.append(
                    f"| {model} | samples | not available: {x.get('reason', '')[:100]} | | |"
                )
            x = q.get(f"{model}_interpolation") or {}
            if x.get("available"):
                rows.append(
                    f"| {model} | `/interpolate` slerp, {x['steps']} steps, {x['pairs']} seed "
                    "pairs | mean "
                    f"abs. difference of neighbouring frames {x['mean_neighbour_mad']:.4f} "
                    f"(largest {x['max_neighbour_mad']:.4f}) vs "
                    f"endpoints {x['mean_endpoint_mad']:.4f}; {x['pairs_smooth']}/{x['pairs']} "
                    "pairs smooth, "
                    f"{x['pairs_max_step_below_endpoints']}/{x['pairs']} with every step below | "
                    "neighbours < "
                    f"endpoints | {'yes' if x['meets_target'] else '**no**'} |"
                )
            else:
                rows.append(
                    f"| {model} | interpolation | not available: {x.get('reason', '')[:100]} | | |"
                )
        out += ["| model | check | measured | target | met |", "|---|---|---|---|---|", *rows, ""]
        d = q.get("dates") or {}
        if d.get("available"):
            out += [
                f"Dates through `POST /translate` (`{d['model']}`, greedy, held-out calendar days "
                f"of `training.data.dates` seed {d['seed']}, {d['per_format']} per format): "
                f"overall {100 * d['overall']:.2f}%, "
                f"worst format {100 * d['worst_format_accuracy']:.1f}% "
                f"(target >= 99% each).",
                "",
                "| format | exact match |",
                "|---|---|",
            ]
            out += [f"| {f} | {100 * a:.1f}% |" for f, a in d["accuracy_by_format"].items()]
            if d["errors"]:
                out += [
                    "",
                    "First errors: "
                    + "; ".join(
                        f"`{e['source']}` -> `{e['output']}` (want `{e['target']}`)"
                        for e in d["errors"][:5]
                    ),
                ]
            out.append("")
        else:
            out += [
                f"Dates through `/translate`: not available ({d.get('reason', 'not measured')}).",
                "",
            ]

    out += v2_bench.render(r, Path(results_path).parent)
    folder = Path(results_path).parent
    out += overload.render(*common.latest_section(r, folder, "overload"))
    out += fuzz.render(common.latest_section(r, folder, "fuzz")[0])
    out += soak_section(Path(results_path).parent)
    out += locust_soak_section(Path(results_path).parent)
    out += [
        "## Reproduce",
        "",
        "```bash",
        "make bench                 # full run: ~15-17 min; results/<timestamp>.json, plots, "
        "this file",
        "make bench QUICK=1         # smoke run, ~3-4 min",
        "make load DURATION=60s     # locust, every endpoint, fails on any failure or 5xx",
        "python -m load_tests.report load_tests/results/<timestamp>.json   # re-render this file",
        "python -m load_tests.ab <rev-before> [<rev-after>]   # before/after row for a service "
        "change",
        "python -m load_tests.soak_repository --cycles 50   # the live repository under churn",
        "```",
        "",
    ]
    return "\n".join(out)


def soak_section(results: Path) -> list[str]:
    """The latest live-repository soak (``python -m load_tests.soak_repository``), if any."""
    runs = sorted(results.glob("*-soak-repository.json"))
    if not runs:
        return []
    r = json.loads(runs[-1].read_text())
    late = r.get("rss_ratio_second_half", {})
    rows = [
        f"| {k} | {r['rss_mb_after_first'][k]:.0f} | {r['rss_mb_after_last'][k]:.0f} | "
        f"{r['rss_ratio'][k]:.3f} | {late.get(k, float('nan')):.3f} |"
        for k in sorted(r["rss_ratio"])
    ]
    failures = sum(v for k, v in r["statuses"].items() if k != "200")
    return [
        "## Live model repository under churn",
        "",
        f"`python -m load_tests.soak_repository` ([{runs[-1].name}](load_tests/results/"
        f"{runs[-1].name})): {r['cycles']} cycles of publishing lenet5@2 by rename, waiting until "
        f"it answers, deleting it and waiting until lenet5@1 answers again, while {r['clients']} "
        f"closed-loop clients classified: {r['requests']} requests in {r['seconds']:.0f} s, "
        f"{failures} not 200. Resident memory of each server process after the first cycle and "
        f"after the last (target: within 10%; met: {'yes' if r['within_10_percent'] else 'no'}):",
        "",
        "| process | RSS after cycle 1 (MB) | after the last (MB) | ratio | second half |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def write(results_path: Path, report_path: Path) -> None:
    r = json.loads(Path(results_path).read_text())
    plot_path = plot(r, Path(results_path).with_name(f"{r['timestamp']}-serving.png"))
    Path(report_path).write_text(render(r, Path(results_path), plot_path, Path(report_path)))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("results", type=Path, help="a results file, load_tests/results/<timestamp>.json")
    p.add_argument(
        "--report", type=Path, default=ROOT / "BENCHMARKS.md", help="output (default BENCHMARKS.md)"
    )
    args = p.parse_args()
    write(args.results, args.report)


if __name__ == "__main__":
    main()

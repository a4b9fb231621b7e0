"""The benchmark and load-test tooling parses its arguments and its inputs; nothing here is
timed."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from load_tests import bench, load, report, serving, soak
from load_tests.loadgen import multipart, summarize

ROOT = Path(__file__).resolve().parents[1]


def test_bench_arguments_and_plans():
    args = bench.parse_args(["--quick", "--sections", "runtime,serving", "--no-report"])
    assert args.quick and args.sections == "runtime,serving" and args.no_report
    quick, full = bench.Plan.for_run(True), bench.Plan.for_run(False)
    assert quick.duration < full.duration and quick.concurrencies == full.concurrencies == (
        1,
        8,
        32,
        64,
    )
    with pytest.raises(SystemExit):
        bench.parse_args(["--sections", "runtime,nonsense"])


def test_load_arguments():
    args = load.parse_args(["--duration", "5s", "--users", "2"])
    assert (args.duration, args.users, args.host, args.strict) == ("5s", 2, None, False)


def test_multipart_body_and_summary():
    body, ctype = multipart({"model": "lenet5", "top_k": "3"}, b"\x89PNGdata")
    boundary = ctype.split("boundary=")[1]
    assert (
        body.count(boundary.encode()) == 4
        and b'name="image"; filename=' in body
        and b"\x89PNGdata" in body
    )
    # sent/answered times; only requests inside the window count
    out = summarize(
        [(0.5, 0.6, 200), (1.0, 1.01, 200), (1.1, 1.13, 503), (1.9, 2.5, 200)], 1.0, 2.0, 1.0
    )
    assert (out["requests"], out["ok"], out["errors"], out["statuses"]) == (
        2,
        1,
        1,
        {"200": 1, "503": 1},
    )


def test_metrics_deltas_give_the_formed_batch():
    def text(calls: int, items: int) -> str:
        return (
            f'dlzoo_batch_size_sum{{model="resnet18@1",provider="CPUExecutionProvider"}} {items}\n'
            'dlzoo_batch_size_count{model="resnet18@1",provider="CPUExecutionProvider"} '
            f"{calls}\n"
            f'dlzoo_batch_size_count{{model="lenet5@2",provider="CPUExecutionProvider"}} 99\n'
        )

    out = serving.formed_batches({"start": text(10, 10), "end": text(30, 170)}, "resnet18")
    assert out["onnx_calls"] == 20 and out["mean_batch"] == 8.0
    assert serving.interpolate_curve({"1": 100.0, "4": 400.0}, 2) == pytest.approx(250.0)


def test_report_renders_a_partial_result(tmp_path):
    results = {
        "timestamp": "20260101T000000Z",
        "quick": True,
        "elapsed_s": 60.0,
        "machine": {
            "cores": 2,
            "cpu": "cpu",
            "onnxruntime": "1",
            "ort_provider_used": "CPU",
            "ort_available_providers": ["CPU"],
            "torch": "2",
            "bentoml": "1",
            "litserve": "0",
            "python": "3",
            "load_average": [0.1, 0.1, 0.1],
        },
        "sections": {
            "generation": {"available": False, "reason": "HTTP 404"},
            "runtime": {
                "threads": 1,
                "note": "n",
                "rows": [
                    {
                        "model": "lenet5",
                        "role": "model",
                        "batch": 1,
                        "ort_ms": 0.1,
                        "torch_ms": 0.5,
                        "ort_items_per_s": 1e4,
                        "torch_items_per_s": 2e3,
                        "speedup": 5.0,
                        "weights": "checkpoint",
                    }
                ],
            },
        },
    }
    path = tmp_path / "r.json"
    path.write_text(__import__("json").dumps(results))
    text = report.render(results, path, None, tmp_path / "BENCHMARKS.md")
    assert "lenet5 5.00x" in text and "Not available: HTTP 404" in text


def test_front_worker_shares_and_efficiency_against_parallel_sessions():
    from load_tests import common

    before = {1: ("other", 5.0), 2: ("front", 1.0), 3: ("front", 2.0), 4: ("inference", 3.0)}
    after = {
        1: ("other", 6.0),
        2: ("front", 4.0),
        3: ("front", 3.0),
        4: ("inference", 3.5),
        5: ("front", 0.0),
    }
    assert common.front_shares(before, after) == pytest.approx([0.75, 0.25, 0.0])
    assert (
        common.front_shares({2: ("front", 1.0)}, {2: ("front", 2.0)}) == []
    )  # one worker: nothing to split
    r = {
        "sections": {
            "serving": {
                "rows": [
                    {
                        "server": "dlzoo batching on",
                        "model": "resnet18",
                        "concurrency": 32,
                        "throughput": 600.0,
                        "mean_batch": 4.0,
                    }
                ]
            },
            "batch_curve": {"resnet18": {"1": 1000.0, "4": 1200.0}},
        }
    }
    assert report.efficiency(r, "resnet18", 32)["efficiency"] == pytest.approx(0.5)
    r["sections"]["batch_curve_parallel"] = {
        "sessions": 2,
        "curves": {"resnet18": {"1": 1800.0, "4": 2000.0}},
    }
    e = report.efficiency(r, "resnet18", 32)
    assert e["efficiency"] == pytest.approx(0.3) and e["sessions"] == 2


def test_parallel_sessions_all_run(model_repo, tmp_path):
    """The efficiency's denominator with two sessions at once: both sessions really run, side by
    side."""
    import shutil

    from load_tests import runtime_bench as rb
    from service.card import load_card
    from service.runtime import RuntimeConfig, open_session

    folder = model_repo / "lenet5" / "1"
    card = load_card(folder / "card.json")
    sessions = [
        open_session(folder / "model.onnx", RuntimeConfig.from_env({"DLZOO_DEVICE": "cpu"}))[0]
        for _ in range(2)
    ]
    rate, calls = rb.parallel_rate(sessions, rb.example_inputs(card, "model", 4), 4, 0.3)
    assert (
        len(calls) == 2 and min(calls) > 0 and rate == pytest.approx(4 * sum(calls) / 0.3, rel=0.5)
    )
    shutil.copytree(
        folder, tmp_path / "lenet5" / "1"
    )  # the curve reads a repository: not the fixture's broken v2
    curve = rb.batch_curve(tmp_path, ["lenet5"], 0.2, batches=(1, 8), parallel=2)["lenet5"]
    assert set(curve) == {1, 8} and min(curve.values()) > 0


def test_flops_are_counted_from_the_graph():
    pytest.importorskip("torch")
    from load_tests.runtime_bench import count_flops, matmul_model

    assert count_flops(matmul_model(8), batch=1)["total"] == 2 * 8**3


@pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust is in the bench extra"
)
def test_locustfile_loads():
    out = subprocess.run(
        [str(Path(sys.executable).with_name("locust")), "-f", "load_tests/locustfile.py", "--list"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "ZooUser" in out.stdout, out.stderr[-2000:]


def test_load_check_reads_locust_csvs(tmp_path):
    header = "Type,Name,Request Count,Failure Count,Requests/s,99%\n"
    (tmp_path / "ok_stats.csv").write_text(
        header + "POST,/classify,10,0,5,20\n,Aggregated,10,0,5,20\n"
    )
    (tmp_path / "ok_failures.csv").write_text("Method,Name,Error,Occurrences\n")
    assert load.check(tmp_path / "ok")[0] == []
    (tmp_path / "bad_stats.csv").write_text(header + ",Aggregated,10,2,5,20\n")
    (tmp_path / "bad_failures.csv").write_text(
        "Method,Name,Error,Occurrences\nPOST,/translate,HTTP 503: overloaded,2\n"
    )
    problems, _ = load.check(tmp_path / "bad")
    assert problems[0] == "2 of 10 requests failed" and problems[1].startswith(
        "5xx: POST /translate"
    )


def test_soak_durations_and_the_default_warmup():
    assert [soak.seconds(d) for d in ("90", "45s", "30m", "1h30m")] == [90, 45, 1800, 5400]
    with pytest.raises(argparse.ArgumentTypeError):
        soak.seconds("half an hour")
    args = soak.parse_args(["--duration", "30m"])
    assert (args.duration_s, args.warmup_s) == (1800, 300)
    assert soak.parse_args(["--duration", "2m", "--warmup", "30s"]).warmup_s == 30
    with pytest.raises(SystemExit):
        soak.parse_args(["--duration", "1m", "--warmup", "2m"])


def _samples(series: dict[str, list[float]], every: float = 60.0) -> list[dict]:
    steps = max(len(v) for v in series.values())
    return [
        {"t": i * every, "rss_mb": {k: v[i] for k, v in series.items() if i < len(v)}}
        for i in range(steps)
    ]


def test_soak_memory_criterion_is_judged_from_the_value_after_the_warmup():
    samples = _samples(
        {
            "arbiter-1": [60, 60, 60, 60, 60, 60],
            # grows 30% during the warm-up (the first 2 samples), then stays within 10%
            "front-2": [100, 120, 130, 135, 140, 142],
            # keeps growing after it: a leak
            "inference-3": [200, 205, 210, 225, 235, 240],
        }
    )
    judged = soak.judge_memory(samples, warmup=120, tolerance=0.10)
    rows = judged["processes"]
    assert list(rows) == ["arbiter-1", "front-2", "inference-3"]
    assert rows["front-2"]["first"] == 100 and rows["front-2"]["warm"] == 130
    assert rows["front-2"]["last"] == 142 and rows["front-2"]["within"]
    assert rows["inference-3"]["max_ratio"] == round(240 / 210, 4)
    assert not rows["inference-3"]["within"]
    assert rows["arbiter-1"]["within"] and rows["arbiter-1"]["min_ratio"] == 1.0
    assert len(judged["problems"]) == 1 and judged["problems"][0].startswith("inference-3")


def test_soak_memory_criterion_fails_a_process_that_shrinks_or_is_replaced():
    samples = _samples(
        {
            "front-2": [100, 100, 100, 85, 100],  # 15% below its warm value once
            "front-3": [100, 100, 100],  # gone after 3 samples (a restarted worker ...)
            "front-4": [0, 0, 0, 100, 100],  # ... and its replacement, started after the warm-up
        }
    )
    samples[0]["rss_mb"].pop("front-4")
    samples[1]["rss_mb"].pop("front-4")
    samples[2]["rss_mb"].pop("front-4")
    judged = soak.judge_memory(samples, warmup=60, tolerance=0.10)
    problems = " | ".join(judged["problems"])
    assert not judged["processes"]["front-2"]["within"]
    assert "front-3: gone in 2 of 4 samples" in problems
    assert "front-4: not running at the end of the warm-up" in problems
    assert soak.judge_memory(samples[:1], warmup=60, tolerance=0.1)["problems"]


def test_soak_section_and_plot_from_a_results_file(tmp_path):
    pytest.importorskip("matplotlib")
    samples = _samples({"arbiter-1": [60, 60, 61], "inference-3": [200, 210, 212]})
    judged = soak.judge_memory(samples, warmup=60, tolerance=0.10)
    result = {
        "command": "make soak DURATION=3m USERS=16",
        "duration_s": 180,
        "warmup_s": 60,
        "tolerance": 0.10,
        "users": 16,
        "requests": 1234,
        "failures": 0,
        "rps": 6.9,
        "endpoints": [
            {"name": "/classify", "requests": 1000, "failures": 0, "p50_ms": 9.0, "p99_ms": None}
        ],
        "processes": judged["processes"],
        "samples": samples,
        "problems": judged["problems"],
        "passed": not judged["problems"],
    }
    (tmp_path / "20260101T000000Z-soak.json").write_text(json.dumps(result))
    assert soak.plot(result, tmp_path / "20260101T000000Z-soak.png").stat().st_size > 1000
    text = "\n".join(soak.section(tmp_path))
    assert "1,234 requests, 0 failures" in text and "passed" in text
    assert "| inference-3 | 200.0 | 210.0 | 212.0 | 1.000-1.010 |" in text
    assert "20260101T000000Z-soak.png" in text and "| /classify | 1,000 | 0 | 9 | - |" in text
    report_md = tmp_path / "BENCHMARKS.md"
    report_md.write_text("# Benchmarks\n\n## Other\n\nx\n\n## Reproduce\n\ny\n")
    soak.write_section(report_md, tmp_path)
    soak.write_section(report_md, tmp_path)  # replaces its own section, once
    written = report_md.read_text()
    assert written.count(soak.HEADING) == 1
    assert written.index("## Other") < written.index(soak.HEADING) < written.index("## Reproduce")

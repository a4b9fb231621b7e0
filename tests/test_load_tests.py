"""The benchmark and load-test tooling parses its arguments and its inputs; nothing here is
timed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from load_tests import bench, load, report, serving
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

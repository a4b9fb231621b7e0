"""The benchmark and load-test tooling parses its arguments and its inputs; nothing here is timed."""

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
    assert quick.duration < full.duration and quick.concurrencies == full.concurrencies == (1, 8, 32, 64)
    with pytest.raises(SystemExit):
        bench.parse_args(["--sections", "runtime,nonsense"])


def test_load_arguments():
    args = load.parse_args(["--duration", "5s", "--users", "2"])
    assert (args.duration, args.users, args.host, args.strict) == ("5s", 2, None, False)


def test_multipart_body_and_summary():
    body, ctype = multipart({"model": "lenet5", "top_k": "3"}, b"\x89PNGdata")
    boundary = ctype.split("boundary=")[1]
    assert body.count(boundary.encode()) == 4 and b'name="image"; filename=' in body and b"\x89PNGdata" in body
    # sent/answered times; only requests inside the window count
    out = summarize([(0.5, 0.6, 200), (1.0, 1.01, 200), (1.1, 1.13, 503), (1.9, 2.5, 200)], 1.0, 2.0, 1.0)
    assert (out["requests"], out["ok"], out["errors"], out["statuses"]) == (2, 1, 1, {"200": 1, "503": 1})


def test_metrics_deltas_give_the_formed_batch():
    def text(calls: int, items: int) -> str:
        return (f'dlzoo_batch_size_sum{{model="resnet18@1",provider="CPUExecutionProvider"}} {items}\n'
                f'dlzoo_batch_size_count{{model="resnet18@1",provider="CPUExecutionProvider"}} {calls}\n'
                f'dlzoo_batch_size_count{{model="lenet5@2",provider="CPUExecutionProvider"}} 99\n')

    out = serving.formed_batches({"start": text(10, 10), "end": text(30, 170)}, "resnet18")
    assert out["onnx_calls"] == 20 and out["mean_batch"] == 8.0
    assert serving.interpolate_curve({"1": 100.0, "4": 400.0}, 2) == pytest.approx(250.0)


def test_report_renders_a_partial_result(tmp_path):
    results = {"timestamp": "20260101T000000Z", "quick": True, "elapsed_s": 60.0,
               "machine": {"cores": 2, "cpu": "cpu", "onnxruntime": "1", "ort_provider_used": "CPU",
                           "ort_available_providers": ["CPU"], "torch": "2", "bentoml": "1", "litserve": "0",
                           "python": "3", "load_average": [0.1, 0.1, 0.1]},
               "sections": {"generation": {"available": False, "reason": "HTTP 404"},
                            "runtime": {"threads": 1, "note": "n", "rows": [
                                {"model": "lenet5", "role": "model", "batch": 1, "ort_ms": 0.1, "torch_ms": 0.5,
                                 "ort_items_per_s": 1e4, "torch_items_per_s": 2e3, "speedup": 5.0,
                                 "weights": "checkpoint"}]}}}
    path = tmp_path / "r.json"
    path.write_text(__import__("json").dumps(results))
    text = report.render(results, path, None, tmp_path / "BENCHMARKS.md")
    assert "lenet5 5.00x" in text and "Not available: HTTP 404" in text


def test_flops_are_counted_from_the_graph():
    pytest.importorskip("torch")
    from load_tests.runtime_bench import count_flops, matmul_model

    assert count_flops(matmul_model(8), batch=1)["total"] == 2 * 8**3


@pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is in the bench extra")
def test_locustfile_loads():
    out = subprocess.run([str(Path(sys.executable).with_name("locust")), "-f", "load_tests/locustfile.py", "--list"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "ZooUser" in out.stdout, out.stderr[-2000:]


def test_load_check_reads_locust_csvs(tmp_path):
    header = "Type,Name,Request Count,Failure Count,Requests/s,99%\n"
    (tmp_path / "ok_stats.csv").write_text(header + "POST,/classify,10,0,5,20\n,Aggregated,10,0,5,20\n")
    (tmp_path / "ok_failures.csv").write_text("Method,Name,Error,Occurrences\n")
    assert load.check(tmp_path / "ok")[0] == []
    (tmp_path / "bad_stats.csv").write_text(header + ",Aggregated,10,2,5,20\n")
    (tmp_path / "bad_failures.csv").write_text("Method,Name,Error,Occurrences\n"
                                               "POST,/translate,HTTP 503: overloaded,2\n")
    problems, _ = load.check(tmp_path / "bad")
    assert problems[0] == "2 of 10 requests failed" and problems[1].startswith("5xx: POST /translate")

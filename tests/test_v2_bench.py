"""The V2 benchmark's tooling (load_tests/v2_bench.py): perf_analyzer's command line and CSV, the
figures and the report section. Nothing here runs perf_analyzer or a server, nor needs the bench
extra."""

from __future__ import annotations

import json
from pathlib import Path

from load_tests import bench, v2_bench
from load_tests.baselines import pytriton_server

# What perf_analyzer 2.51 wrote with -f for two concurrencies (latencies in microseconds).
CSV = """\
Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,\
Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,\
p90 latency,p95 latency,p99 latency
1,133.809,69,4649,1494,0,1250,0,0,6977,12608,14728,18857
32,812.949,170,3966,6442,152,27890,634,0,39594,58916,64732,73242
"""


def test_perf_analyzer_csv_in_requests_per_second_and_milliseconds():
    one, many = v2_bench.parse_csv(CSV)
    assert one["concurrency"] == 1 and one["throughput"] == 133.809
    assert (one["p50_ms"], one["p99_ms"]) == (6.977, 18.857)
    assert many["server_queue_ms"] == 6.442
    assert abs(many["server_compute_ms"] - (0.152 + 27.890 + 0.634)) < 1e-9


def test_perf_analyzer_command_line():
    cmd = v2_bench.perf_analyzer_cmd(
        "/x/perf_analyzer",
        "http://127.0.0.1:3000",
        "resnet18",
        32,
        5000,
        "/tmp/out.csv",
        stability=25,
        headers={"triton-access-token": "tok"},
    )
    assert cmd[0] == "/x/perf_analyzer"
    flags = dict(zip(cmd[1::2], cmd[2::2]))
    assert flags["-m"] == "resnet18" and flags["-u"] == "127.0.0.1:3000"  # no scheme
    assert flags["-i"] == "http" and flags["-b"] == "1" and flags["--concurrency-range"] == "32"
    assert flags["--measurement-interval"] == "5000" and flags["--stability-percentage"] == "25"
    assert flags["-f"] == "/tmp/out.csv" and flags["-H"] == "triton-access-token:tok"


def test_missing_triton_venv_is_a_reason_not_a_crash(tmp_path):
    tools = v2_bench.Tools.find(tmp_path / "no-venv")
    assert tools.cuda_lib is None and "make bench" in tools.problem()


def test_bench_has_the_v2_section():
    assert "v2" in bench.SECTIONS
    assert bench.parse_args(["--sections", "v2"]).sections == "v2"
    quick, full = bench.Plan.for_run(True), bench.Plan.for_run(False)
    assert quick.v2_window_ms < full.v2_window_ms and full.v2_rounds >= 2


def test_peer_arguments():
    args = pytriton_server.parse_args(
        ["--port", "8003", "--models", "m", "--names", "a,b", "--access-token", "t"]
    )
    assert (args.port, args.instances, args.max_batch, args.threads) == (8003, 2, 64, 1)


def _section() -> dict:
    rows = []
    for rnd, (ours, peer, classify) in enumerate(((900, 600, 450), (700, 350, 500))):
        for server, rate, batch in (
            (v2_bench.DLZOO_V2, ours, 8.0),
            (v2_bench.PYTRITON, peer, 10.0),
            (v2_bench.CLASSIFY, classify, 3.0),
        ):
            rows.append(
                {
                    "server": server,
                    "model": "resnet18",
                    "concurrency": 32,
                    "round": rnd,
                    "throughput": float(rate),
                    "p50_ms": 30.0,
                    "p99_ms": 90.0,
                    "mean_batch": batch,
                    "server_cpu_ms_per_request": {"total": 2.5},
                }
            )
    rows.append(
        {
            "server": v2_bench.PYTRITON,
            "model": "resnet18",
            "concurrency": 1,
            "round": 0,
            "error": "RuntimeError: perf_analyzer failed",
        }  # fmt: skip
    )
    section = {
        "available": True,
        "perf_analyzer": "perf_analyzer 2.51",
        "note": "n.",
        "rounds": 2,
        "sessions": 2,
        "curve_parallel": {"resnet18": {1: 400.0, 8: 1600.0, 16: 2000.0}},
        "rows": rows,
    }
    section["summary"] = v2_bench.summarize(section)
    return section


def test_ratios_are_medians_of_same_round_ratios_and_efficiency_uses_the_formed_batch():
    summary = {r["server"]: r for r in _section()["summary"]}
    ours = summary[v2_bench.DLZOO_V2]
    assert ours["throughput"] == 800.0 and ours["mean_batch"] == 8.0
    assert abs(ours["vs_pytriton"] - (1.5 + 2.0) / 2) < 1e-9  # 900/600, 700/350
    assert abs(ours["vs_classify"] - (2.0 + 1.4) / 2) < 1e-9  # 900/450, 700/500
    assert ours["efficiency"] == 800.0 / 1600.0
    met = {t["target"]: t["met"] for t in v2_bench.targets(_section())}
    assert met == {
        "resnet18: V2 binary at 32 clients >= 1.5x PyTriton's": True,
        "resnet18: V2 binary at 32 clients >= 1.5x /classify's": True,
        "resnet18: V2 serving efficiency >= 0.5": True,
    }


def test_efficiency_is_not_judged_when_a_server_beats_the_in_process_figure():
    section = _section()
    section["curve_parallel"] = {"resnet18": {1: 100.0, 8: 400.0, 16: 500.0}}  # a busy machine
    section["summary"] = v2_bench.summarize(section)
    (eff,) = [t for t in v2_bench.targets(section) if "efficiency" in t["target"]]
    assert eff["met"] is None and "not judged: dlzoo V2 binary served 2.00x" in eff["measured"]


def test_the_in_process_curve_is_the_best_of_its_measurements():
    got = v2_bench.best_curve([{"m": {1: 100.0, 8: 900.0}}, {"m": {1: 150.0, 8: 600.0}}])
    assert got == {"m": {1: 150.0, 8: 900.0}}


def test_report_shows_this_run_or_the_newest_run_that_measured_v2(tmp_path):
    older = {"timestamp": "20260101T000000Z", "sections": {"v2": _section()}}
    (tmp_path / "20260101T000000Z.json").write_text(json.dumps(older))
    (tmp_path / "20260102T000000Z.json").write_text(json.dumps({"sections": {}}))
    now = {"timestamp": "20260103T000000Z", "sections": {}}
    text = "\n".join(v2_bench.render(now, tmp_path))
    assert "From the run 20260101T000000Z" in text
    assert (
        "| resnet18 | 32 | dlzoo V2 binary | 800 | 30.0 | 90.0 | 8.0 | 2.50 | 0.50 | 1.75x | "
        "1.70x |" in text
    )
    assert "perf_analyzer failed" in text and "| yes |" in text
    assert v2_bench.render(now, Path(tmp_path / "empty")) == []
    skipped = {"timestamp": "t", "sections": {"v2": {"available": False, "reason": "no venv"}}}
    assert "Not measured in this run: no venv" in "\n".join(v2_bench.render(skipped, tmp_path))

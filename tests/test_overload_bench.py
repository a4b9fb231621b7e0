"""The overload and fuzz sections' arithmetic (load_tests/overload.py, load_tests/fuzz.py), on
made-up records: the measurements themselves run in `make bench`."""

from __future__ import annotations

from load_tests import fuzz, overload


def test_phase_counts_by_send_time_and_splits_latencies_by_status():
    records = [
        [0.1, 10.0, 200],
        [0.5, 30.0, 200],
        [1.2, 5.0, 503],
        [1.5, 900.0, 200],
        [2.5, 1, 599],
    ]
    p = overload.phase(records, 1.0, 2.0)
    assert (p["ok"], p["refused"], p["other"]) == (1, 1, 0)
    assert p["accepted_p99_ms"] == 900.0 and p["refused_p99_ms"] == 5.0
    assert p["offered_per_s"] == 2.0 and p["goodput_per_s"] == 1.0
    assert overload.phase(records, 2.0, 3.0)["other"] == 1


def test_recovery_is_the_end_of_the_last_slow_or_refusing_second():
    normal = [[t / 10, 20.0, 200] for t in range(0, 50)]  # p99 20 ms
    after = [[5 + t / 10, 500.0 if t < 22 else 20.0, 200] for t in range(0, 60)]
    after.append([5.3, 3.0, 503])
    after += [[10.5, 3.0, 503]]  # one refusal in 11 requests: more than 1%
    records = normal + after
    assert overload.recovery_seconds(records, 5.0, 11.0, (0, 5)) == 6.0  # refusing until 11 s
    assert overload.recovery_seconds(records[:-1], 5.0, 11.0, (0, 5)) == 3.0  # slow until 7.2 s
    assert overload.recovery_seconds(normal, 0.0, 5.0, (0, 5)) == 0.0
    noisy = normal + [[2.5, 600.0, 200]]  # a normal second as slow as this is normal
    assert overload.recovery_seconds(noisy + after[:-2], 5.0, 11.0, (0, 5)) == 0.0


def test_render_says_which_targets_were_missed():
    p = overload.phase([[0.1, 10.0, 200]], 0, 1)
    r = {
        "model": "lenet5",
        "capacity_per_s": 100.0,
        "rates": {"normal": 50.0, "overload": 200.0},
        "normal": p,
        "overload": {**p, "seconds": 30.0, "goodput_per_s": 70.0},
        "recovery_s": 2.0,
        "max_queue": 128,
        "met": {
            "goodput": False,
            "accepted_p99_ms": True,
            "refused_p99_ms": True,
            "recovery_s": True,
        },
    }
    text = "\n".join(overload.render(r, "x.json"))
    assert "70 req/s (70% of capacity)" in text and "**missed**" in text
    assert overload.render(None, "x.json") == []


def test_fuzz_summary_reads_schemathesis_counts():
    ok = "=== SUMMARY ===\n  Selected: 14/14\n  Tested: 14\n...\n  1549 generated, 1549 passed\n"
    assert fuzz.summary(ok) == {"operations": 14, "cases": 1549, "failures": 0}
    bad = "=== SUMMARY ===\n  Tested: 13\n  247 generated, 13 found 13 unique failures\n"
    assert fuzz.summary(bad) == {"operations": 13, "cases": 247, "failures": 13}

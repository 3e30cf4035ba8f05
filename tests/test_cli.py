"""``python -m fastxent``: the self-check's exit code and a tiny ``bench`` run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastxent
from fastxent import _bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(*args):
    return subprocess.run([sys.executable, "-m", "fastxent", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_self_check_passes_with_exit_code_0():
    proc = run_module("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "self-check: PASS" in proc.stdout
    assert "FAIL" not in proc.stdout


def test_self_check_exit_code_1_on_a_wrong_result(monkeypatch, capsys):
    right = fastxent.softmax
    monkeypatch.setattr(fastxent, "softmax", lambda x, *a, **k: right(x, *a, **k) + 1e-3)
    assert _bench.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "self-check: FAIL" in out


def test_bench_tiny_run_prints_a_table(tmp_path):
    path = tmp_path / "bench.json"
    proc = run_module("bench", "--ops", "softmax", "--shapes", "64x10", "--dtypes", "float32",
                      "--threads", "1,2", "--repeat", "1", "--min-time", "0.001",
                      "--peers", "numpy", "--json", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== softmax" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("64x10")]
    assert len(rows) == 2, proc.stdout  # one per thread count
    payload = json.loads(path.read_text())
    results = payload["results"]
    assert {r["threads"] for r in results} == {1, 2}
    assert all(np.isfinite(r["times"]["fastxent"]) for r in results)
    # the 2-thread case also timed fastxent on 1 and 2 threads alone, for the scaling table
    for key in ("one_thread", "threads_alone"):
        by_threads = {r["threads"]: r[key] for r in results}
        assert np.isfinite(by_threads[2]) and by_threads[2] > 0 and np.isnan(by_threads[1])
    assert "== thread scaling" in proc.stdout
    # each thread count ran in a child pinned to that many CPUs (where Linux allows it)
    assert payload["meta"].get("pinned", False) == hasattr(os, "sched_setaffinity")


def _result(threads, fastxent, alone=(float("nan"), float("nan")), n=4096, c=1000,
            bound=1.0):
    return _bench.Result("softmax", n, c, "float32", threads, {"fastxent": fastxent}, bound,
                         "bound1", {}, *alone)


def test_bench_scaling_judges_the_ratio_measured_in_one_run():
    # across the two processes 2 threads look 2x faster, alone in one run only 1.5x: a miss
    lines = _bench.scaling_lines([_result(1, 4.0), _result(2, 2.0, alone=(3.0, 2.0))])
    row = next(line for line in lines if line.startswith("softmax"))
    assert row.split()[-4:] == ["1.50x", "2.00x", "3.00x", "MISS"], row
    lines = _bench.scaling_lines([_result(1, 3.0), _result(2, 2.0, alone=(3.6, 2.0))])
    row = next(line for line in lines if line.startswith("softmax"))
    assert row.split()[-3:] == ["1.80x", "1.50x", "3.60x"], row
    # small shapes are shown but not judged
    lines = _bench.scaling_lines([_result(2, 2.0, alone=(2.0, 2.0), n=64, c=10)])
    assert not lines[-1].endswith("MISS") and lines[-1].split()[-3:] == ["1.00x", "-", "2.00x"]


def test_bench_scaling_at_the_memory_bound():
    # one thread already near the 2-thread bound: 1.7x is out of reach ('max' 1.20x); a 2-thread
    # time within 80% of the bound is marked 'bound', a slower one still a miss
    lines = _bench.scaling_lines([_result(2, 1.1, alone=(1.2, 1.1))])
    assert lines[-1].split()[-2:] == ["1.20x", "bound"], lines[-1]
    lines = _bench.scaling_lines([_result(2, 1.4, alone=(1.2, 1.4))])
    assert lines[-1].split()[-2:] == ["1.20x", "MISS"], lines[-1]
    # 1.7x within reach ('max' 2.40x) but not met: a miss, however close to the bound
    lines = _bench.scaling_lines([_result(2, 0.6, alone=(1.2, 1.1), bound=0.5)])
    assert lines[-1].split()[-2:] == ["2.40x", "MISS"], lines[-1]


def test_bench_pins_a_child_to_its_thread_count():
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs CPU affinity and 2 CPUs")
    code = ("import os; from fastxent import _bench; _bench.pin_to_cpus(1); "
            "print(len(os.sched_getaffinity(0)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "1", proc.stderr


def test_bench_rejects_an_unknown_op():
    proc = run_module("bench", "--ops", "softmaks")
    assert proc.returncode == 2
    assert "softmaks" in proc.stderr

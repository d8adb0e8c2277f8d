"""bench.common: the command line every benchmark shares, where results go, and how they
name the high end of a sample."""
from pathlib import Path

import pytest

from bench.common import RESULTS, bench_parser, percentile, results_file, tail


def test_under_100_values_the_high_end_is_called_the_maximum():
    values = [float(v) for v in range(1, 100)]   # 99 values
    assert tail(values, "ms") == {"max_ms": 99.0}


def test_from_100_values_it_is_the_99th_percentile():
    values = list(range(1, 201))                # 200 values: the 99th percentile is not the maximum
    assert tail(values, "us") == {"p99_us": 199}
    assert percentile(values, 50) == 101


def test_no_values_no_claim():
    assert tail([], "ms") == {}


def test_the_shared_command_line_and_a_benchmarks_own_options():
    ap = bench_parser("demo_bench", "Demo benchmark.\n\nMore.", smoke="one trial", run_dir="/run/x", plot="a .png")
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args([])
    assert vars(args) == {"smoke": False, "out": None, "run_dir": "/run/x", "plot": False, "trials": 5}
    assert ap.description == "Demo benchmark."
    args = ap.parse_args(["--smoke", "--out", "/tmp/r.json", "--plot", "--trials", "2"])
    assert (args.smoke, args.out, args.plot, args.trials) == (True, "/tmp/r.json", True, 2)
    assert results_file(None, "demo_bench", smoke=True) == RESULTS / "demo_bench-smoke.json"
    assert results_file(args.out, "demo_bench", smoke=True) == Path("/tmp/r.json")


def test_only_the_options_a_benchmark_asks_for():
    ap = bench_parser("demo_bench", "Demo.", smoke="tiny", out="dir")
    assert vars(ap.parse_args([])) == {"smoke": False, "out": str(RESULTS)}   # no --run-dir, no --plot
    for option in ("--run-dir", "--plot"):
        with pytest.raises(SystemExit):
            ap.parse_args([option])

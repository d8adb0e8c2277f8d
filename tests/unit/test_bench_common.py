"""bench.common: how results name the high end of a sample."""
from bench.common import percentile, tail


def test_under_100_values_the_high_end_is_called_the_maximum():
    values = [float(v) for v in range(1, 100)]   # 99 values
    assert tail(values, "ms") == {"max_ms": 99.0}


def test_from_100_values_it_is_the_99th_percentile():
    values = list(range(1, 201))                # 200 values: the 99th percentile is not the maximum
    assert tail(values, "us") == {"p99_us": 199}
    assert percentile(values, 50) == 101


def test_no_values_no_claim():
    assert tail([], "ms") == {}

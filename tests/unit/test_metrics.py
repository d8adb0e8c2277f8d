"""ftcp.api.metrics: the families go out through prometheus_client under the names they are
written with, from a private registry, read afresh at each scrape."""
import re

import pytest
from prometheus_client import REGISTRY, generate_latest

from ftcp.api import metrics


def exposed(text: str) -> dict:
    """{name on the # TYPE line: type}, and every sample's name, from the exposition."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    return types, samples


def test_counters_keep_their_total_name_on_every_line():
    reg = metrics.registry(lambda: metrics.controller_families(2.5, {"failovers": {"failed-over": 3}}))
    text = metrics.render(reg)
    types, samples = exposed(text)
    assert types["ftcp_failovers_total"] == "counter" and types["ftcp_controller_uptime_seconds"] == "gauge"
    assert "# HELP ftcp_failovers_total Failovers and planned migrations, by outcome." in text
    assert 'ftcp_failovers_total{outcome="failed-over"} 3.0' in text.splitlines()
    assert samples == set(types), "a sample under another name than its family's"
    assert metrics.CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"   # what generate_latest writes


def test_a_counter_without_total_is_refused():
    with pytest.raises(ValueError, match="_total"):
        metrics.family("ftcp_failovers", "counter", "x", [])


def test_one_family_may_mix_label_sets():
    agents = [{"name": "b1", "status": "up", "age": 0.5, "stats": {"redis_errors": 4}}]
    text = metrics.render(metrics.registry(lambda: metrics.redis_families(False, 1, 2, agents)))
    lines = text.splitlines()
    assert "ftcp_redis_up 0.0" in lines
    assert 'ftcp_redis_errors_total{component="api"} 1.0' in lines
    assert 'ftcp_redis_errors_total{agent="b1",component="agent"} 4.0' in lines


def test_each_scrape_collects_again_into_a_private_registry():
    uptime = iter([1.0, 2.0])
    reg = metrics.registry(lambda: metrics.controller_families(next(uptime), {}))
    assert "ftcp_controller_uptime_seconds 1.0" in metrics.render(reg).splitlines()
    assert "ftcp_controller_uptime_seconds 2.0" in metrics.render(reg).splitlines()
    assert b"ftcp_" not in generate_latest(REGISTRY)

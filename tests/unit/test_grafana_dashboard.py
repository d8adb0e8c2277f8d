"""docs/grafana-dashboard.json graphs only what /metrics exposes: every metric name and
label in its queries is checked against a scrape of the real API (over the real Store
on fakeredis), so renaming a family or a label without the dashboard fails here. The
metrics table of docs/rest.md is held to the same scrape."""
import json
import pathlib
import re

import pytest

from ftcp.common import config
from ftcp.api import metrics
from ftcp.api.routes import Api, AppAdapter
from ftcp.api.validation import Request
from tests.support.fake_agent import SERVICE, FakeAgent, heartbeat
from tests.support.store import fake_store

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
DASHBOARD = DOCS / "grafana-dashboard.json"
NOW = 1_800_000_000.0
DATASOURCE = "${DS_PROMETHEUS}"
RATE_FUNCTIONS = ("rate", "irate", "increase")
# What an operator needs to see; the dashboard must keep a panel for each.
MUST_SHOW = {
    "ftcp_services", "ftcp_connections", "ftcp_connections_by_replica", "ftcp_failovers_total",
    "ftcp_failover_takeover_seconds", "ftcp_probes_total", "ftcp_held_fin_rst_total", "ftcp_released_fin_rst_total",
    "ftcp_agent_heartbeat_age_seconds", "ftcp_agent_kernel_drops_total", "ftcp_agent_bad_checksum_total",
    "ftcp_agent_out_of_window_total", "ftcp_agent_other_host_total", "ftcp_agent_divergent_bytes_total",
    "ftcp_redis_up", "ftcp_redis_errors_total",
}


class Adapter(AppAdapter):
    def __init__(self, conf):
        self.conf = conf

    def config(self):
        return self.conf

    def apply_service(self, service):
        raise NotImplementedError

    def remove_service(self, name):
        raise NotImplementedError

    def switches(self):
        return []

    def failover(self, name, backup):
        raise NotImplementedError

    def migrate(self, name):
        raise NotImplementedError

    def counters(self):
        return {"probes": {"alive": 1, "rst": 1, "timeout": 1, "held": 1, "released": 1},
                "failovers": {"failed-over": 1}, "last_takeover_seconds": 0.02}


@pytest.fixture(scope="module")
def exposed():
    """{metric name: (type, {label names of its samples})} from one scrape with a service,
    a protected and an unprotected connection, and an agent heartbeat carrying every counter."""
    store = fake_store()
    store.clock = lambda: NOW
    conf = config.parse({"services": [SERVICE]})
    store.save_service(conf.services[0], "protected", dpid="0000000000000001", flows=3, reason="")
    agent = FakeAgent(store)
    agent.connect("10.0.0.1", 40000, b"hello")
    agent.connect("10.0.0.2", 40001, b"late", with_syn=False)
    stats = {stat: 1 for _, _, stat, _ in metrics.AGENT_METRICS}
    agent.flush(NOW, heartbeat(NOW, redis_errors=0, **stats))
    status, text, _ = Api(store, Adapter(conf), None, clock=lambda: NOW).handle("metrics", Request("GET"))
    assert status == 200
    families = {name: (kind, set()) for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)}
    for name, labels in re.findall(r"^(\w+)(?:\{(.*)\})? \S+$", text, re.M):
        families[name][1].update(re.findall(r'(\w+)="', labels))
    return families


def dashboard():
    return json.loads(DASHBOARD.read_text())


def queries():
    """(where, expr, legend) for every panel target and every templating query."""
    board = dashboard()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"], target.get("legendFormat", "")
    for var in board["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        yield f"variable {var['name']!r}", query, ""


def used_labels(expr: str, legend: str) -> set:
    labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    for selector in re.findall(r"\{([^{}]*)\}", expr):
        labels.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector))
    for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels.update(re.findall(r"\w+", clause))
    labels.update(re.findall(r"label_values\(\s*\w+[^,]*,\s*(\w+)\s*\)", expr))
    return labels


def test_every_query_uses_only_exposed_metrics_and_labels(exposed):
    problems = []
    for where, expr, legend in queries():
        names = re.findall(r"\bftcp_\w+", expr)
        if not names:
            problems.append(f"{where}: no ftcp metric in {expr!r}")
        unknown = [n for n in names if n not in exposed]
        problems += [f"{where}: {n} is not exposed by /metrics" for n in unknown]
        known = set().union(*(exposed[n][1] for n in names if n in exposed))
        if not unknown:
            problems += [f"{where}: no metric in {expr!r} has the label {label!r}"
                         for label in sorted(used_labels(expr, legend) - known)]
    assert not problems, "\n".join(problems)


def test_counters_are_graphed_as_rates_and_gauges_as_they_are(exposed):
    problems = []
    for where, expr, _ in queries():
        for match in re.finditer(r"\bftcp_\w+", expr):
            name = match.group()
            if name not in exposed:
                continue   # the test above names it
            wrapped = re.search(rf"\b(?:{'|'.join(RATE_FUNCTIONS)})\(\s*$", expr[:match.start()]) is not None
            if (exposed[name][0] == "counter") != wrapped:
                problems.append(f"{where}: {name} is a {exposed[name][0]}, {'not ' if not wrapped else ''}"
                                f"inside {'/'.join(RATE_FUNCTIONS)}")
    assert not problems, "\n".join(problems)


def test_the_operators_families_have_panels():
    shown = {name for _, expr, _ in queries() for name in re.findall(r"\bftcp_\w+", expr)}
    assert MUST_SHOW <= shown, f"no panel for {sorted(MUST_SHOW - shown)}"


def test_every_query_goes_to_the_imported_datasource():
    board = dashboard()
    assert [i["name"] for i in board["__inputs"] if i["pluginId"] == "prometheus"] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert all(t["datasource"]["uid"] == DATASOURCE for t in panel["targets"]), panel["title"]
    assert all(v["datasource"]["uid"] == DATASOURCE for v in board["templating"]["list"])


def test_the_rest_docs_list_every_family_and_no_other(exposed):
    text = (DOCS / "rest.md").read_text()
    table = text[text.index("| metric | type |"):]
    table = table[:table.index("\n\n")]
    listed = {}
    for row in table.splitlines()[2:]:
        names, kind = row.split("|")[1:3]
        listed.update((name, kind.strip()) for name in re.findall(r"`(ftcp_\w+)`", names))
    assert listed == {name: kind for name, (kind, _) in exposed.items()}

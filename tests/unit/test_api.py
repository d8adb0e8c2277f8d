"""ftcp.api.routes: every resource, every refusal naming its field, nothing half-applied.

The Store is the real one over fakeredis; connection records are written by the real
tracker and LogWriter (tests/support/fake_agent.py); the app's adapter is a fake.
Long because every resource's refusals are here, each naming its field.
"""
import contextlib
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ftcp.common import config
from ftcp.api.routes import JSON, PROMETHEUS, Api, AppAdapter
from ftcp.api.validation import MAX_BODY, Request
from ftcp.api.metrics import reason_class
from tests.support.fake_agent import SERVICE, FakeAgent, conn_id, heartbeat
from tests.support.store import fake_store

TOKEN = "s3cret-token"
AUTH = f"Bearer {TOKEN}"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now


class FakeController(AppAdapter):
    def __init__(self, conf, store):
        self.conf, self.store = conf, store
        self.calls = []
        self.switch_list = [{"dpid": "0000000000000001", "address": "127.0.0.1:50000", "connected_since": NOW - 5}]
        self.broken = False

    def config(self):
        if self.broken:
            raise RuntimeError("a bug in the adapter")
        return self.conf

    def apply_service(self, service):
        self.calls.append(("apply", service.name))
        self.conf = config.with_service(self.conf, service)
        self.store.save_service(service, "configured")

    def remove_service(self, name):
        self.calls.append(("remove", name))
        self.conf = config.without_service(self.conf, name)
        self.store.delete_service(name)

    def switches(self):
        if self.broken:
            raise RuntimeError("a bug in the adapter")
        return self.switch_list

    def failover(self, name, backup):
        self.calls.append(("failover", name, backup))
        return {"service": name, "backup": backup, "epoch": 1}

    def migrate(self, name):
        self.calls.append(("migrate", name))
        return {"service": name, "backup": "b1", "epoch": 1}

    def redis_errors(self):
        return 7

    def counters(self):
        return {"probes": {"alive": 40, "rst": 1, "timeout": 2, "held": 3, "released": 2},
                "failovers": {"failed-over": 1}, "last_takeover_seconds": 0.042}


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(clock):
    store = fake_store()
    store.clock = clock
    return store


@pytest.fixture
def controller(store):
    conf = config.parse({"services": [SERVICE]})
    store.save_service(conf.services[0], "protected", dpid="0000000000000001", flows=3, reason="")
    return FakeController(conf, store)


@pytest.fixture
def api(store, controller, clock):
    return Api(store, controller, TOKEN, clock)


def call(api, route, method="GET", params=None, query=None, body=b"", auth=None):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    return api.handle(route, Request(method, params or {}, query or {}, body, auth))


def ok(result, status=200):
    assert result[0] == status, result
    return result[1]


def refused(result, status, field):
    code, body, ctype = result
    assert (code, ctype) == (status, JSON), result
    assert body["field"] == field, body
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


def other_service(**changes):
    svc = dict(SERVICE, name="db", port=5432)
    svc.update(changes)
    return svc


REDIS_READS = {"string": lambda r, k: r.get(k), "hash": lambda r, k: r.hgetall(k),
               "set": lambda r, k: sorted(r.smembers(k)), "zset": lambda r, k: r.zrange(k, 0, -1, withscores=True),
               "list": lambda r, k: r.lrange(k, 0, -1), "stream": lambda r, k: r.xrange(k)}


def redis_snapshot(store):
    """Every key in Redis with its type and whole value."""
    r = store.fake_redis
    return {k: (r.type(k), REDIS_READS[r.type(k)](r, k)) for k in r.keys("*")}


@contextlib.contextmanager
def changes_nothing(controller, store):
    """The block's call was refused and nothing of it was applied: the controller was
    asked nothing, its configuration is the same object, and Redis holds what it held."""
    calls, conf, redis = list(controller.calls), controller.conf, redis_snapshot(store)
    assert redis, "an empty Redis would make the comparison vacuous"
    yield
    assert controller.calls == calls
    assert controller.conf is conf
    assert redis_snapshot(store) == redis


# --- services ----------------------------------------------------------------------------


def test_list_and_get_service_with_status_from_redis_and_live_counts(api, store, clock):
    agent = FakeAgent(store)
    agent.connect("10.0.0.1", 40000, b"hello")
    agent.connect("10.0.0.2", 40001, b"x")
    agent.connect("10.0.0.3", 40002, b"late", with_syn=False)
    agent.flush(NOW, heartbeat(NOW))   # and its agent is up
    services = ok(call(api, "services"))["services"]
    assert [s["name"] for s in services] == ["web"]
    view = ok(call(api, "service", params={"name": "web"}))
    assert view == services[0]
    assert view["address"] == "10.0.0.10" and view["port"] == 7000
    assert view["primary"] == {"port": 3, "mac": "00:00:00:00:00:10"}
    assert view["backups"] == [{"name": "b1", "address": "10.0.0.20", "data_port": 4, "mirror_port": 5,
                                "mac": "00:00:00:00:00:20"}]
    assert (view["status"], view["reason"], view["epoch"], view["dpid"], view["flows"]) == \
        ("protected", "", 0, "0000000000000001", 3)
    assert view["updated"] == NOW
    assert view["connections"] == {"protected": 2, "unprotected": 1, "total": 3}


def test_unknown_service_is_404_naming_it(api):
    assert "nope" in refused(call(api, "service", params={"name": "nope"}), 404, "name")


def test_put_creates_then_replaces(api, controller, store):
    created = call(api, "service", "PUT", {"name": "db"}, body=other_service(), auth=AUTH)
    assert ok(created, 201)["status"] == "configured"
    assert created[1]["port"] == 5432 and created[1]["connections"]["total"] == 0
    assert controller.conf.service("db").port == 5432
    replaced = call(api, "service", "PUT", {"name": "db"}, body=other_service(port=5433), auth=AUTH)
    assert ok(replaced, 200)["port"] == 5433
    assert controller.calls == [("apply", "db"), ("apply", "db")]
    assert store.service_state("db")["svc_port"] == 5433


def test_put_name_may_be_omitted_from_the_body(api, controller):
    body = other_service()
    del body["name"]
    assert ok(call(api, "service", "PUT", {"name": "db"}, body=body, auth=AUTH), 201)["name"] == "db"


@pytest.mark.parametrize("body, field, words", [
    (b"{not json", "body", "malformed JSON"),
    (b"\xff\xfe\x00", "body", "malformed JSON"),
    (b"[" * 60000, "body", "malformed JSON"),  # deeper than Python recurses
    (b"", "body", "required"),
    (b"[1, 2]", "service", "must be a mapping"),
    (other_service(name="other"), "service.name", "must be the name in the path"),
    (other_service(name=5), "service.name", "letters, digits"),
    (other_service(prot=80), "service.prot", "unknown field"),
    (other_service(port=80000), "service.port", "TCP port"),
    (other_service(port="80"), "service.port", "TCP port"),
    (other_service(address="10.0.0.300"), "service.address", "IPv4"),
    (other_service(address="224.0.0.1"), "service.address", "unicast"),
    (other_service(primary={"port": 0, "mac": "00:00:00:00:00:10"}), "service.primary.port", "switch port"),
    (other_service(primary={"port": 3}), "service.primary.mac", "is required"),
    (other_service(primary={"port": 5, "mac": "00:00:00:00:00:10"},
                   backups=[dict(SERVICE["backups"][0], data_port=7, mirror_port=8)]), "service.primary.port",
     "switch port 5 is the backup mirror port of service 'web'"),
    (other_service(backups=[]), "service.backups", "non-empty list"),
    (other_service(backups=[dict(SERVICE["backups"][0], mirror_port=4)]), "service.backups[0].mirror_port",
     "must differ"),
    (other_service(port=7000), "service.port", "already protected by service 'web'"),
])
def test_put_bad_service_is_400_naming_the_field_and_changes_nothing(api, controller, store, body, field, words):
    with changes_nothing(controller, store):
        error = refused(call(api, "service", "PUT", {"name": "db"}, body=body, auth=AUTH), 400, field)
    assert words in error
    assert "services[" not in error   # an index into the controller's list means nothing to the caller


def test_put_bad_name_in_path(api, controller, store):
    with changes_nothing(controller, store):
        refused(call(api, "service", "PUT", {"name": "bad name"}, body=other_service(), auth=AUTH), 400, "name")


def test_put_over_size_limit(api, controller, store):
    with changes_nothing(controller, store):
        refused(call(api, "service", "PUT", {"name": "db"}, body=b" " * (MAX_BODY + 1), auth=AUTH), 413, "body")


def test_put_when_redis_fails_after_applying_says_so_in_the_view(api, controller, store):
    original = store.service_state

    def fail_after_apply(name):
        store.server.connected = False
        return original(name)
    store.service_state = fail_after_apply
    view = ok(call(api, "service", "PUT", {"name": "db"}, body=other_service(port=6000), auth=AUTH), 201)
    assert view["status"] == "unknown" and view["connections"] is None
    assert controller.conf.service("db").port == 6000


def test_delete(api, controller, store):
    assert call(api, "service", "DELETE", {"name": "web"}, auth=AUTH)[0] == 204
    assert controller.conf.services == () and store.service("web") is None
    assert "web" not in store.service_names()


def test_delete_unknown_is_404(api, controller, store):
    with changes_nothing(controller, store):
        refused(call(api, "service", "DELETE", {"name": "nope"}, auth=AUTH), 404, "name")


# --- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("route, method, params", [
    ("service", "PUT", {"name": "db"}), ("service", "DELETE", {"name": "web"}),
    ("failover", "POST", {"name": "web"}), ("migrate", "POST", {"name": "web"}),
])
@pytest.mark.parametrize("auth", [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x",
                                  TOKEN])
def test_mutating_calls_need_the_bearer_token(api, controller, store, route, method, params, auth):
    with changes_nothing(controller, store):
        error = refused(call(api, route, method, params, body=other_service(), auth=auth), 401, "Authorization")
    assert TOKEN not in error


def test_auth_is_checked_before_the_body(api, controller, store):
    with changes_nothing(controller, store):
        refused(call(api, "service", "PUT", {"name": "db"}, body=b"{bad", auth=None), 401, "Authorization")


def test_without_a_configured_token_mutating_calls_are_refused_with_how_to_set_one(store, controller, clock):
    for token in (None, ""):
        api = Api(store, controller, token, clock)
        assert not api.mutations_enabled
        with changes_nothing(controller, store):
            error = refused(call(api, "service", "PUT", {"name": "db"}, body=other_service(), auth="Bearer "),
                            403, "Authorization")
        assert "api_token" in error and "FTCP_API_TOKEN" in error
        assert call(api, "services")[0] == 200   # reads stay open


def test_token_may_be_padded_and_scheme_any_case(api):
    assert call(api, "service", "DELETE", {"name": "web"}, auth=f"  bearer   {TOKEN} ")[0] == 204


# --- actions --------------------------------------------------------------------------------


def test_actions_are_the_controller_s(api, controller):
    assert ok(call(api, "failover", "POST", {"name": "web"}, body={"backup": "b1"}, auth=AUTH)) == \
        {"service": "web", "backup": "b1", "epoch": 1}
    assert ok(call(api, "migrate", "POST", {"name": "web"}, auth=AUTH)) == \
        {"service": "web", "backup": "b1", "epoch": 1}
    assert ok(call(api, "migrate", "POST", {"name": "web"}, body={}, auth=AUTH))["epoch"] == 1
    assert controller.calls == [("failover", "web", "b1"), ("migrate", "web"), ("migrate", "web")]


@pytest.mark.parametrize("body, field", [
    (b"", "body"), (b"[]", "body"), ({}, "backup"), ({"backup": 1}, "backup"), ({"backup": "b9"}, "backup"),
    ({"backup": "b1", "force": "yes"}, "force"),
])
def test_failover_bad_body(api, controller, store, body, field):
    with changes_nothing(controller, store):
        refused(call(api, "failover", "POST", {"name": "web"}, body=body, auth=AUTH), 400, field)


def test_failover_unknown_service(api, controller, store):
    with changes_nothing(controller, store):
        refused(call(api, "failover", "POST", {"name": "nope"}, body={"backup": "b1"}, auth=AUTH), 404, "name")


def test_migrate_takes_no_fields(api, controller, store):
    with changes_nothing(controller, store):
        refused(call(api, "migrate", "POST", {"name": "web"}, body={"backup": "b1"}, auth=AUTH), 400, "backup")


# --- routing and errors ------------------------------------------------------------------------


def test_wrong_method_is_405_and_unknown_route_404(api, controller, store):
    with changes_nothing(controller, store):
        assert "GET" in refused(call(api, "services", "POST", auth=AUTH), 405, None)
    assert Api.methods("service") == ["DELETE", "GET", "PUT"]
    refused(call(api, "", "GET"), 404, None)


def test_a_bug_is_500_json_and_logged(api, controller, caplog):
    controller.broken = True
    assert "controller log" in refused(call(api, "services"), 500, None)
    assert "a bug in the adapter" in caplog.text


def test_redis_down_is_503_for_data(api, store):
    store.server.connected = False
    for route, params in (("services", {}), ("service", {"name": "web"}), ("connections", {}), ("events", {})):
        assert "redis unavailable" in refused(call(api, route, params=params), 503, None)
    assert api.redis_errors == 4


@pytest.mark.parametrize("route", ["services", "health", "metrics", "events", "connections"])
def test_unknown_query_parameter(api, route):
    assert "unknown query parameter" in refused(call(api, route, query={"bogus": ["1"]}), 400, "bogus")


# --- connections -------------------------------------------------------------------------------


@pytest.fixture
def conns(store):
    agent = FakeAgent(store)
    ids = [agent.connect("10.0.0.1", 40000 + i, b"x" * (i + 1), now=NOW) for i in range(5)]
    ids.append(agent.connect("10.0.0.2", 41000, b"late", now=NOW, with_syn=False))
    agent.flush(NOW, heartbeat(NOW))   # and its agent is up
    return ids


def test_list_connections_with_filters_and_paging(api, conns):
    page = ok(call(api, "connections"))
    assert page["total"] == 6 and page["limit"] == 100 and page["offset"] == 0
    assert [c["id"] for c in page["connections"]] == sorted(conns)
    first = page["connections"][0]
    assert first["service"] == "web" and first["client_ip"] == "10.0.0.1" and first["client_port"] == 40000
    assert first["state"] == "established" and first["status"] == "protected" and first["c2s_logged"] == 1

    page = ok(call(api, "connections", query={"limit": "2", "offset": "1"}))
    assert [c["id"] for c in page["connections"]] == sorted(conns)[1:3] and page["total"] == 6
    assert ok(call(api, "connections", query={"offset": "6"}))["connections"] == []

    unprotected = ok(call(api, "connections", query={"status": "unprotected"}))
    assert [c["id"] for c in unprotected["connections"]] == [conn_id("10.0.0.2", 41000)]
    assert unprotected["connections"][0]["reason"] == "no SYN seen (connection predates capture)"
    assert ok(call(api, "connections", query={"status": "protected"}))["total"] == 5
    assert ok(call(api, "connections", query={"client": "10.0.0.1"}))["total"] == 5
    assert ok(call(api, "connections", query={"client": "10.0.0.1:40003"}))["connections"][0]["id"] == \
        conn_id("10.0.0.1", 40003)
    assert ok(call(api, "connections", query={"client": "10.0.0.9"}))["total"] == 0
    assert ok(call(api, "connections", query={"service": "web", "client": "10.0.0.2"}))["total"] == 1


@pytest.mark.parametrize("query, status, field", [
    ({"limit": "0"}, 400, "limit"), ({"limit": "1001"}, 400, "limit"), ({"limit": "abc"}, 400, "limit"),
    ({"limit": ""}, 400, "limit"), ({"limit": " 5"}, 400, "limit"), ({"limit": "+5"}, 400, "limit"),
    ({"limit": "٣"}, 400, "limit"), ({"limit": ["1", "2"]}, 400, "limit"), ({"offset": "-1"}, 400, "offset"),
    ({"status": "fine"}, 400, "status"), ({"client": "10.0.0"}, 400, "client"),
    ({"client": "10.0.0.1:0"}, 400, "client"), ({"client": "10.0.0.1:x"}, 400, "client"),
    ({"service": "nope"}, 404, "service"),
])
def test_bad_connection_queries(api, conns, query, status, field):
    refused(call(api, "connections", query=query), status, field)


def test_get_connection_full_typed_state_and_log_length(api, conns):
    cid = conns[2]
    state = ok(call(api, "connection", params={"id": cid}, auth=AUTH))
    assert state["id"] == cid and state["service"] == "web"
    assert state["isn_c"] == 1000 and state["isn_s"] == 5000
    assert state["c2s_logged"] == 3 and state["log_bytes"] == 3
    assert state["mss_c"] == 1460 and state["wscale_c"] == 7
    assert state["sack_ok"] is True and state["ts_ok"] is True and state["rst"] is False
    assert state["c_opts"]["mss"] == 1460
    assert state["first_seen"] == NOW and state["closed_at"] is None
    assert state["status"] == "protected" and state["reason"] == ""


def test_every_record_says_who_keeps_serves_and_protects_it(api, store, conns):
    page = ok(call(api, "connections"))["connections"]
    assert {(c["recorded_by"], c["serving"], c["protector"], c["status"]) for c in page} == \
        {("b1", "primary", "b1", "protected"), ("b1", "primary", None, "unprotected")}
    cid = conns[0]       # as b1's agent writes it at go, once it took the connection over
    store.fake_redis.hset(f"ftcp:conn:b1:{cid}", mapping={
        "status": "unprotected", "reason": "taken over: b1 serves it now and no host protects it"})
    got = ok(call(api, "connection", params={"id": cid}))
    assert (got["recorded_by"], got["serving"], got["protector"]) == ("b1", "b1", None)
    listed = next(c for c in ok(call(api, "connections"))["connections"] if c["id"] == cid)
    assert (listed["serving"], listed["protector"]) == ("b1", None)


def test_records_of_an_agent_that_is_not_up_are_not_reported_protected(api, store, clock, conns):
    """Nothing logs a connection while the agent keeping its record is down: its record
    says protected (it was, when written), and REST says it is not."""
    clock.now += 10                                    # b1's heartbeat is 10 s old: stale
    page = ok(call(api, "connections"))["connections"]
    assert {(c["protector"], c["status"]) for c in page} == {(None, "unprotected")}
    assert {c["reason"] for c in page} == {"agent down: the agent on b1 is stale: nothing logs it",
                                           "no SYN seen (connection predates capture)"}
    assert ok(call(api, "service", params={"name": "web"}))["connections"]["protected"] == 0


def test_records_of_a_backup_the_service_moved_away_from_are_not_reported_protected(api, store, conns):
    """b1's agent may be down and never say so: once b1 is fenced (it served, and failed
    over to b2), nothing of the service reaches it, and its records are reported
    unprotected."""
    store.fake_redis.hset("ftcp:svc:web", mapping={"status": "protected", "serving": "b2",
                                                   "fenced": '["primary", "b1"]'})
    page = ok(call(api, "connections"))["connections"]
    assert {(c["recorded_by"], c["serving"], c["protector"], c["status"]) for c in page} == \
        {("b1", "b2", None, "unprotected")}
    assert {c["reason"] for c in page} == {"taken over: b2 serves it now and no host protects it",
                                           "no SYN seen (connection predates capture)"}
    assert ok(call(api, "connections", query={"status": "protected"}))["total"] == 0
    got = ok(call(api, "connection", params={"id": conns[0]}))
    assert (got["status"], got["serving"]) == ("unprotected", "b2")
    view = ok(call(api, "service", params={"name": "web"}))
    assert view["connections"]["protected"] == 0


@pytest.mark.parametrize("bad", ["x", "10.0.0.1:40000", "10.0.0.1:40000-10.0.0.10", "999.0.0.1:1-10.0.0.10:7000",
                                 "10.0.0.1:40000-10.0.0.10:7000\n"])
def test_malformed_connection_id_is_400(api, bad):
    refused(call(api, "connection", params={"id": bad}), 400, "id")


def test_unknown_connection_is_404(api):
    refused(call(api, "connection", params={"id": conn_id("10.0.0.1", 1)}), 404, "id")


# --- health, events, metrics ---------------------------------------------------------------------


def test_health_all_up(api, store, clock):
    clock.now = NOW + 60
    FakeAgent(store).flush(clock.now - 1, heartbeat(clock.now - 1))
    health = ok(call(api, "health"))
    assert health["status"] == "ok" and health["problems"] == []
    assert health["controller"] == {"status": "up", "started": NOW, "uptime": 60.0}
    assert health["switches"][0]["dpid"] == "0000000000000001"
    assert health["redis"] == {"status": "up", "url": "redis://:***@redis.example:6379/0", "error": None}
    (agent,) = health["agents"]
    assert agent["name"] == "b1" and agent["status"] == "up" and agent["age"] == 1.0
    assert agent["stats"]["pid"] == 4242 and agent["stats"]["kernel_drops"] == 0
    assert "pa55word" not in json.dumps(health)


@pytest.mark.parametrize("age, beat, status", [
    (3.5, {}, "stale"), (1.0, {"stopped": f"{NOW:.6f}"}, "stopped"), (None, None, "missing"),
])
def test_health_agent_problems(api, store, clock, age, beat, status):
    if beat is not None:
        FakeAgent(store).flush(NOW - age, heartbeat(NOW - age, **beat))
    health = ok(call(api, "health"))
    assert health["agents"][0]["status"] == status
    assert health["status"] == "degraded" and f"agent b1 {status}" in health["problems"]


def test_health_with_redis_down_is_200(api, store):
    store.server.connected = False
    health = ok(call(api, "health"))
    assert health["redis"]["status"] == "down" and "redis" in health["redis"]["error"]
    assert "pa55word" not in json.dumps(health)
    assert health["agents"] == [{"name": "b1", "status": "unknown", "heartbeat": None, "age": None, "stats": {}}]
    assert health["status"] == "degraded" and "redis down" in health["problems"]


def test_health_survives_a_broken_switch_list(api, controller):
    controller.switches = lambda: 1 / 0
    health = ok(call(api, "health"))
    assert health["switches"] == [] and "no switch connected" in health["problems"]


def test_events_newest_last_and_decoded(api, store):
    for i in range(5):
        store.event("flows_installed", service="web", dpid="1", flows=i)
    store.event("controller_started", services=["web"])
    events = ok(call(api, "events", query={"limit": "3"}))["events"]
    assert [e["kind"] for e in events] == ["flows_installed", "flows_installed", "controller_started"]
    assert events[-1]["services"] == ["web"] and events[-1]["time"] == NOW
    assert events[0]["flows"] == "3" and events[0]["id"] < events[1]["id"]
    refused(call(api, "events", query={"limit": "0"}), 400, "limit")


def metrics_of(result):
    status, text, ctype = result
    assert (status, ctype) == (200, PROMETHEUS)
    samples, helps = {}, {}
    for family in text_string_to_metric_families(text):
        helps[family.name] = family.documentation
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, helps


def test_metrics(api, store, clock):
    agent = FakeAgent(store)
    agent.connect("10.0.0.1", 40000, b"hello")
    agent.connect("10.0.0.2", 40001, b"late", with_syn=False)
    # the hot replica wrote a Date of its own; tolerated (divergence: aligned)
    next(c for c in agent.tracker.conns.values() if c.status == "protected").divergent = 12
    agent.flush(NOW, heartbeat(NOW, kernel_drops=2, divergent_bytes=12))
    agent.flush(NOW, heartbeat(NOW, kernel_drops=2, divergent_bytes=12))   # the writer adds its counters
    samples, helps = metrics_of(call(api, "metrics"))
    assert samples[("ftcp_divergent_connections", (("service", "web"),))] == 1
    assert samples[("ftcp_connections_by_replica", (("replica", "none"), ("service", "web")))] == 2
    assert samples[("ftcp_connections_by_replica", (("replica", "failed"), ("service", "web")))] == 0
    assert samples[("ftcp_agent_divergent_bytes_total", (("agent", "b1"),))] == 12
    assert samples[("ftcp_connections", (("service", "web"), ("status", "protected")))] == 1
    assert samples[("ftcp_connections", (("service", "web"), ("status", "unprotected")))] == 1
    assert samples[("ftcp_unprotected_connections", (("reason", "no_syn"), ("service", "web")))] == 1
    assert samples[("ftcp_services", (("status", "protected"),))] == 1
    assert samples[("ftcp_bytes_logged_total", (("agent", "b1"),))] == 5
    assert samples[("ftcp_agent_kernel_drops_total", (("agent", "b1"),))] == 2
    assert samples[("ftcp_agent_up", (("agent", "b1"),))] == 1
    assert samples[("ftcp_redis_up", ())] == 1
    assert samples[("ftcp_redis_errors_total", (("component", "controller"),))] == 7
    assert samples[("ftcp_redis_errors_total", (("agent", "b1"), ("component", "agent")))] == 0
    assert samples[("ftcp_failovers_total", (("outcome", "failed-over"),))] == 1
    assert samples[("ftcp_failovers_total", (("outcome", "failover-failed"),))] == 0
    assert samples[("ftcp_failover_takeover_seconds", ())] == 0.042
    assert samples[("ftcp_held_fin_rst_total", ())] == 3 and samples[("ftcp_released_fin_rst_total", ())] == 2
    assert samples[("ftcp_probes_total", (("result", "timeout"),))] == 2
    assert samples[("ftcp_probes_total", (("result", "alive"),))] == 40


def test_metrics_with_redis_down_still_answer(api, store):
    store.server.connected = False
    samples, _ = metrics_of(call(api, "metrics"))
    assert samples[("ftcp_redis_up", ())] == 0
    assert samples[("ftcp_redis_errors_total", (("component", "api"),))] == 1
    assert not any(name == "ftcp_connections" for name, _ in samples)


@pytest.mark.parametrize("reason, label", [
    ("no SYN seen (connection predates capture)", "no_syn"),
    ("capture gap: server acked 5 bytes not seen", "capture_gap"),
    ("reassembly buffer overflow: 4097 segments, 4097 bytes held", "reassembly_overflow"),
    ("conflicting copies of client data at client byte 25", "conflicting_copies"),
    ("diverged: the replica's output differs from the primary's at byte 7", "diverged"),
    ("log cap of 1048576 bytes reached", "log_cap"),
    ("redis unavailable: 10 bytes of the client log could not be stored", "redis"),
    ("redis lost 10 bytes of the stored client log", "redis"), ("something new", "other"),
])
def test_reason_classes(reason, label):
    assert reason_class(reason) == label


def test_sequence_numbers_are_served_only_with_the_token(api, store):
    agent = FakeAgent(store)
    cid = agent.connect("10.0.0.1", 40000, b"hello")
    agent.flush(NOW, heartbeat(NOW))   # and its agent is up
    open_read = call(api, "connection", "GET", {"id": cid})[1]
    assert open_read["status"] == "protected" and open_read["c2s_logged"] == 5
    assert not set(open_read) & {"isn_c", "isn_s", "c2s_next", "s2c_next", "c_ack", "s_ack", "c_tsval"}
    with_token = call(api, "connection", "GET", {"id": cid}, auth=AUTH)[1]
    assert with_token["isn_c"] == 1000 and with_token["c2s_next"] == 1006

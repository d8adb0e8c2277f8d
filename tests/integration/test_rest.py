"""The REST API over HTTP through the stock ryu-manager and a real redis-server:
each refusal names its field, refused changes change nothing, Redis hung or gone
leaves /ftcp/health answering, and the token never reaches the log."""
import inspect
import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ftcp.common.store import Store
from tests.integration.rest_server import TOKEN, RestServer, no_ovs  # noqa: F401 (fixture)
from tests.support.fake_agent import SERVICE, FakeAgent, conn_id, heartbeat
from topology.lab import wait_for

DB = dict(SERVICE, name="db", address="10.0.0.11", port=5432)
# The controller's Store gives up on a Redis that does not answer after this long.
STORE_TIMEOUT = inspect.signature(Store).parameters["timeout"].default


def field_of(result, status):
    code, resp, body = result
    assert code == status, body
    assert resp.getheader("Content-Type") == "application/json"
    assert isinstance(body["error"], str) and body["error"]
    return body["field"]


def services_state(rest):
    """What a refused call must leave alone: the API's view and Redis's records."""
    store = Store(rest.redis.url)
    names = sorted(store.service_names())
    return rest.request("GET", "/ftcp/services")[2], names, {n: store.service(n) for n in names}


@pytest.fixture
def clean(rest):
    """No service "db", before and after."""
    rest.request("DELETE", "/ftcp/services/db", token=TOKEN)
    yield rest
    rest.request("DELETE", "/ftcp/services/db", token=TOKEN)


def test_create_read_delete_a_service(clean):
    rest = clean
    status, _, view = rest.request("PUT", "/ftcp/services/db", DB, token=TOKEN)
    assert status == 201 and view["name"] == "db" and view["status"] == "configured"
    # The controller records the service in Redis after it answered (no handler waits
    # on Redis): the answer has no record time yet, the next read has the record's.
    assert view["updated"] is None
    record = wait_for(lambda: Store(rest.redis.url).service_state("db"), 10, "db's record in Redis")
    assert record["svc_port"] == 5432 and record["status"] == "configured"
    assert rest.request("GET", "/ftcp/services/db")[2] == dict(view, updated=record["updated"])
    assert "db" in [s["name"] for s in rest.request("GET", "/ftcp/services")[2]["services"]]

    status, _, view = rest.request("PUT", "/ftcp/services/db", dict(DB, port=5433), token=TOKEN)
    assert status == 200 and view["port"] == 5433

    status, resp, body = rest.request("DELETE", "/ftcp/services/db", token=TOKEN)
    assert (status, body) == (204, "") and resp.getheader("Content-Type") is None
    assert field_of(rest.request("GET", "/ftcp/services/db"), 404) == "name"
    # forgotten in Redis by the recorder too, after the answer (as it was written)
    wait_for(lambda: Store(rest.redis.url).service("db") is None, 10, "db's record to be removed from Redis")


def test_delete_unknown_service_is_404(rest):
    assert field_of(rest.request("DELETE", "/ftcp/services/nope", token=TOKEN), 404) == "name"


@pytest.mark.parametrize("body, field", [
    ("{not json", "body"),
    ("", "body"),
    ("[]", "service"),
    (dict(DB, prot=1), "service.prot"),
    (dict(DB, port=80000), "service.port"),
    (dict(DB, port="5432"), "service.port"),
    (dict(DB, address="10.0.0.256"), "service.address"),
    (dict(DB, primary={"port": 3, "mac": "nope"}), "service.primary.mac"),
    (dict(DB, backups=[dict(SERVICE["backups"][0], mirror_port=4)]), "service.backups[0].mirror_port"),
])
def test_bad_put_is_400_naming_the_field_and_changes_nothing(clean, body, field):
    before = services_state(clean)
    assert field_of(clean.request("PUT", "/ftcp/services/db", body, token=TOKEN), 400) == field
    # A bad replacement leaves the existing service as it was.
    replacement = dict(body, name="web") if isinstance(body, dict) else body
    assert field_of(clean.request("PUT", "/ftcp/services/web", replacement, token=TOKEN), 400) == field
    assert services_state(clean) == before


@pytest.mark.parametrize("body, field", [
    (dict(DB, address=SERVICE["address"], port=SERVICE["port"]), "service.port"),   # web's address:port
    (dict(DB, name="other"), "service.name"),
])
def test_put_that_clashes_is_400_and_changes_nothing(clean, body, field):
    before = services_state(clean)
    assert field_of(clean.request("PUT", "/ftcp/services/db", body, token=TOKEN), 400) == field
    assert services_state(clean) == before


@pytest.mark.parametrize("method, path, body, token, status, field", [
    ("PUT", "/ftcp/services/db", DB, None, 401, "Authorization"),
    ("PUT", "/ftcp/services/db", DB, "wrong", 401, "Authorization"),
    ("DELETE", "/ftcp/services/web", None, None, 401, "Authorization"),
    ("POST", "/ftcp/services/web/failover", {"backup": "b1"}, "wrong", 401, "Authorization"),
    ("PUT", "/ftcp/services/bad%20name", DB, TOKEN, 400, "name"),
    ("GET", "/ftcp/services/nope", None, None, 404, "name"),
    ("POST", "/ftcp/services/nope/migrate", None, TOKEN, 404, "name"),
    ("POST", "/ftcp/services/web/failover", {"backup": "b9"}, TOKEN, 400, "backup"),
    ("POST", "/ftcp/services/web/failover", {}, TOKEN, 400, "backup"),
    ("POST", "/ftcp/services/web/failover", "{", TOKEN, 400, "body"),
    ("GET", "/ftcp/connections?limit=0", None, None, 400, "limit"),
    ("GET", "/ftcp/connections?limit=abc", None, None, 400, "limit"),
    ("GET", "/ftcp/connections?offset=-1", None, None, 400, "offset"),
    ("GET", "/ftcp/connections?status=happy", None, None, 400, "status"),
    ("GET", "/ftcp/connections?client=10.0.0", None, None, 400, "client"),
    ("GET", "/ftcp/connections?service=nope", None, None, 404, "service"),
    ("GET", "/ftcp/connections?bogus=1", None, None, 400, "bogus"),
    ("GET", "/ftcp/connections?client=%ff", None, None, 400, "query"),
    ("GET", "/ftcp/connections/not-an-id", None, None, 400, "id"),
    ("GET", "/ftcp/connections/10.0.0.1:1-10.0.0.10:7000", None, None, 404, "id"),
    ("GET", "/ftcp/events?limit=99999", None, None, 400, "limit"),
])
def test_refusals_name_the_field(rest, method, path, body, token, status, field):
    result = rest.request(method, path, body, token=token)
    assert field_of(result, status) == field
    if status == 401:
        assert result[1].getheader("WWW-Authenticate") == 'Bearer realm="ftcp"'
        assert TOKEN not in result[2]["error"]


def test_failover_and_migrate_without_a_live_agent_are_409(rest):
    """No agent has ever sent a heartbeat: the core refuses to fence (nobody would take over)."""
    result = rest.request("POST", "/ftcp/services/web/failover", {"backup": "b1"}, token=TOKEN)
    assert field_of(result, 409) == "name"
    assert result[2]["error"] == "service web cannot fail over now: no live backup agent"
    result = rest.request("POST", "/ftcp/services/web/migrate", token=TOKEN)
    assert field_of(result, 409) == "name"
    assert result[2]["error"] == "service web cannot fail over now: no live backup agent"
    assert rest.request("GET", "/ftcp/services/web")[2]["epoch"] == 0


def test_failover_with_a_live_agent_starts_the_failover_and_a_second_is_409():
    """Its own controller: the failover changes web's state for good."""
    server = RestServer("failover", token=TOKEN).start()
    try:
        now = time.time()
        FakeAgent(Store(server.redis.url)).flush(now, heartbeat(now))
        status, _, body = server.request("POST", "/ftcp/services/web/failover", {"backup": "b1"}, token=TOKEN)
        assert (status, body) == (200, {"service": "web", "status": "failing-over", "epoch": 1, "backup": "b1",
                                        "reason": "failover requested over REST"})
        result = server.request("POST", "/ftcp/services/web/migrate", token=TOKEN)
        assert field_of(result, 409) == "name"
        assert result[2]["error"] == "service web is failing-over, not protected: nothing to move"
        # Nobody listens on the agent's channel: the takeover times out (5 s) and fails.
        record = wait_for(lambda: (lambda r: r if r["status"] == "failover-failed" else None)(
            Store(server.redis.url).service_state("web")), 15, "the unanswered failover to fail")
        assert record["epoch"] == 1
    finally:
        server.stop()


def test_wrong_method_unknown_path_and_oversized_body(rest):
    status, resp, body = rest.request("PATCH", "/ftcp/services/web")
    assert status == 405 and resp.getheader("Allow") == "DELETE, GET, PUT" and body["field"] is None
    assert field_of(rest.request("GET", "/ftcp/nothing/here"), 404) is None
    assert field_of(rest.request("PUT", "/ftcp/services/db", " " * 70000, token=TOKEN), 413) == "body"


def test_connections_as_the_agent_writes_them(rest):
    now = time.time()
    agent = FakeAgent(Store(rest.redis.url))
    agent.connect("10.0.1.1", 50000, b"0123456789", now=now)
    agent.connect("10.0.1.2", 50001, b"x", now=now, with_syn=False)
    agent.flush(now, heartbeat(now))   # and its agent is up: its records are what REST reports
    page = rest.request("GET", "/ftcp/connections?client=10.0.1.2")[2]
    assert [c["id"] for c in page["connections"]] == [conn_id("10.0.1.2", 50001)] and page["total"] == 1
    assert page["connections"][0]["status"] == "unprotected"
    state = rest.request("GET", f"/ftcp/connections/{conn_id('10.0.1.1', 50000)}")[2]
    assert state["log_bytes"] == 10 and state["c2s_logged"] == 10 and "isn_c" not in state
    state = rest.request("GET", f"/ftcp/connections/{conn_id('10.0.1.1', 50000)}", token=TOKEN)[2]
    assert state["isn_c"] == 1000
    assert state["sack_ok"] is True and state["c_opts"]["wscale"] == 7
    view = rest.request("GET", "/ftcp/services/web")[2]
    assert view["connections"]["protected"] >= 1 and view["connections"]["unprotected"] >= 1


def test_health_and_metrics_answer_while_redis_hangs(rest):
    now = time.time()
    FakeAgent(Store(rest.redis.url)).flush(now, heartbeat(now))
    health = rest.request("GET", "/ftcp/health")[2]
    assert health["redis"]["status"] == "up" and health["agents"][0]["status"] == "up"
    # the Redis password never leaves the controller: the open read shows the URL redacted
    assert rest.redis.password not in json.dumps(health) and ":***@" in health["redis"]["url"]
    with rest.redis_frozen():
        started = time.monotonic()
        status, _, health = rest.request("GET", "/ftcp/health")
        assert status == 200 and health["redis"]["status"] == "down" and health["redis"]["error"]
        assert rest.redis.password not in json.dumps(health)
        assert health["agents"][0]["status"] == "unknown" and health["status"] == "degraded"
        # one socket timeout (the ping that finds Redis hung), then the answer: no
        # retry, no other Redis read waits its own timeout
        took = time.monotonic() - started
        assert STORE_TIMEOUT <= took < 2 * STORE_TIMEOUT, took
        status, _, text = rest.request("GET", "/metrics")
        assert status == 200
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples["ftcp_redis_up"] == 0
        assert field_of(rest.request("GET", "/ftcp/connections"), 503) is None
    wait_for(lambda: rest.request("GET", "/ftcp/health")[2]["redis"]["status"] == "up", 15,
             "the API to see Redis again")


def test_health_when_redis_is_gone():
    server = RestServer("no-redis", token=TOKEN).start()
    try:
        server.redis.stop()
        status, _, health = server.request("GET", "/ftcp/health")
        assert status == 200 and health["redis"]["status"] == "down"
        assert server.alive()
    finally:
        server.stop()


def test_without_a_token_changes_are_refused_and_the_log_says_how_to_set_one():
    server = RestServer("no-token").start()
    try:
        result = server.request("PUT", "/ftcp/services/db", DB, token="anything")
        assert field_of(result, 403) == "Authorization"
        assert "api_token" in result[2]["error"] and "FTCP_API_TOKEN" in result[2]["error"]
        assert field_of(server.request("DELETE", "/ftcp/services/web", token=""), 403) == "Authorization"
        assert server.request("GET", "/ftcp/services/web")[0] == 200
        assert "[ftcp] api_token" in server.log.read_text()
    finally:
        server.stop()


def test_the_token_never_reaches_the_log(rest):
    rest.request("PUT", "/ftcp/services/db", DB, token=TOKEN)
    rest.request("DELETE", "/ftcp/services/db", token=TOKEN)
    rest.request("DELETE", "/ftcp/services/db", token=TOKEN + "x")
    assert "service db created" in rest.log.read_text()
    assert TOKEN not in rest.log.read_text()

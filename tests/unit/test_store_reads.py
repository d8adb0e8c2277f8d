"""The Store's typed reads (for the REST API) over what the agent really writes."""
import subprocess
import sys

import pytest

from ftcp.common import schema
from ftcp.common import store as store_mod
from ftcp.agent.writer import redis_fields
from ftcp.common.config import parse_service
from tests.support.fake_agent import SERVICE, FakeAgent, conn_id
from tests.support.store import fake_store

# Fields of a connection record that are text by nature.
TEXT_FIELDS = {"id", "service", "client_ip", "server_ip", "state", "status", "reason", "replica"}


@pytest.fixture
def store():
    return fake_store()


def test_every_connection_field_decodes_back_to_what_the_tracker_had(store):
    agent = FakeAgent(store)
    agent.connect("10.0.0.1", 40000, b"hello")
    (conn,) = agent.tracker.conns.values()
    state = conn.to_state()
    # A field the tracker adds must be typed here too, or the API would serve it as text.
    assert set(state) - TEXT_FIELDS == {f for f in state if schema.CONN_KINDS(f) is not None}
    assert schema.decode_conn({k: str(v) for k, v in redis_fields(state).items()}) == state
    agent.flush(1.0)
    stored = store.conn_state(agent.name, conn.id)
    assert stored == dict(state, c2s_stored=5)


def test_values_that_do_not_parse_are_returned_as_stored():
    assert schema.decode_conn({"isn_c": "n/a", "sack_ok": "maybe", "c_opts": "{", "closed_at": ""}) == \
        {"isn_c": "n/a", "sack_ok": "maybe", "c_opts": "{", "closed_at": None}


def test_conn_ids_skip_the_logs_and_conn_fields_skip_vanished_records(store):
    agent = FakeAgent(store)
    ids = [agent.connect("10.0.0.1", 40000 + i, b"data") for i in range(3)]
    agent.flush(1.0)
    pairs = [(agent.name, cid) for cid in ids]
    assert sorted(store.conn_ids()) == sorted(pairs)
    assert store.fake_redis.exists(store_mod.conn_log_key(agent.name, ids[0]))   # the logs are there, and skipped
    rows = store.conn_fields(agent.name, ids + [conn_id("10.0.0.9", 1)], ("status", "client_port"))
    assert rows == {cid: {"status": "protected", "client_port": 40000 + i} for i, cid in enumerate(ids)}
    assert store.conn_fields(agent.name, [], ("status",)) == {} and store.conn_fields("b2", ids, ("status",)) == {}


def test_recent_events_oldest_first(store):
    for i in range(5):
        store.event("e", n=i)
    assert [r["n"] for _, r in store.recent_events(3)] == ["2", "3", "4"]
    assert store.recent_events(10)[0][1]["n"] == "0"


def test_service_state_is_typed_and_delete_forgets_it(store):
    store.save_service(parse_service(SERVICE), "protected", flows=3, dpid="0000000000000001")
    state = store.service_state("web")
    assert (state["svc_port"], state["flows"], state["epoch"], state["dpid"]) == (7000, 3, 0, "0000000000000001")
    assert state["backups"][0]["name"] == "b1" and isinstance(state["updated"], float)
    store.delete_service("web")
    assert store.service_state("web") is None and store.service_names() == set()


def test_agent_heartbeat_is_typed():
    beat = schema.decode_agent({"heartbeat": "12.5", "stopped": "", "iface": "b1-eth1", "services": "web",
                                   "kernel_drops": "3", "pid": "42"})
    assert beat == {"heartbeat": 12.5, "stopped": None, "iface": "b1-eth1", "services": "web", "kernel_drops": 3,
                    "pid": 42}


def test_the_api_imports_no_ryu():
    code = "import sys, ftcp.api.routes; sys.exit(any(m == 'ryu' or m.startswith('ryu.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_records_that_do_not_decode_are_a_store_error_not_a_crash():
    """Anyone who can write Redis can leave bytes that are not UTF-8 or JSON nested
    past the recursion limit: readers get a StoreError (which every caller handles),
    never an exception that kills a thread or a request."""
    store = fake_store()
    raw = store._raw
    raw.sadd(store_mod.svc_conns_key("web", "b1"), b"\xff\xfe")
    raw.hset(store_mod.conn_key("b1", "10.0.0.1:1-10.0.0.10:7000"), "c_opts", b"[" * 100000)
    raw.sadd(store_mod.svc_conns_key("db", "b1"), "10.0.0.1:1-10.0.0.10:7000")
    with pytest.raises(store_mod.StoreError, match="does not decode: UnicodeDecodeError"):
        store.service_conns("web", "b1")
    with pytest.raises(store_mod.StoreError, match="does not decode: RecursionError"):
        store.live_conns(["db"], "b1")


def test_an_agents_answers_reach_the_controller_on_its_own_stream():
    """Sealed with the agent's key, read from where the controller started, each once;
    a forged entry comes out as invalid, and one signed by b1 on b2's stream is b1's."""
    from ftcp.common import control
    master = b"m" * 32
    agent = fake_store()
    agent.control_key = control.Keyring(control.agent_key(master, "b1"), agent="b1")
    controller = fake_store(server=agent.server)
    controller.control_key = control.Keyring(master)
    agent.answer("b1", {"cmd": "gone", "service": "web", "epoch": 1, "backup": "b1"})    # before the controller reads
    after = controller.answers_from(["b1", "b2"])
    assert controller.read_answers(after, block_ms=None) == []
    ready = {"cmd": "ready", "service": "web", "epoch": 2, "backup": "b1"}
    agent.answer("b1", ready)
    agent.fake_redis.xadd(store_mod.answers_key("b1"), {"m": '{"cmd": "ready"}'})     # what anyone could write
    agent.answer("b2", ready)                                                          # b1's, wherever it is
    got = controller.read_answers(after, block_ms=None)
    assert [(b, m["cmd"]) for b, m in got] == [("b1", "ready"), ("b1", "invalid"), ("b2", "ready")]
    assert got[0][1] == ready and got[2][1]["backup"] == "b1"
    assert controller.read_answers(after, block_ms=None) == []                         # each once
    for n in range(store_mod.ANSWERS_MAXLEN * 3):
        agent.answer("b1", ready)
    assert agent.fake_redis.xlen(store_mod.answers_key("b1")) < store_mod.ANSWERS_MAXLEN * 2   # capped


def test_a_services_epoch_is_kept_past_its_removal_and_never_goes_back(store):
    svc = parse_service(SERVICE)
    store.save_service(svc, "protected", epoch=3)
    store.save_service(svc, "protected", epoch=2)        # a deposed controller's late write
    store.delete_service(svc.name)
    assert store.service(svc.name) is None and store.epochs() == {svc.name: 3}
    store.save_service(svc, "configured", epoch=4)
    assert store.epochs() == {svc.name: 4}


def test_two_agents_records_of_one_connection_never_meet(store):
    """Each agent's records and logs are in its own namespace: two hosts protecting one
    service keep two records of one connection, each with its own log."""
    b1, b2 = FakeAgent(store, name="b1"), FakeAgent(store, name="b2")
    cid = b1.connect("10.0.0.1", 40000, b"from b1")
    assert b2.connect("10.0.0.1", 40000, b"b2 saw") == cid
    b1.flush(1.0)
    b2.flush(1.0)
    assert sorted(store.conn_ids()) == [("b1", cid), ("b2", cid)]
    assert (store.conn_log("b1", cid), store.conn_log("b2", cid)) == (b"from b1", b"b2 saw")
    assert store.service_conns("web", "b1") == store.service_conns("web", "b2") == {cid}
    store.delete_conn("b1", cid, "web")
    assert store.conn("b1", cid) is None and store.conn_log("b2", cid) == b"b2 saw"

"""ftcp's own parts fail around a failover, for real: ryu-manager is SIGKILLed and
started again, redis-server is killed and restarted on its append-only file, the
switch loses its controller, the primary's port is deleted. Each time the client's
connection survives with every byte checked (its SHA-256s), and no frame from the
backup's own address ever reaches the client (tcpdump on the client host)."""
import json
import subprocess

import pytest

from ftcp.common.store import Store
from tests.support.faults import (PORT, agent_paused, agent_resumed, backup_frames_seen_by_client, done, events,
                                  fault_between_fence_and_ready, flows_with, packets, requests, status,
                                  switch_connected)
from tests.support.held_client import ScriptedClient, conn_id
from topology.lab import PRIMARY_IP, SERVICES, Lab, wait_for


@pytest.fixture
def lab(run_dir):
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir) as lab:
        yield lab


def test_controller_killed_and_restarted_after_a_failover_keeps_the_connection(lab):
    store = Store(lab.redis.url)
    with backup_frames_seen_by_client(lab) as seen:
        client = requests(lab, count=6000)
        lab.fail_primary("link")
        done(store)
        redirect, = flows_with(lab, "priority=1500", "set_field:10.0.0.20->ip_dst")
        lab.restart_controller(kill=True)
        wait_for(lambda: len(events(store, "controller_started")) == 2, 20, "the new controller to start")
        wait_for(switch_connected, 20, "the switch to reconnect")
        # reconciled, not re-installed: still fenced and redirected, and the redirect's
        # packet counter went on counting (a re-added flow starts from 0)
        assert flows_with(lab, "priority=3000")
        again, = flows_with(lab, "priority=1500", "set_field:10.0.0.20->ip_dst")
        assert packets(again) >= packets(redirect) > 0
        res = client.result()
    assert res["ok"] and res["requests"] == 6000, res
    assert store.service("demo")["status"] == "failed-over"
    assert seen == []


def test_controller_killed_between_fence_and_ready_finishes_the_failover_on_restart(lab):
    fault_between_fence_and_ready(lab, "crash", lambda: lab.restart_controller(kill=True))


def test_controller_restart_while_protected_disturbs_nothing_and_a_failover_after_it_works(lab):
    store = Store(lab.redis.url)
    client = requests(lab)
    before = flows_with(lab, "priority=1000")
    lab.restart_controller(kill=True)
    wait_for(lambda: len(events(store, "flows_installed")) == 2, 20, "the new controller to reconcile the switch")
    after = flows_with(lab, "priority=1000")
    # the mirror flows were never re-added: their packet counters kept counting
    assert len(after) == len(before) == 2
    for old, new in zip(sorted(before), sorted(after)):
        assert packets(new) >= packets(old) > 0
    lab.fail_primary("link")
    done(store)
    res = client.result()
    assert res["ok"] and res["requests"] == 4000, res
    conns = json.loads(store.service("demo")["taken"])
    assert conns == 1


def test_redis_restarted_between_fence_and_ready_loses_nothing(lab):
    fault_between_fence_and_ready(lab, "link", lambda: lab.restart_redis(down=0.5), timeout=30)


def test_switch_without_controller_when_ready_comes_gets_go_after_it_reconnects(lab):
    """The switch's OpenFlow connection is lost while the agent prepares: ready comes,
    the redirect cannot be confirmed, go waits; the switch reconnects, is reconciled
    (its flows kept all along) and go follows its barrier."""
    store = Store(lab.redis.url)
    with backup_frames_seen_by_client(lab) as seen:
        client = requests(lab)
        agent_paused(lab)
        lab.fail_primary("link")
        status(store, "failing-over")
        targets = lab.cut_controller()
        wait_for(lambda: not switch_connected(), 10, "the switch to lose its controller")
        fenced = flows_with(lab, "priority=3000")
        agent_resumed(lab)
        # ready reaches the controller, the redirect has no switch to go to: no go yet
        svc = status(store, "failed-over")
        assert svc["step"] == "redirecting"
        assert fenced and flows_with(lab, "priority=1000")     # the switch kept its flows
        lab.reconnect_controller(targets)
        done(store)
        res = client.result()
    assert res["ok"] and res["requests"] == 4000, res
    assert seen == []


def test_deleted_primary_port_fails_over_with_the_redirect(lab):
    store = Store(lab.redis.url)
    client = requests(lab)
    subprocess.run(["ovs-vsctl", "del-port", "s1", "s1-eth3"], check=True)
    svc = done(store)
    assert "deleted on port" in svc["reason"]
    res = client.result()
    assert res["ok"] and res["requests"] == 4000, res
    assert flows_with(lab, "priority=1500", "set_field:10.0.0.20")


def test_no_live_agent_means_no_failover_and_the_primary_keeps_serving(lab):
    """The agent is gone when the primary's link flaps: fencing would cut every
    client off with nobody to take them, so the controller keeps the primary."""
    store = Store(lab.redis.url)
    lab.kill(lab.agent)
    wait_for(lambda: lab.rest("GET", "/ftcp/health")[1]["agents"][0]["status"] != "up", 10,
             "the agent's heartbeat to go stale")
    lab.net.configLinkStatus("p1", "s1", "down")
    wait_for(lambda: events(store, "failover_refused"), 10, "a refused failover")
    lab.net.configLinkStatus("p1", "s1", "up")
    assert store.service("demo")["status"] == "protected"
    assert not flows_with(lab, "priority=3000")
    res = lab.client("c1", "reqresp", PRIMARY_IP, PORT, "--count", 100)
    assert res["ok"], res


def test_agent_killed_and_restarted_rebuilds_its_connections_from_redis(lab):
    """What an idle connection logged before the agent died is taken over after it
    restarts; one that talked while the agent was down is unprotected, with the
    reason, and reset cleanly at the failover instead of replayed from a stale log."""
    store = Store(lab.redis.url)
    # Two connections on c1: A stays idle while the agent is down, B talks.
    client = ScriptedClient(lab, "two-conns")
    try:
        first = client.line().split()
        assert first[:4] == ["PONG", "a0", "PONG", "b0"], first
        ids = [conn_id(port) for port in first[4:6]]
        # the state hash is refreshed at most every --state-ms: wait until it says where
        # each connection is (8 bytes each way), as it does for any connection idle that long
        wait_for(lambda: all([(store.conn("b1", i) or {}).get(f) for f in ("c2s_stored", "s2c_sent", "s2c_acked")]
                             == ["8", "8", "8"] for i in ids), 10, "both connections logged")
        lab.kill(lab.agent)
        assert client.go().split() == ["PONG", "b1"]  # B talks while nobody logs it
        lab.start_agent()
        assert "rebuilt 2 connection(s) from Redis" in (lab.run_dir / "agent.log").read_text()
        assert client.go().split() == ["PONG", "a2", "PONG", "b2"]
        a = wait_for(lambda: (lambda st: st if st and st["restored"] == "0" else None)(store.conn("b1", ids[0])), 10,
                     "A to be seen continuing")
        b = wait_for(lambda: (lambda st: st if st and st["status"] == "unprotected" else None)(
            store.conn("b1", ids[1])),
                     10, "B to be found unprotected")
        assert a["status"] == "protected", a["reason"]
        assert "moved while the agent was down" in b["reason"], b
        lab.fail_primary("link")
        svc = done(store)
        assert json.loads(svc["failed"]).keys() == {ids[1]} and svc["taken"] == "1", svc
        last = client.go().split()
        assert last == ["PONG", "a3", "reset"], last
    finally:
        client.kill()


def test_a_failover_that_fails_resets_the_clients_and_can_be_retried_over_rest(lab):
    """The agent never answers (SIGSTOPped past the 5 s deadline): the service is
    failover-failed, the clients are reset instead of left hanging; once the agent is
    back it acknowledges the abort, and a retry over REST fails the service over."""
    store = Store(lab.redis.url)
    client = ScriptedClient(lab, "ping-until-reset")
    try:
        assert client.line() == "PONG a"
        agent_paused(lab)
        lab.fail_primary("link")
        svc = status(store, "failover-failed", timeout=15)
        assert "did not take over in time" in svc["reason"]
        line = client.line().split()
        assert line[0] in ("ConnectionResetError", "BrokenPipeError"), line   # reset, not a timeout
        agent_resumed(lab)
        wait_for(lambda: (store.service("demo") or {}).get("step") == "aborted", 10, "the agent's aborted")
        wait_for(lambda: lab.rest("GET", "/ftcp/health")[1]["agents"][0]["status"] == "up", 10,
                 "the agent's heartbeat to be fresh again")
        code, body = lab.rest("POST", "/ftcp/services/demo/failover", {"backup": "b1"})
        assert code == 200 and body["epoch"] == int(svc["epoch"]) + 1, body
        wait_for(lambda: (store.service("demo") or {}).get("epoch") == str(body["epoch"]), 5, "the retry's record")
        done(store)
        res = lab.client("c1", "reqresp", PRIMARY_IP, PORT, "--count", 50)
        assert res["ok"], res
    finally:
        client.kill()

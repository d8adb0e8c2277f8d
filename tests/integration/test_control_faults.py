"""ftcp's own parts fail around a failover, for real: ryu-manager is SIGKILLed and
started again, redis-server is killed and restarted on its append-only file, the
switch loses its controller, the primary's port is deleted. Each time the client's
connection survives with every byte checked (its SHA-256s), and no frame from the
backup's own address ever reaches the client (tcpdump on the client host)."""
import json
import subprocess

import pytest

from ftcp.store import Store
from tests.support.faults import (PORT, agent_paused, agent_resumed, backup_frames_seen_by_client, done, events,
                                  flows_with, packets, requests, status, switch_connected)
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
    store = Store(lab.redis.url)
    with backup_frames_seen_by_client(lab) as seen:
        client = requests(lab)
        agent_paused(lab)
        lab.fail_primary("crash")
        fenced = status(store, "failing-over")
        lab.restart_controller(kill=True)
        agent_resumed(lab)
        svc = done(store)
        assert svc["epoch"] == fenced["epoch"]          # the same failover, finished
        res = client.result()
    assert res["ok"] and res["requests"] == 4000, res
    assert seen == []


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
    store = Store(lab.redis.url)
    with backup_frames_seen_by_client(lab) as seen:
        client = requests(lab)
        agent_paused(lab)
        lab.fail_primary("link")
        fenced = status(store, "failing-over")
        lab.restart_redis(down=0.5)
        agent_resumed(lab)
        svc = done(store, timeout=30)
        assert svc["epoch"] == fenced["epoch"]
        res = client.result()
    assert res["ok"] and res["requests"] == 4000, res
    assert seen == []


def test_switch_without_controller_when_ready_comes_gets_go_after_it_reconnects(lab):
    store = Store(lab.redis.url)
    target = subprocess.run(["ovs-vsctl", "get-controller", "s1"], capture_output=True, text=True).stdout.strip()
    with backup_frames_seen_by_client(lab) as seen:
        client = requests(lab)
        agent_paused(lab)
        lab.fail_primary("link")
        status(store, "failing-over")
        subprocess.run(["ovs-vsctl", "del-controller", "s1"], check=True)
        agent_resumed(lab)
        # ready reaches the controller, the redirect has no switch to go to: no go yet
        svc = status(store, "failed-over")
        assert svc["step"] == "redirecting"
        subprocess.run(["ovs-vsctl", "set-controller", "s1", target], check=True)
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

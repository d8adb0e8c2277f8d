"""ftcp's own parts fail around a failover, for real: ryu-manager is SIGKILLed and
started again, redis-server is killed and restarted on its append-only file, the
switch loses its controller, the primary's port is deleted. Each time the client's
connection survives with every byte checked (its SHA-256s), and no frame from the
backup's own address ever reaches the client (tcpdump on the client host)."""
import contextlib
import json
import signal
import subprocess

import pytest

from ftcp.store import Store
from scapy.layers.l2 import Ether

from tests.integration.pcap import frames
from topology.lab import BACKUP_IP, PRIMARY_IP, SERVICES, Lab, wait_for

PORT = 7000


@pytest.fixture
def lab(run_dir):
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir) as lab:
        yield lab


@contextlib.contextmanager
def backup_frames_seen_by_client(lab):
    """tcpdump on c1 for TCP segments whose source is the backup's own address (the
    client would answer them with a RST); yields a list that holds them (one line
    each) once the block ends. The backup's ARP requests for the clients are
    broadcast, and harmless."""
    path = lab.run_dir / "c1-from-backup.pcap"
    proc = lab.host("c1").popen(["tcpdump", "-i", "c1-eth0", "-U", "-n", "-w", str(path), "tcp", "and", "src", "host",
                                 BACKUP_IP],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "listening on" in line, line
    seen = []
    try:
        yield seen
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        seen += [Ether(raw).summary() for raw in frames(path)]


def status(store, want, timeout=15):
    def check():
        svc = store.service("demo") or {}
        return svc if svc.get("status") == want else None
    return wait_for(check, timeout, f"the service to be {want}")


def done(store, timeout=15):
    """failed-over and go acknowledged by the agent."""
    def check():
        svc = store.service("demo") or {}
        if svc.get("status") == "failover-failed":
            pytest.fail(f"failover failed: {svc}")
        return svc if svc.get("status") == "failed-over" and svc.get("step") == "done" else None
    return wait_for(check, timeout, "the failover to finish (gone acknowledged)")


def flows_with(lab, *words):
    return [line for line in lab.flows().splitlines() if all(w in line for w in words)]


def packets(line: str) -> int:
    return int(line.split("n_packets=")[1].split(",")[0])


def events(store, kind):
    return [r for _, r in store.events() if r["kind"] == kind]


def switch_connected():
    return "is_connected: true" in subprocess.run(["ovs-vsctl", "show"], capture_output=True, text=True).stdout


def requests(lab, count=4000):
    client = lab.start_client("c1", "reqresp", PRIMARY_IP, PORT, "--count", count, "--interval", 0.001,
                              "--progress", 0.02)
    client.wait_progress(received=20_000)
    return client


def agent_paused(lab):
    """SIGSTOP the agent: takeover messages wait in its socket (a slow backup)."""
    lab.agent.proc.send_signal(signal.SIGSTOP)


def agent_resumed(lab):
    lab.agent.proc.send_signal(signal.SIGCONT)


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

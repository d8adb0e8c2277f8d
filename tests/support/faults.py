"""Shared by the lab's fault tests: watching the client for the backup's own address,
waiting for a failover's steps in Redis, reading flows, pausing the agent."""
import contextlib
import signal
import subprocess

import pytest
from scapy.layers.l2 import Ether

from ftcp.common.errors import StoreError
from ftcp.common.store import Store
from tests.support.pcap import frames
from topology.lab import BACKUP_IP, PRIMARY_IP, wait_for

PORT = 7000


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


def record(store, name="demo") -> dict:
    """The service's record; {} while Redis does not answer (a restart, or the
    sentinels still agreeing on a new master)."""
    try:
        return store.service(name) or {}
    except StoreError:
        return {}


def status(store, want, timeout=15):
    def check():
        svc = record(store)
        return svc if svc.get("status") == want else None
    return wait_for(check, timeout, f"the service to be {want}")


def failed_over(store, name="demo", timeout=15, step=None) -> dict:
    """The service's record once it is failed-over (at ``step`` too, when given: "done"
    is the agent's gone acknowledged); fails the test at once if the failover failed."""
    def check():
        svc = record(store, name)
        if svc.get("status") == "failover-failed":
            pytest.fail(f"failover of {name} failed: {svc}")
        return svc if svc.get("status") == "failed-over" and step in (None, svc.get("step")) else None
    return wait_for(check, timeout, f"{name} to fail over" + (f" (step {step})" if step else ""))


def done(store, timeout=15):
    """failed-over and go acknowledged by the agent."""
    return failed_over(store, timeout=timeout, step="done")


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


def fault_between_fence_and_ready(lab, failure: str, fault, timeout: float = 15) -> dict:
    """The agent is paused, so the failover waits at the fence; ``fault()`` strikes
    then; the agent resumes. The same failover (epoch) must finish, the client's 4000
    requests all be answered right, and no TCP segment from the backup's own address
    reach it. Returns the service's final record."""
    store = Store(lab.redis.url)
    with backup_frames_seen_by_client(lab) as seen:
        client = requests(lab)
        agent_paused(lab)
        lab.fail_primary(failure)
        fenced = status(store, "failing-over")
        fault()
        agent_resumed(lab)
        svc = done(store, timeout=timeout)
        assert svc["epoch"] == fenced["epoch"]          # the same failover, finished
        res = client.result()
    assert res["ok"] and res["requests"] == 4000, res
    assert seen == []
    return svc


def listed(lab, service: str = "demo") -> list:
    """The service's connections as REST lists them (one row per host's record)."""
    code, page = lab.rest("GET", f"/ftcp/connections?service={service}")
    assert code == 200, page
    return page["connections"]


def roles(lab, service: str = "demo") -> set:
    """(recorded by, serving, protector, status) of each of the service's listed records."""
    return {(c["recorded_by"], c["serving"], c["protector"], c["status"]) for c in listed(lab, service)}

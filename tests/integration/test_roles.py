"""Roles, not hosts: with two backups (Lab(backups=2)), the primary fails and b1 serves
while b2 protects (it keeps its copy of both directions, taken on the client's side of
the switch's rewrite); then b1 fails, and b2 takes the same live connection over. Each
failure is a real one (the server process SIGKILLed); the client checks every byte."""
import json
import subprocess
import time

from ftcp.common.store import Store
from tests.support.faults import PORT, listed, roles
from topology.clients import RunningClient
from topology.lab import PRIMARY_IP, ROOT, SERVICES, Lab, failover_settled, wait_for

REQUESTS = 4000


def record(store, **want) -> dict:
    return wait_for(lambda: (lambda svc: svc if all(svc.get(k) == v for k, v in want.items()) else None)(
        store.service("demo") or {}), 20, f"the service's record to say {want}")


def test_the_serving_hosts_failure_is_masked_whoever_serves(run_dir):
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir, backups=2) as lab:
        store = Store(lab.redis.url)
        client = RunningClient(lab.host("c1"), "reqresp", PRIMARY_IP, PORT, "--count", REQUESTS, "--interval",
                               0.005, "--progress", 0.02)
        client.wait_progress(sent=1)
        wait_for(lambda: roles(lab) == {("b1", "primary", "b1", "protected"), ("b2", "primary", "b2", "protected")},
                 10, "both backups to protect the connection")
        lab.fail_primary("crash")
        record(store, status="protected", serving="b1", step="reprotected", epoch="1")
        assert roles(lab) == {("b1", "b1", None, "unprotected"), ("b2", "b1", "b2", "protected")}, listed(lab)
        code, view = lab.rest("GET", "/ftcp/services/demo")
        assert (view["status"], view["serving"], view["fenced"]) == ("protected", "b1", ["primary"]), view
        lab.fail_host("b1", "crash")
        svc = wait_for(lambda: (lambda s: s if s and s.get("epoch") == "2" else None)(failover_settled(store)), 20,
                       "the second failover to settle")
        assert (svc["status"], svc["backup"], svc["step"]) == ("failed-over", "b2", "done"), svc
        res = client.result()
        assert res["ok"] and res["requests"] == REQUESTS, (res, lab.logs())


def test_a_hundred_connections_through_two_failures_in_a_row(run_dir):
    """The same with 100 connections in PING/PONG loops (bench/many_client.py): every
    answer right, none lost, and every connection answered after the second failover."""
    count = 100
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir, backups=2) as lab:
        store = Store(lab.redis.url)
        proc = lab.host("c1").popen(["python3", str(ROOT / "bench/many_client.py"), PRIMARY_IP, str(PORT),
                                     str(count), "25", "--pause", "20"], stdout=subprocess.PIPE, text=True)
        try:
            assert json.loads(proc.stdout.readline())["opened"] == count
            wait_for(lambda: all(len(store.service_conns("demo", b)) >= count for b in ("b1", "b2")), 30,
                     "both backups to record every connection")
            lab.fail_primary("crash")
            record(store, status="protected", serving="b1", step="reprotected", epoch="1")
            lab.fail_host("b1", "crash")
            wait_for(lambda: (lambda s: s if s and s.get("epoch") == "2" else None)(failover_settled(store)), 20,
                     "the second failover to settle")
            second = time.time()
            result = json.loads(proc.stdout.read().strip().splitlines()[-1])
            proc.wait(30)
        finally:
            proc.kill()
        assert result["ok"] and result["errors"] == [], result["errors"]
        late = [i for i, answers in enumerate(result["answers"]) if not answers or answers[-1] < second]
        assert late == [], f"connections with no answer after the second failover: {late}"

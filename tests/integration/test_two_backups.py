"""A service with two backups (Lab(backups=2): b1, then b2): both agents keep a record
of every connection, each in its own namespace, and a failover goes to the first live
one. A dead first backup (its agent SIGKILLed) is passed over: the failover goes to b2,
masked byte-exact, and nothing is left to protect the service (tests/integration/
test_roles.py has b2 protecting what b1 serves)."""
from ftcp.common.store import Store
from tests.support.faults import PORT, done, listed, roles
from topology.clients import RunningClient
from topology.lab import PRIMARY_IP, SERVICES, Lab, wait_for

REQUESTS = 3000


def lab_with_two_backups(run_dir):
    return Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir, backups=2)


def client_logged_by_both(lab) -> RunningClient:
    client = RunningClient(lab.host("c1"), "reqresp", PRIMARY_IP, PORT, "--count", REQUESTS, "--interval", 0.005,
                           "--progress", 0.02)
    client.wait_progress(sent=1)
    wait_for(lambda: roles(lab) == {("b1", "primary", "b1", "protected"), ("b2", "primary", "b2", "protected")},
             10, "both backups to keep a protected record of the connection")
    return client


def test_a_dead_first_backup_is_passed_over_and_the_failover_masked(run_dir):
    with lab_with_two_backups(run_dir) as lab:
        store = Store(lab.redis.url)
        client = client_logged_by_both(lab)
        lab.kill(lab.agents["b1"])                      # the first protector dies
        wait_for(lambda: {a["name"]: a["status"] for a in lab.rest("GET", "/ftcp/health")[1]["agents"]}["b1"]
                 != "up", 10, "the controller to see b1's agent gone")
        lab.fail_primary("crash")
        svc = done(store)
        assert svc["backup"] == "b2", svc
        res = client.result()
        assert res["ok"] and res["requests"] == REQUESTS, (res, lab.logs())
        assert (store.service("demo") or {}).get("status") == "failed-over"   # no live backup left to protect it
        # b1's agent is dead and wrote nothing: its record is still not reported protected
        assert roles(lab) == {("b1", "b2", None, "unprotected"), ("b2", "b2", None, "unprotected")}, listed(lab)

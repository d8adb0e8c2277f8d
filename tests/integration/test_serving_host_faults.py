"""After a failover the backup serves: a fault on it ends every taken-over connection
with a RST, never a FIN (a FIN tells a client without framing of its own that it has
everything). Each fault is injected for real on b1 while a client on c1 pings through
the failover: its server process SIGKILLed, its agent SIGKILLed, its agent stopped
(SIGTERM, as an operator's restart does). The client tells how its connection ended
(tests/support/scripted_client.py ``pings-until-end``)."""
import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ftcp.common.store import Store
from tests.support.faults import PORT, done
from tests.support.held_client import ScriptedClient
from topology.lab import SERVICES, Lab, wait_for


@pytest.fixture
def lab(run_dir):
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir) as lab:
        yield lab


def failed_over_with_a_pinging_client(lab):
    client = ScriptedClient(lab, "pings-until-end")
    assert client.line() == "PONG a"
    lab.fail_primary("crash")
    done(Store(lab.redis.url))
    return client


def listed(lab) -> list:
    code, page = lab.rest("GET", "/ftcp/connections?service=demo")
    assert code == 200, page
    return page["connections"]


def test_a_taken_over_connection_is_not_reported_protected(lab):
    client = failed_over_with_a_pinging_client(lab)
    try:
        conn, = wait_for(lambda: [c for c in listed(lab) if c["status"] != "protected"] or None, 5,
                         "the taken-over connection's record to say it is unprotected")
        assert conn["status"] == "unprotected"
        assert conn["reason"] == "taken over: b1 serves it now and no host protects it", conn
        code, metrics = lab.rest("GET", "/metrics")
        unprotected = {s.labels["reason"]: s.value for f in text_string_to_metric_families(metrics)
                       if f.name == "ftcp_unprotected_connections" for s in f.samples if s.labels["service"] == "demo"}
        assert unprotected == {"taken_over": 1.0}
    finally:
        client.kill()


FAULTS = {
    "server killed": lambda lab: lab.kill_services("b1", signal.SIGKILL),
    "agent killed": lambda lab: lab.kill(lab.agent),
    "agent stopped": lambda lab: lab.stop_agent(),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_on_the_serving_host_resets_its_taken_over_connections(lab, fault):
    client = failed_over_with_a_pinging_client(lab)
    try:
        FAULTS[fault](lab)
        ended = client.line().split()
        assert ended[0] == "reset", f"after the {fault}, the client's connection ended with {ended}"
    finally:
        client.kill()

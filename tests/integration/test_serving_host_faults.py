"""After a failover the backup serves. What happens on it must never cut a taken-over
connection silently, and the agent's own faults must not cut one at all:

* its server process SIGKILLed: every taken-over connection ends with a RST, never a
  FIN (a FIN tells a client without framing of its own that it has everything);
* its agent SIGKILLed, or stopped and started again (an operator's restart): the relay
  (ftcp/agent/relay.py, a process of its own) holds the connections, which go on;
* the same without a relay: the agent relays them itself, and they end with a RST.

A client on c1 pings through the failover and the fault, every answer checked
(tests/support/scripted_client.py ``pings-steadily``); it tells how its connection
ended, or that it is still alive after 10 more answers."""
import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ftcp.common.store import Store
from tests.support.faults import PORT, done, listed
from tests.support.held_client import ScriptedClient
from topology.lab import SERVICES, Lab, wait_for


def lab_with(run_dir, **kw):
    return Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir, **kw)


def failed_over_with_a_pinging_client(lab):
    client = ScriptedClient(lab, "pings-steadily")
    assert client.line() == "PONG a"
    lab.fail_primary("crash")
    done(Store(lab.redis.url))
    assert client.go().split()[0] == "alive"
    return client


def test_a_taken_over_connection_is_not_reported_protected(run_dir):
    with lab_with(run_dir) as lab:
        client = failed_over_with_a_pinging_client(lab)
        try:
            conn, = wait_for(lambda: [c for c in listed(lab) if c["status"] != "protected"] or None, 5,
                             "the taken-over connection's record to say it is unprotected")
            assert conn["status"] == "unprotected"
            assert conn["reason"] == "taken over: b1 serves it now and no host protects it", conn
            assert (conn["recorded_by"], conn["serving"], conn["protector"]) == ("b1", "b1", None), conn
            code, metrics = lab.rest("GET", "/metrics")
            unprotected = {s.labels["reason"]: s.value for f in text_string_to_metric_families(metrics)
                           if f.name == "ftcp_unprotected_connections" for s in f.samples
                           if s.labels["service"] == "demo"}
            assert unprotected == {"taken_over": 1.0}
        finally:
            client.kill()


@pytest.mark.parametrize("relay", [True, False], ids=["relay", "no relay"])
def test_the_serving_hosts_server_dying_resets_its_taken_over_connections(run_dir, relay):
    with lab_with(run_dir, relay=relay) as lab:
        client = failed_over_with_a_pinging_client(lab)
        try:
            lab.kill_services("b1", signal.SIGKILL)
            ended = client.go().split()
            assert ended[0] == "reset", f"after b1's server died, the connection ended with {ended}"
        finally:
            client.kill()


AGENT_FAULTS = {
    "killed": lambda lab: lab.kill(lab.agent),
    "stopped": lambda lab: lab.stop_agent(),
}


@pytest.mark.parametrize("fault", list(AGENT_FAULTS))
def test_taken_over_connections_outlive_their_agent(run_dir, fault):
    with lab_with(run_dir) as lab:
        client = failed_over_with_a_pinging_client(lab)
        try:
            AGENT_FAULTS[fault](lab)
            assert client.go().split()[0] == "alive", f"the agent {fault} cut the connection"
            lab.start_agent()                                   # and its restart does not either
            assert client.go().split()[0] == "alive"
            assert [c["status"] for c in listed(lab)] == ["unprotected"]
        finally:
            client.kill()


@pytest.mark.parametrize("fault", list(AGENT_FAULTS))
def test_without_a_relay_the_agents_end_resets_its_taken_over_connections(run_dir, fault):
    with lab_with(run_dir, relay=False) as lab:
        client = failed_over_with_a_pinging_client(lab)
        try:
            AGENT_FAULTS[fault](lab)
            ended = client.go().split()
            assert ended[0] == "reset", f"the agent {fault}: the connection ended with {ended}"
        finally:
            client.kill()

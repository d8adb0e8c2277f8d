"""After a failover the backup serves: a fault on it ends every taken-over connection
with a RST, never a FIN (a FIN tells a client without framing of its own that it has
everything). Each fault is injected for real on b1 while a client on c1 pings through
the failover: its server process SIGKILLed, its agent SIGKILLed, its agent stopped
(SIGTERM, as an operator's restart does). The client tells how its connection ended
(tests/support/scripted_client.py ``pings-until-end``)."""
import signal

import pytest

from ftcp.common.store import Store
from tests.support.faults import PORT, done
from tests.support.held_client import ScriptedClient
from topology.lab import SERVICES, Lab


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

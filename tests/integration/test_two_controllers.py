"""Two ryu-manager instances on the same switch (OpenFlow master/slave roles, the lease
in Redis): the master is SIGKILLed mid-stream, or in the middle of a failover, and
the other one takes over; the client's bytes stay exact."""
import pytest

from ftcp.common.store import Store
from tests.support.faults import (PORT, backup_frames_seen_by_client, done, events, fault_between_fence_and_ready,
                                  requests)
from topology.lab import SERVICES, Lab, wait_for


@pytest.fixture
def lab(run_dir):
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir, controllers=2) as lab:
        yield lab


def new_master(lab, store, old):
    """Wait for the other controller to hold the lease and claim the switch."""
    master = wait_for(lambda: (lambda m: m if m is not old else None)(lab.master()), 10, "another master")
    wait_for(lambda: len(events(store, "controller_master")) >= 2, 10, "the new master to claim the switch")
    return master


def test_master_killed_mid_stream_the_standby_takes_over_and_a_failover_after_it_is_masked(lab):
    store = Store(lab.redis.url)
    first = lab.master()
    with backup_frames_seen_by_client(lab) as seen:
        client = requests(lab, count=5000)
        lab.kill(first)
        new_master(lab, store, first)
        lab.fail_primary("link")
        svc = done(store)
        res = client.result()
    assert res["ok"] and res["requests"] == 5000, res
    assert svc["taken"] == "1"
    assert seen == []


def test_master_killed_during_a_failover_the_standby_finishes_it(lab):
    store = Store(lab.redis.url)
    first = lab.master()

    def kill_the_master():
        lab.kill(first)
        new_master(lab, store, first)
    fault_between_fence_and_ready(lab, "crash", kill_the_master)


def test_the_standby_refuses_changes_over_rest(lab):
    master = lab.master()
    standby = next(ryu for ryu in lab.ryus if ryu is not master)
    lab.wsapi_port = standby.wsapi_port
    code, body = lab.rest("POST", "/ftcp/services/demo/failover", {"backup": "b1"})
    assert code == 503 and "standby" in body["error"], body


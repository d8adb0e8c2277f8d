"""Redis with Sentinel in the lab (a master, a replica, three sentinels): the master
is SIGKILLed mid-stream and during a failover; the sentinels promote the replica,
the controller and the agent follow it, nothing protected is lost and the client's
bytes stay exact."""
import pytest

from ftcp.common.errors import StoreError
from ftcp.common.store import Store
from tests.support.faults import PORT, done, fault_between_fence_and_ready, requests
from topology.lab import SERVICES, Lab, wait_for


@pytest.fixture
def lab(run_dir):
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir, sentinel=True) as lab:
        yield lab


def only_conn(store):
    """The one connection's record, once Redis answers (the sentinels may still be
    agreeing on the new master for a moment after the switch)."""
    def read():
        try:
            conns = [c for c in (store.conn("b1", i) for i in store.service_conns("demo", "b1")) if c]
        except StoreError:
            return None
        assert len(conns) == 1, conns
        return conns[0]
    return wait_for(read, 10, "the connection's record")


def test_redis_master_killed_mid_stream_loses_nothing_and_a_failover_after_it_is_masked(lab):
    store = Store(lab.redis.url)
    client = requests(lab, count=5000)
    old = lab.redis.master().port
    assert lab.redis.fail_master() != old
    before = only_conn(store)
    # the agent goes on logging into the promoted replica: the log grows, still protected
    wait_for(lambda: int(only_conn(store)["c2s_stored"]) > int(before["c2s_stored"]), 15,
             "the log to grow in the new master")
    assert only_conn(store)["status"] == "protected", only_conn(store)["reason"]
    lab.fail_primary("link")
    svc = done(store, timeout=20)
    res = client.result()
    assert res["ok"] and res["requests"] == 5000, res
    assert svc["taken"] == "1"


def test_redis_master_killed_during_a_failover_the_failover_completes(lab):
    fault_between_fence_and_ready(lab, "crash", lab.redis.fail_master, timeout=20)

"""The failover state machine: order of actions, epochs, timeouts."""
from ftcp.failover import (FAILED, FAILED_OVER, FENCED, PROTECTED, Fence, Go, Record, Redirect, RequestTakeover,
                           ServiceFailover)


def kinds(actions):
    return [type(a).__name__ for a in actions]


def test_fence_before_takeover_then_redirect_before_go():
    f = ServiceFailover("web", ("b1",), epoch=4)
    acts = f.fail("link down", now=10.0)
    assert kinds(acts) == ["Fence", "Record", "RequestTakeover"]
    assert acts[2] == RequestTakeover("web", "b1", 5) and f.status == FENCED
    acts = f.ready(5, "b1", ["c1"], {}, now=10.02)
    assert kinds(acts) == ["Redirect", "Go", "Record"]
    assert acts[0] == Redirect("web", "b1") and acts[1] == Go("web", "b1", 5)
    assert acts[2].status == FAILED_OVER and acts[2].detail["takeover_seconds"] == 0.02
    assert f.status == FAILED_OVER


def test_second_failure_during_failover_does_nothing():
    f = ServiceFailover("web", ("b1",))
    f.fail("link down", now=0.0)
    assert f.fail("link down again", now=0.01) == [] and f.epoch == 1


def test_stale_or_foreign_ready_never_redirects():
    f = ServiceFailover("web", ("b1", "b2"), epoch=1)
    f.fail("probe", now=0.0)
    assert f.ready(1, "b1", [], {}, now=0.1) == []      # epoch of an earlier failover
    assert f.ready(2, "b2", [], {}, now=0.1) == []      # not the backup asked
    assert kinds(f.ready(2, "b1", [], {}, now=0.1))[0] == "Redirect"
    assert f.ready(2, "b1", [], {}, now=0.2) == []      # duplicate


def test_no_ready_in_time_fails_and_a_late_ready_is_ignored():
    f = ServiceFailover("web", ("b1",))
    f.fail("probe", now=0.0, timeout=2.0)
    assert f.tick(1.9) == []
    acts = f.tick(2.0)
    assert kinds(acts) == ["Record"] and acts[0].status == FAILED and "did not take over" in acts[0].detail["reason"]
    assert f.ready(1, "b1", [], {}, now=2.5) == []


def test_no_backup():
    f = ServiceFailover("web", ())
    acts = f.fail("link down", now=0.0)
    assert kinds(acts) == ["Record"] and acts[0].status == FAILED and f.status == PROTECTED


def test_named_backup():
    f = ServiceFailover("web", ("b1", "b2"))
    acts = f.fail("manual", now=0.0, backup="b2")
    assert acts[0] == Fence("web") and acts[2] == RequestTakeover("web", "b2", 1)
    assert isinstance(acts[1], Record)

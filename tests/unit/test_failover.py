"""The failover state machine: order of steps, epochs, acknowledgements, retries,
deadlines and what a restarted controller carries on with."""
from ftcp.controller.failover import Record, Refused, Order, ServiceFailover, SyncFlows
from ftcp.common.statuses import ServiceStatus


def kinds(actions):
    return [type(a).__name__ for a in actions]


def sent(actions):
    return [(a.message["cmd"], a.message["epoch"], a.backup) for a in actions if isinstance(a, Order)]


def test_fence_before_takeover_then_redirect_before_go():
    f = ServiceFailover("web", ("b1",), epoch=4)
    acts = f.fail("link down", now=10.0)
    assert kinds(acts) == ["Record", "SyncFlows"] and acts[1] == SyncFlows("web", "fenced", 5)
    assert f.status == ServiceStatus.FAILING_OVER
    assert acts[0].status == ServiceStatus.FAILING_OVER and acts[0].epoch == 5
    # nothing goes to the agent before the switches confirm the fence
    assert sent(f.confirmed("fenced", 5, now=10.001)) == [("takeover", 5, "b1")]
    acts = f.reply("ready", 5, "b1", now=10.02, detail={"taken": ["c1"], "failed": {}})
    assert kinds(acts) == ["Record", "SyncFlows"] and acts[1] == SyncFlows("web", "redirected", 5)
    assert acts[0].status == ServiceStatus.FAILED_OVER and acts[0].detail["takeover_seconds"] == 0.02
    assert acts[0].detail["taken"] == 1
    assert sent(f.confirmed("redirected", 5, now=10.021)) == [("go", 5, "b1")]
    acts = f.reply("gone", 5, "b1", now=10.022, detail={"acknowledged": 1})
    assert kinds(acts) == ["Record"] and acts[0].detail["step"] == "done" and f.step == "done"


def test_unacknowledged_messages_are_resent_until_the_answer():
    f = ServiceFailover("web", ("b1",), retry=0.25, timeout=5.0)
    f.fail("probe", now=0.0)
    f.confirmed("fenced", 1, now=0.0)
    assert f.tick(0.2) == []
    assert sent(f.tick(0.25)) == [("takeover", 1, "b1")]
    assert sent(f.tick(0.5)) == [("takeover", 1, "b1")]
    f.reply("ready", 1, "b1", now=0.6)
    assert f.tick(0.9) == []            # ready stopped the takeover's resends
    f.confirmed("redirected", 1, now=0.7)
    assert sent(f.tick(0.95)) == [("go", 1, "b1")]
    f.reply("gone", 1, "b1", now=1.0)
    assert f.tick(2.0) == []


def test_go_never_acknowledged_is_recorded_not_resent_forever():
    f = ServiceFailover("web", ("b1",), retry=0.25, timeout=1.0)
    f.fail("probe", now=0.0)
    f.confirmed("fenced", 1, now=0.0)
    f.reply("ready", 1, "b1", now=0.1)
    f.confirmed("redirected", 1, now=0.1)
    acts = f.tick(1.1)
    assert kinds(acts) == ["Record"] and acts[0].detail["step"] == "go-unacknowledged"
    assert f.tick(5.0) == []


def test_a_confirmation_of_another_step_or_epoch_does_nothing():
    f = ServiceFailover("web", ("b1",))
    f.fail("probe", now=0.0)
    assert f.confirmed("redirected", 1, now=0.0) == []
    assert f.confirmed("fenced", 0, now=0.0) == []
    assert sent(f.confirmed("fenced", 1, now=0.0)) == [("takeover", 1, "b1")]
    assert f.confirmed("fenced", 1, now=0.0) == []     # a second barrier reply


def test_second_failure_during_failover_does_nothing():
    f = ServiceFailover("web", ("b1",))
    f.fail("link down", now=0.0)
    assert f.fail("link down again", now=0.01) == [] and f.epoch == 1


def test_stale_or_foreign_ready_never_redirects():
    f = ServiceFailover("web", ("b1", "b2"), epoch=1)
    f.fail("probe", now=0.0)
    assert f.reply("ready", 2, "b1", now=0.05) == []   # before the takeover was even sent
    f.confirmed("fenced", 2, now=0.0)
    assert f.reply("ready", 1, "b1", now=0.1) == []    # epoch of an earlier failover
    assert f.reply("ready", 2, "b2", now=0.1) == []    # not the backup asked
    assert f.reply("gone", 2, "b1", now=0.1) == []     # not what is awaited
    assert kinds(f.reply("ready", 2, "b1", now=0.1)) == ["Record", "SyncFlows"]
    assert f.reply("ready", 2, "b1", now=0.2) == []    # duplicate


def test_no_ready_in_time_fails_redirects_and_aborts():
    f = ServiceFailover("web", ("b1",), timeout=2.0)
    f.fail("probe", now=0.0)
    f.confirmed("fenced", 1, now=0.0)
    assert f.tick(1.9) and f.status == ServiceStatus.FAILING_OVER         # a resend, still waiting
    acts = f.tick(2.0)
    assert kinds(acts) == ["Record", "SyncFlows"] and acts[0].status == ServiceStatus.FAILOVER_FAILED
    assert "did not take over" in acts[0].detail["reason"] and f.status == ServiceStatus.FAILOVER_FAILED
    assert f.reply("ready", 1, "b1", now=2.5) == []
    assert sent(f.confirmed("redirected", 1, now=2.6)) == [("abort", 1, "b1")]
    assert kinds(f.reply("aborted", 1, "b1", now=2.7)) == ["Record"] and f.step == "aborted"


def test_failed_is_retried_only_when_asked():
    f = ServiceFailover("web", ("b1",), timeout=1.0)
    f.fail("probe", now=0.0)
    f.tick(1.0)
    assert f.fail("link down", now=2.0) == [] and f.status == ServiceStatus.FAILOVER_FAILED
    acts = f.fail("retry over REST", now=3.0, retry=True)
    assert f.status == ServiceStatus.FAILING_OVER and f.epoch == 2 and kinds(acts) == ["Record", "SyncFlows"]


def test_no_live_agent_refuses_and_keeps_the_primary():
    f = ServiceFailover("web", ("b1", "b2"))
    acts = f.fail("link down", now=0.0, alive=lambda name: False)
    assert kinds(acts) == ["Refused"] and f.status == ServiceStatus.PROTECTED and f.epoch == 0
    assert "no live backup agent" in acts[0].reason


def test_the_first_live_backup_is_chosen():
    f = ServiceFailover("web", ("b1", "b2"))
    f.fail("link down", now=0.0, alive=lambda name: name == "b2")
    assert f.backup == "b2"


def test_no_backup():
    acts = ServiceFailover("web", ()).fail("link down", now=0.0)
    assert acts == [Refused("web", "link down; no backup: the primary keeps the service")]


def test_named_backup():
    f = ServiceFailover("web", ("b1", "b2"))
    f.fail("manual", now=0.0, backup="b2")
    assert sent(f.confirmed("fenced", 1, now=0.0)) == [("takeover", 1, "b2")]


def test_restored_states():
    def restore(**record):
        return ServiceFailover.restored("web", ("b1",), record, now=50.0, timeout=5.0)
    f, acts = restore(status="protected", epoch="3")
    assert (f.status, f.epoch, acts) == (ServiceStatus.PROTECTED, 3, [])
    f, acts = restore(status="failing-over", epoch="3", backup="b1", step="takeover")
    assert f.status == ServiceStatus.FAILING_OVER and f.deadline == 55.0 and acts == [SyncFlows("web", "fenced", 3)]
    assert sent(f.confirmed("fenced", 3, now=50.1)) == [("takeover", 3, "b1")]
    f, acts = restore(status="failed-over", epoch="3", backup="b1", step="go")
    assert f.status == ServiceStatus.FAILED_OVER and acts == [SyncFlows("web", "redirected", 3)]
    assert sent(f.confirmed("redirected", 3, now=50.1)) == [("go", 3, "b1")]
    f, acts = restore(status="failed-over", epoch="3", backup="b1", step="done")
    assert f.status == ServiceStatus.FAILED_OVER and acts == [] and f.fail("again", now=51.0) == []
    f, acts = restore(status="failover-failed", epoch="3", backup="b1", step="aborting")
    assert f.status == ServiceStatus.FAILOVER_FAILED and acts == [SyncFlows("web", "redirected", 3)]
    f, acts = restore(status="failed-over", epoch="x")    # garbage: protected, epoch 0
    assert (f.status, f.epoch) == (ServiceStatus.PROTECTED, 0)


def test_records_carry_the_step():
    f = ServiceFailover("web", ("b1",))
    rec = f.fail("probe", now=0.0)[0]
    assert isinstance(rec, Record) and rec.detail["step"] == "fencing" and rec.detail["backup"] == "b1"

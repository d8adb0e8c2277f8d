"""How a takeover takes each connection (ftcp/agent/coordinator.py plan_takeover,
log_short; pure): a hot replica fed every logged byte becomes a session as it is; one
that fell behind is replayed cold from the log; a diverged replica or an unprotected,
non-established or not-yet-confirmed connection is refused, and reset if it is open;
a cold replay needs every logged byte in Redis."""
from types import SimpleNamespace

import pytest

from ftcp.agent import coordinator as co

MASK = 0xFFFFFFFF


class Sock:
    closed = False

    def close(self):
        self.closed = True


def conn(cid="c1", status="protected", state="established", logged=10, **kw):
    fields = dict(id=cid, status=status, reason="", state=state, restored=False, fin_c=False, fin_s=False, rst=False,
                  c2s_next=1000 + logged, fin_c_seq=None, c2s_logged=logged, s2c_sent=20)
    fields.update(kw)
    return SimpleNamespace(to_state=lambda: {"id": cid, "s2c_acked": 5, "state": fields["state"]}, **fields)


def replica(fed=10, unsent=b"", diverged=None):
    return SimpleNamespace(sock=Sock(), fed=fed, unsent=unsent, diverged=diverged, tail_start=0, tail=b"",
                           checks=())


@pytest.fixture(autouse=True)
def params(monkeypatch):
    monkeypatch.setattr(co.repair, "repair_params", lambda state, ip, logged, fin: ("params", state["id"], logged, fin))


def test_a_hot_replica_fed_every_logged_byte_is_taken_as_it_is():
    d = replica(fed=7, unsent=b"abc")
    hot, cold, failed, resets = co.plan_takeover([conn()], {"c1": d}, "10.0.0.20")
    s, = hot
    assert (s.conn_id, s.replica, bytes(s.to_replica), s.client_acked, cold, failed, resets) == (
        "c1", d.sock, b"abc", 5, [], {}, {})
    assert not d.sock.closed


def test_a_replica_behind_the_log_is_closed_and_the_connection_replayed_cold():
    d = replica(fed=6)
    hot, cold, failed, resets = co.plan_takeover([conn()], {"c1": d}, "10.0.0.20")
    assert hot == [] and d.sock.closed and (failed, resets) == ({}, {})
    assert [(j.conn_id, j.logged, j.sent, j.fin) for j in cold] == [("c1", 10, 20, False)]


def test_no_replica_at_all_is_a_cold_replay():
    hot, cold, failed, _ = co.plan_takeover([conn()], {}, "10.0.0.20")
    assert hot == [] and [j.conn_id for j in cold] == ["c1"] and failed == {}


def test_a_diverged_replica_is_never_replayed_the_client_is_reset():
    d = replica(diverged="diverged: at server byte 7")
    hot, cold, failed, resets = co.plan_takeover([conn()], {"c1": d}, "10.0.0.20")
    assert (hot, cold, failed) == ([], [], {"c1": "diverged: at server byte 7"}) and d.sock.closed
    assert resets == {"c1": {"id": "c1", "s2c_acked": 5, "state": "established"}}


@pytest.mark.parametrize("kw, why", [
    (dict(status="unprotected", reason="capture gap: x"), "unprotected: capture gap: x"),
    (dict(state="syn_received"), "state syn_received"),
    (dict(restored=True), "not seen since the agent restarted: its stored state may be stale"),
])
def test_what_cannot_be_taken_is_refused_and_its_open_client_reset(kw, why):
    hot, cold, failed, resets = co.plan_takeover([conn(**kw)], {}, "10.0.0.20")
    assert (hot, cold, failed, list(resets)) == ([], [], {"c1": why}, ["c1"])


def test_a_closed_connection_is_refused_without_a_reset():
    _, _, failed, resets = co.plan_takeover([conn(state="closed")], {}, "10.0.0.20")
    assert failed == {"c1": "state closed"} and resets == {}


def test_a_client_half_close_after_every_logged_byte_is_taken():
    c = conn(state="closing", fin_c=True, fin_c_seq=1009, c2s_next=1010)
    _, cold, failed, _ = co.plan_takeover([c], {}, "10.0.0.20")
    assert failed == {} and [j.fin for j in cold] == [True]


def test_a_cold_replay_needs_every_logged_byte_in_redis():
    job = co.ColdJob("c1", {}, logged=10, sent=20)
    assert co.log_short(job, b"x" * 10) is None
    assert co.log_short(job, b"x" * 9) == "takeover failed: the log in Redis has 9 bytes, the tracker 10"

"""At go, the connections the agent took are no longer protected (nothing mirrors them to
anyone), and the ones it could not take say why: REST and /metrics never call them
protected."""
import threading
import time
from types import SimpleNamespace

from ftcp.agent import coordinator as co
from ftcp.agent.takeover import Session
from ftcp.common.statuses import Reason


class Sock:
    def close(self):
        pass

    def fileno(self):
        return -1


class Tracker:
    def __init__(self, conns):
        self.conns = {c.id: c for c in conns}
        self.marked = {}

    def embryonic(self, conn):
        return False

    def mark_unprotected(self, conn, reason):
        self.marked[conn.id] = reason


def test_go_unprotects_what_it_took_and_says_why_the_rest_was_not(monkeypatch):
    conns = [SimpleNamespace(id=i, service=svc) for i, svc in (("a", "web"), ("b", "web"), ("c", "web"),
                                                                 ("d", "db"))]
    taken = Session("a", None, 0, Sock())
    taken.client = Sock()
    monkeypatch.setattr(co, "plan_takeover", lambda cs, d, ip: ([taken], [], {"b": "takeover failed: x"}, {}))
    monkeypatch.setattr(co, "prepare_sessions", lambda sessions, timeout: None)
    monkeypatch.setattr(co.repair, "reset_params", lambda state, ip: None)
    monkeypatch.setattr(Session, "kick", lambda self, acks: True)
    answers, spliced = [], []
    tracker = Tracker(conns)
    agent = SimpleNamespace(name="b1", replicas={"web": ("10.0.0.20", 80)}, drain=lambda: None,
                            check_drops=lambda: None, clock=time.monotonic, hot=None, tracker=tracker,
                            writer=SimpleNamespace(collect=lambda now: None, snapshot_all=lambda now: None),
                            acks=None, splicer=SimpleNamespace(add=spliced.extend), relay=None,
                            args=SimpleNamespace(prepare_timeout=1.0),
                            store=SimpleNamespace(answer=lambda backup, msg: answers.append(msg)))
    monkeypatch.setattr(co, "cannot_take", lambda conn: None)
    for conn in conns:
        conn.to_state = lambda: {}
    c = co.Coordinator(agent)
    c.takeover("web", 1, "1@x")
    for t in threading.enumerate():
        if t.name.startswith("ftcp-takeover-"):
            t.join(5)
            assert not t.is_alive()
    assert answers[-1]["cmd"] == "ready" and tracker.marked == {}    # nothing changes before go
    c.go("web", 1, "1@x")
    assert answers[-1]["cmd"] == "gone" and spliced == [taken]
    assert tracker.marked == {"a": Reason.TAKEN_OVER.because("b1 serves it now and no host protects it"),
                              "b": "takeover failed: x"}


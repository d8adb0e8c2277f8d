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


def test_go_says_the_sessions_are_taken_over_before_it_hands_them_to_the_relay(monkeypatch):
    """Whatever the hand-over does (it may take a while, or fail, or the relay refuse a
    session and reset it), the connections are the backup's from go on: their records
    say so before it, not after."""
    conns = [SimpleNamespace(id="a", service="web", to_state=lambda: {})]
    taken = Session("a", None, 0, Sock())
    taken.client = Sock()
    tracker = Tracker(conns)
    seen = []

    class Relay:
        def hand_over(self, sessions):
            seen.append(dict(tracker.marked))
            return []
    monkeypatch.setattr(co, "plan_takeover", lambda cs, d, ip: ([taken], [], {}, {}))
    monkeypatch.setattr(co, "prepare_sessions", lambda sessions, timeout: None)
    monkeypatch.setattr(co, "cannot_take", lambda conn: None)
    monkeypatch.setattr(Session, "kick", lambda self, acks: True)
    answers = []
    agent = SimpleNamespace(name="b1", replicas={"web": ("10.0.0.20", 80)}, drain=lambda: None,
                            check_drops=lambda: None, clock=time.monotonic, hot=None, tracker=tracker,
                            writer=SimpleNamespace(collect=lambda now: None, snapshot_all=lambda now: None),
                            acks=None, splicer=SimpleNamespace(add=lambda s: None), relay=Relay(),
                            args=SimpleNamespace(prepare_timeout=1.0),
                            store=SimpleNamespace(answer=lambda backup, msg: answers.append(msg)))
    c = co.Coordinator(agent)
    c.takeover("web", 1, "1@x")
    for t in threading.enumerate():
        if t.name.startswith("ftcp-takeover-"):
            t.join(5)
    c.go("web", 1, "1@x")
    join_handovers()
    assert seen == [{"a": Reason.TAKEN_OVER.because("b1 serves it now and no host protects it")}]
    assert answers[-1]["cmd"] == "gone"


def join_handovers():
    for t in threading.enumerate():
        if t.name.startswith("ftcp-handover-"):
            t.join(5)
            assert not t.is_alive()


def test_the_hand_over_runs_off_the_capture_thread_and_gone_follows_it(monkeypatch):
    """Handing sessions to the relay takes as long as the relay takes to read them (a
    relay that reads nothing: its timeout): go, on the capture thread, does not wait
    for it. Kick, then hand over, then gone: a go repeated meanwhile answers nothing."""
    conns = [SimpleNamespace(id="a", service="web", to_state=lambda: {}),
             SimpleNamespace(id="b", service="web", to_state=lambda: {})]
    taken = [Session(i, None, 0, Sock()) for i in ("a", "b")]
    for s in taken:
        s.client = Sock()
    release, order = threading.Event(), []

    class Relay:
        def hand_over(self, sessions):
            order.append("hand over")
            release.wait(5)
            return sessions[1:]          # b could not be given: relayed by the agent
    monkeypatch.setattr(co, "plan_takeover", lambda cs, d, ip: (list(taken), [], {}, {}))
    monkeypatch.setattr(co, "prepare_sessions", lambda sessions, timeout: None)
    monkeypatch.setattr(co, "cannot_take", lambda conn: None)
    monkeypatch.setattr(Session, "kick", lambda self, acks: order.append("kick") or True)
    answers, spliced = [], []
    agent = SimpleNamespace(name="b1", replicas={"web": ("10.0.0.20", 80)}, drain=lambda: None,
                            check_drops=lambda: None, clock=time.monotonic, hot=None, tracker=Tracker(conns),
                            writer=SimpleNamespace(collect=lambda now: None, snapshot_all=lambda now: None),
                            acks=None, splicer=SimpleNamespace(add=spliced.extend), relay=Relay(),
                            args=SimpleNamespace(prepare_timeout=1.0),
                            store=SimpleNamespace(answer=lambda backup, msg: answers.append(msg) or
                                                  order.append(msg["cmd"])))
    c = co.Coordinator(agent)
    c.takeover("web", 1, "1@x")
    for t in threading.enumerate():
        if t.name.startswith("ftcp-takeover-"):
            t.join(5)
    started = time.monotonic()
    c.go("web", 1, "1@x")
    assert time.monotonic() - started < 1 and answers[-1]["cmd"] == "ready"
    c.go("web", 1, "1@x")                                # the controller resends go meanwhile
    assert answers[-1]["cmd"] == "ready" and len(answers) == 1
    release.set()
    join_handovers()
    assert order == ["ready", "kick", "kick", "hand over", "gone"]
    assert spliced == taken[1:] and answers[-1]["released"] == 2
    c.go("web", 1, "1@x")                                # and after it, gone again
    assert [a["cmd"] for a in answers] == ["ready", "gone", "gone"]


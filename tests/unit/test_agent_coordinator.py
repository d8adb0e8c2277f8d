"""The agent's coordinator: one takeover per service and epoch (and failover id),
answered whatever happens; sessions that never go leave with a RST (abort) or
silently (superseded by a newer takeover of the same connections)."""
import threading
import time
from types import SimpleNamespace

import pytest

from ftcp.agent import coordinator as co
from ftcp.agent.takeover import Session


class Sock:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True

    def fileno(self):
        return -1


class Store:
    def __init__(self):
        self.sent = []

    def answer(self, backup, msg):
        self.sent.append(dict(msg))


def agent(conns=()):
    writer = SimpleNamespace(collect=lambda now: None, snapshot_all=lambda now: None, flush=lambda: True)
    return SimpleNamespace(name="b1", replicas={"web": ("10.0.0.20", 80)}, drain=lambda: None, check_drops=lambda: None,
                           writer=writer, acks=SimpleNamespace(sent=[], send=lambda pkt, dst: None),
                           tracker=SimpleNamespace(conns={c.id: c for c in conns},
                                                   embryonic=lambda c: getattr(c, "embryonic", False)),
                           hot=None, relay=None, clock=time.monotonic,
                           args=SimpleNamespace(prepare_timeout=1.0), store=Store())


def session(cid="c1"):
    s = Session(cid, None, 0, Sock())
    s.client = Sock()
    return s


@pytest.fixture
def kernel(monkeypatch):
    """What the coordinator asked of the kernel: RSTs, silent closes, reset 4-tuples."""
    did = {"reset": [], "silent": [], "rebuilt": []}
    monkeypatch.setattr(co.repair, "reset", lambda sock: did["reset"].append(sock))
    monkeypatch.setattr(co.repair, "silent_close", lambda sock: did["silent"].append(sock))
    monkeypatch.setattr(co.repair, "reset_params", lambda state, ip: SimpleNamespace(
        id=state["id"], snd_nxt=1, rcv_nxt=2, tsval=0, ts_recent=0, timestamps=False, local=(ip, 80),
        remote=("10.0.0.1", 40000)))
    monkeypatch.setattr(co.repair, "repaired_socket", lambda params: did["rebuilt"].append(params) or Sock())
    return did


def wait_worker():
    for t in threading.enumerate():
        if t.name.startswith("ftcp-takeover-"):
            t.join(5)
            assert not t.is_alive(), f"{t.name} still running after 5 s"


def test_abort_while_preparing_resets_the_prepared_clients(monkeypatch, kernel):
    a, s, gate = agent(), session(), threading.Event()
    monkeypatch.setattr(co, "plan_takeover", lambda conns, d, ip: ([s], [], {}, {}))
    monkeypatch.setattr(co, "prepare_sessions", lambda sessions, timeout: gate.wait(5))
    c = co.Coordinator(a)
    client = s.client
    c.takeover("web", 1, "1@x")
    c.abort("web", 1, "1@x")
    gate.set()
    wait_worker()
    # the prepared client socket itself got the RST, and the session let go of it
    assert kernel["reset"] == [client] and kernel["silent"] == [] and s.client is None
    assert a.store.sent == [{"cmd": "aborted", "service": "web", "epoch": 1, "id": "1@x", "backup": "b1",
                             "reset": 1}]


def test_the_same_epoch_with_another_failover_id_supersedes_silently(monkeypatch, kernel):
    a = agent()
    first, second = session("c1"), session("c1")
    plans = iter([([first], [], {}, {}), ([second], [], {}, {})])
    monkeypatch.setattr(co, "plan_takeover", lambda conns, d, ip: next(plans))
    monkeypatch.setattr(co, "prepare_sessions", lambda sessions, timeout: None)
    c = co.Coordinator(a)
    c.takeover("web", 1, "1@old")
    wait_worker()
    c.takeover("web", 1, "1@old")                 # a repeat: the same answer again
    assert [m["cmd"] for m in a.store.sent] == ["ready", "ready"] and a.store.sent[0] == a.store.sent[1]
    old_client = first.client
    c.takeover("web", 1, "1@new")                 # a controller that reused the epoch
    wait_worker()
    assert kernel["silent"] == [old_client] and kernel["reset"] == []
    assert a.store.sent[-1]["id"] == "1@new" and a.store.sent[-1]["taken"] == ["c1"]
    c.go("web", 1, "1@old")                       # the old failover's go: dropped
    assert a.store.sent[-1]["cmd"] == "ready"


def test_a_worker_that_fails_still_answers_and_resets_what_it_prepared(monkeypatch, kernel):
    a, s = agent(), session()

    def boom(sessions, timeout):
        raise RuntimeError("bug")
    monkeypatch.setattr(co, "plan_takeover", lambda conns, d, ip: ([s], [], {}, {}))
    monkeypatch.setattr(co, "prepare_sessions", boom)
    c = co.Coordinator(a)
    client = s.client
    c.takeover("web", 1, "1@x")
    a.replicas.clear()                            # a service message meanwhile must not matter
    wait_worker()
    assert a.store.sent[-1]["cmd"] == "ready" and a.store.sent[-1]["taken"] == []
    assert a.store.sent[-1]["failed"] == {"*": "takeover failed: bug"} and kernel["reset"] == [client]




def test_records_with_no_handshake_seen_are_neither_taken_nor_reset(monkeypatch, kernel):
    real = SimpleNamespace(id="real", service="web", state="established", restored=False, status="protected",
                           to_state=lambda: {"id": "real"})
    syn = SimpleNamespace(id="syn", service="web", state="syn_sent", restored=False, status="protected",
                          embryonic=True, to_state=lambda: {"id": "syn"})
    a = agent([real, syn])
    seen = []
    monkeypatch.setattr(co, "plan_takeover", lambda conns, d, ip: seen.extend(conns) or ([], [], {}, {}))
    co.Coordinator(a).takeover("web", 1, "1@x")
    wait_worker()
    assert seen == [real]


def test_abort_of_a_takeover_never_received_resets_every_open_connection_of_the_service(kernel):
    conns = [SimpleNamespace(id=f"c{i}", service=svc, state=state, to_state=lambda i=i: {"id": f"c{i}"})
             for i, (svc, state) in enumerate([("web", "established"), ("web", "closed"), ("db", "established"),
                                               ("web", "closing")])]
    a = agent(conns)
    co.Coordinator(a).abort("web", 3, "3@x")
    assert [p.id for p in kernel["rebuilt"]] == ["c0", "c3"]
    assert a.store.sent[-1]["cmd"] == "aborted" and a.store.sent[-1]["reset"] == 2


def test_kernel_drops_unprotect_every_open_connection():
    """A dropped server segment and the client's ACK of it leave no trace once the
    primary is dead: the rebuilt socket would start behind the client and hang."""
    from ftcp.agent.main import Agent
    from ftcp.agent.tracker import Tracker
    from tests.support.wire import SERVICES, Link
    tracker = Tracker(SERVICES, log_cap=1 << 20)
    open_conn = Link(tracker, cport=40000).handshake()
    closed = Link(tracker, cport=40001).handshake()
    closed.state = "closed"
    capture = SimpleNamespace(dropped=0, stats=lambda: None)
    fake = SimpleNamespace(capture=capture, _drops_reported=0, tracker=tracker)
    Agent.check_drops(fake)
    assert open_conn.status == "protected"
    capture.dropped = 7
    Agent.check_drops(fake)
    assert open_conn.status == "unprotected" and "kernel dropped 7 mirrored packets" in open_conn.reason
    assert closed.status == "protected" and fake._drops_reported == 7


def test_a_reset_from_a_stale_record_is_followed_by_an_ack_that_draws_the_clients_own(monkeypatch):
    """The record may be behind the client: its RST falls below the client's window.
    The ACK after it makes the client answer, and this host's kernel then resets it at
    exactly the client's sequence number."""
    from scapy.all import IP, TCP
    from ftcp.agent.repair import repair_params
    from tests.support.wire import STORED_CONN as STATE
    params = repair_params(STATE, "10.0.0.20", logged=300)
    closed = []
    monkeypatch.setattr(co.repair, "repaired_socket", lambda p: p)
    monkeypatch.setattr(co.repair, "reset", closed.append)
    sent = []
    co._reset_all([params], SimpleNamespace(send=lambda pkt, dst: sent.append((IP(pkt), dst))))
    assert closed == [params]
    (pkt, dst), = sent
    assert dst == "10.0.0.1" and pkt[TCP].flags == "A"
    assert (pkt[TCP].seq, pkt[TCP].ack) == (params.snd_nxt, params.rcv_nxt)


def test_an_order_for_another_run_of_the_agent_is_ignored():
    from ftcp.agent.main import Agent
    done = []
    coordinator = SimpleNamespace(takeover=lambda *a: done.append(("takeover",) + a),
                                  abort=lambda *a: done.append(("abort",) + a))
    fake = SimpleNamespace(boot="1700000100.000000", coordinator=coordinator)
    Agent.handle(fake, {"cmd": "abort", "service": "web", "epoch": 3, "id": "3@x", "boot": "1700000000.250000"})
    assert done == []                                            # a replay from before the restart
    Agent.handle(fake, {"cmd": "abort", "service": "web", "epoch": 3, "id": "3@x", "boot": "1700000100.000000"})
    Agent.handle(fake, {"cmd": "takeover", "service": "web", "epoch": 4, "id": "4@x"})   # no heartbeat seen yet
    assert done == [("abort", "web", 3, "3@x"), ("takeover", "web", 4, "4@x")]

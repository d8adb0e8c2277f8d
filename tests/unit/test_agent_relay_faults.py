"""The relay (ftcp/agent/relay.py) against what can go wrong around it: its descriptor
limit, messages that are not what they should be, an agent that does not read. Whatever
comes in, the relay goes on and so does every session it holds; what a bad message
brought is closed (a RST for a socket the relay alone held), never relayed to the wrong
client. Real relays (processes where they may die), real sockets."""
import json
import os
import socket
import threading
import time
from types import SimpleNamespace

import pytest

from ftcp.agent.handoff import RelayClient
from ftcp.agent.relay import Relay
from ftcp.agent.takeover import Session
from tests.support.taken_over import Pairs, adopt_line, is_reset, open_fds, relay_process, send_raw
from topology.processes import wait_for


@pytest.fixture
def pairs():
    p = Pairs()
    yield p
    p.close()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "relay.sock")


@pytest.fixture
def relay_proc(path, tmp_path):
    procs = []

    def start(nofile=None):
        proc = relay_process(path, str(tmp_path / "relay.log"), nofile=nofile)
        procs.append(proc)
        return proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def relay(path):
    r = Relay(path)
    thread = threading.Thread(target=r.serve_forever, daemon=True)
    thread.start()
    yield r
    r.stop()
    thread.join(5)
    assert not thread.is_alive()


def answer(conn, timeout=5.0) -> dict:
    """The next line the relay sends on ``conn``."""
    conn.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        more = conn.recv(1)
        assert more, f"EOF after {data!r}"
        data += more
    return json.loads(data)


def adopt(conn, s, client=None, **kw):
    """Hand a session over as the agent does: the descriptors on the line's first byte alone."""
    kw.setdefault("to_client", bytes(s.to_client))
    line = adopt_line(s.conn_id, **kw)
    send_raw(conn, line[:1], fds=((client or s.client).fileno(), s.replica.fileno()))
    send_raw(conn, line[1:])


def relay_log(tmp_path) -> str:
    return open(tmp_path / "relay.log").read()


# --- its descriptor limit ----------------------------------------------------------------

def test_the_relay_raises_its_descriptor_limit(relay_proc):
    proc = relay_proc(nofile=(64, 4096))
    limits = open(f"/proc/{proc.pid}/limits").read()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    assert line.split()[3] == "4096", line


def test_the_relay_survives_its_fd_limit_and_keeps_what_it_holds(path, tmp_path, pairs, relay_proc):
    """Each session costs the relay 2 descriptors. Here the limit is 40 (hard: it cannot
    be raised): after a dozen sessions a handed-over message arrives with no SCM_RIGHTS
    (the kernel could not install the descriptors: MSG_CTRUNC). That drops the agent's
    connection, not the relay: the sessions it holds go on."""
    proc = relay_proc(nofile=40)
    first, first_peer, first_replica_peer = pairs.session("first")
    agent = RelayClient(path)
    assert agent.hand_over([first]) == []
    for i in range(30):
        s, _peer, _rpeer = pairs.session(f"s{i}")
        for rest in agent.hand_over([s]):
            rest.close()
        time.sleep(0.02)
        if proc.poll() is not None:
            break
    time.sleep(0.5)
    alive = proc.poll() is None
    if alive:
        first_replica_peer.sendall(b"still there?")
    state = is_reset(first_peer, timeout=1.0)
    assert alive, f"the relay died at its fd limit (exit {proc.returncode}); first client: {state}; " \
                  f"log tail: {relay_log(tmp_path)[-600:]!r}"
    assert state == "open" and "MSG_CTRUNC" in relay_log(tmp_path)


def test_at_its_fd_limit_the_relay_waits_to_accept_and_then_does(path, tmp_path, relay_proc):
    """accept fails with EMFILE while the limit is reached: the relay neither dies nor
    spins, and accepts the waiting agent once descriptors are free again."""
    proc = relay_proc(nofile=40)
    conns = []
    for _ in range(40):                      # more agent connections than it has descriptors for
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        conns.append(c)
    wait_for(lambda: "cannot accept" in relay_log(tmp_path), 5, "the relay to hit its limit", interval=0.05)
    for c in conns[:-1]:
        c.close()
    last = conns[-1]
    last.settimeout(5)
    last.sendall(b'{"cmd": "list"}\n')
    assert last.recv(1000) == b'{"cmd":"sessions","ids":[]}\n'
    assert proc.poll() is None
    cpu = sum(map(int, open(f"/proc/{proc.pid}/stat").read().split(")")[1].split()[11:13]))
    assert cpu < 200, f"the relay spun at its limit ({cpu} ticks of CPU)"
    last.close()


def test_descriptors_beyond_what_a_message_carries_are_closed(path, tmp_path, pairs, relay_proc):
    """A message with three descriptors overflows the two-descriptor ancillary buffer
    (MSG_CTRUNC): the kernel closes what did not fit, the relay refuses the message and
    closes what did."""
    proc = relay_proc()
    agent = RelayClient(path)
    assert agent.held() == []
    before = open_fds(proc.pid)
    a, b, c = (socket.socketpair() for _ in range(3))
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    line = adopt_line("three", fds=3)
    send_raw(conn, line[:1], fds=(a[0].fileno(), b[0].fileno(), c[0].fileno()))
    send_raw(conn, line[1:])
    assert answer(conn)["error"] == "the descriptors of 'three' were lost on the way in (the relay's " \
                                    "descriptor limit?)"
    wait_for(lambda: open_fds(proc.pid) == before + 1, 5, "the relay to close what came", interval=0.05)
    assert proc.poll() is None and agent.held() == []


# --- messages that are not what they should be ---------------------------------------------

@pytest.mark.parametrize("line", [b"[1]\n", b"null\n", b'"adopt"\n', b"{not json\n",
                                  b'{"cmd": "adopt", "id": "x", "fds": 2}\n'],
                         ids=["array", "null", "string", "not-json", "adopt-without-descriptors"])
def test_a_malformed_message_does_not_kill_the_relay_and_its_sessions(path, pairs, relay_proc, line):
    """Valid JSON that is not an object, or an adopt line that says fds but carries none,
    once escaped Reader.read and killed the relay, resetting every client it held."""
    proc = relay_proc()
    held, held_peer, _ = pairs.session("held")
    agent = RelayClient(path)
    assert agent.hand_over([held]) == []
    wait_for(lambda: agent.held() == ["held"], 5, "the relay to hold it", interval=0.05)
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.connect(path)
    bad.sendall(line)
    time.sleep(1.0)
    alive = proc.poll() is None
    state = is_reset(held_peer, timeout=1.0)
    assert alive and state == "open", f"relay alive: {alive}; the held client: {state}"
    assert agent.held() == ["held"]


# --- descriptors belong to the line whose first byte carried them ---------------------------

def test_descriptors_that_came_without_an_adopt_never_pair_with_the_next_adopt(path, pairs, relay):
    """Descriptors were once queued and given to the next line that said "fds": a message
    that brought some without saying so (a "list" here) shifted every later adopt, so
    B's pending output (to_client) went to another connection's client. Now the list is
    refused and what it brought closed; B gets B's own sockets."""
    stray, stray_peer, _ = pairs.session("stray")
    b, b_peer, _ = pairs.session("b", to_client=b"B's private answer")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    line = b'{"cmd": "list"}\n'
    send_raw(conn, line[:1], fds=(stray.client.fileno(), stray.replica.fileno()))
    send_raw(conn, line[1:])
    assert answer(conn)["error"] == "'list' of None came with 2 descriptor(s), and says fds=0"
    adopt(conn, b)
    assert answer(conn) == {"cmd": "adopted", "id": "b"}
    b.close()
    stray_peer.settimeout(0.5)
    try:
        leaked = stray_peer.recv(100)
    except socket.timeout:
        leaked = b""
    assert leaked == b"", f"another connection's client got B's bytes: {leaked!r}"
    b_peer.settimeout(2)
    assert b_peer.recv(100) == b"B's private answer"
    stray.close()


def test_descriptors_sent_with_a_whole_line_ride_on_no_line_s_first_byte(path, pairs, relay):
    """The sender must send a line's first byte alone with its descriptors; sent with the
    whole line they came on its last byte, which starts no line: they are closed, and
    the adopt, which got none, is refused (its client reset, not left hanging)."""
    a, a_peer, _ = pairs.session("a")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    send_raw(conn, adopt_line("a"), fds=(a.client.fileno(), a.replica.fileno()))
    assert answer(conn)["error"] == "'adopt' of 'a' came with 0 descriptor(s), and says fds=2"
    a.close()
    assert is_reset(a_peer, timeout=2.0) == "rst" and relay.sessions == {}


def test_a_bad_line_after_an_adopt_in_the_same_read_neither_leaks_nor_strands_it(path, pairs, relay):
    """An adopt and a line that does not parse in one read: the batch is refused whole,
    the adopt's sockets closed (its client reset), the connection dropped. They were once
    left open in the relay, neither relayed nor closed, for as long as it lived."""
    a, a_peer, _ = pairs.session("a")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    line = adopt_line("a") + b"{not json\n"
    send_raw(conn, line[:1], fds=(a.client.fileno(), a.replica.fileno()))
    send_raw(conn, line[1:])
    time.sleep(0.5)
    a.close()                        # the agent keeps nothing (as hand_over does)
    assert is_reset(a_peer, timeout=2.0) == "rst"
    conn.settimeout(2)
    assert conn.recv(100) == b""     # dropped
    assert relay.sessions == {}


def test_a_message_whose_descriptors_do_not_match_what_it_says_is_refused(path, pairs, relay):
    a, a_peer, _ = pairs.session("a")
    ok, ok_peer, ok_replica_peer = pairs.session("ok")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    line = adopt_line("a", fds=1)
    send_raw(conn, line[:1], fds=(a.client.fileno(), a.replica.fileno()))
    send_raw(conn, line[1:])
    assert answer(conn)["error"] == "'adopt' of 'a' came with 2 descriptor(s), and says fds=1"
    adopt(conn, ok)                  # the connection goes on
    assert answer(conn) == {"cmd": "adopted", "id": "ok"}
    a.close()
    ok.close()
    assert is_reset(a_peer, timeout=2.0) == "rst"
    ok_replica_peer.sendall(b"fine")
    ok_peer.settimeout(2)
    assert ok_peer.recv(100) == b"fine"


# --- what an adopt may not be ------------------------------------------------------------

def test_an_adopt_whose_descriptor_is_not_a_socket_is_refused_and_closed(path, pairs, relay):
    """socket.socket(fileno=) of a pipe raised OSError past the refusal: no answer, and
    the other descriptor (a client socket) stayed open in the relay."""
    a, a_peer, _ = pairs.session("a")
    r, w = os.pipe()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    line = adopt_line("a")
    send_raw(conn, line[:1], fds=(a.client.fileno(), r))
    send_raw(conn, line[1:])
    assert "is not a socket" in answer(conn)["error"]
    a.close()
    os.close(r)
    assert is_reset(a_peer, timeout=2.0) == "rst"       # the relay closed its copy
    os.close(w)
    assert relay.sessions == {}


def test_pending_bytes_sent_as_base64_by_an_older_agent_are_refused(path, pairs, relay):
    """The pending bytes were base64 in the line (decoded without validate: what was not
    base64 was dropped, the rest taken); they follow the line now, counted in it. An
    older agent's text where a count is due is refused, never misread."""
    a, a_peer, _ = pairs.session("a")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    line = json.dumps({"cmd": "adopt", "id": "a", "fds": 2, "to_client": "aGVsbG8*", "to_replica": ""}).encode()
    send_raw(conn, line[:1], fds=(a.client.fileno(), a.replica.fileno()))
    send_raw(conn, line[1:] + b"\n")
    assert answer(conn)["error"] == "to_client is not a byte count: 'aGVsbG8*'"
    a.close()
    assert is_reset(a_peer, timeout=2.0) == "rst" and relay.sessions == {}


def test_pending_bytes_that_do_not_add_up_are_refused_and_the_connection_goes_on(path, pairs, relay):
    a, a_peer, _ = pairs.session("a")
    ok, ok_peer, _ = pairs.session("ok", to_client=b"ok's")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    line = json.dumps({"cmd": "adopt", "id": "a", "fds": 2, "to_client": 2, "to_replica": 0, "bytes": 5}).encode()
    send_raw(conn, line[:1], fds=(a.client.fileno(), a.replica.fileno()))
    send_raw(conn, line[1:] + b"\n12345")
    assert answer(conn)["error"] == "to_client + to_replica is not the 5 bytes that came"
    adopt(conn, ok)
    assert answer(conn) == {"cmd": "adopted", "id": "ok"}
    a.close()
    ok.close()
    assert is_reset(a_peer, timeout=2.0) == "rst"
    ok_peer.settimeout(2)
    assert ok_peer.recv(100) == b"ok's"


def test_a_second_adopt_of_a_held_id_is_refused(path, pairs, relay):
    """It overwrote the first in ``sessions``, both were relayed, and the first one's
    end removed the live one from what the relay says it holds."""
    first, first_peer, first_replica_peer = pairs.session("x")
    second, second_peer, _ = pairs.session("x")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    adopt(conn, first)
    assert answer(conn) == {"cmd": "adopted", "id": "x"}
    adopt(conn, second)
    assert answer(conn) == {"cmd": "error", "id": "x", "error": "'x' is held already: this one is refused"}
    first.close()
    second.close()
    assert is_reset(second_peer, timeout=2.0) == "rst"
    first_replica_peer.sendall(b"still mine")
    first_peer.settimeout(2)
    assert first_peer.recv(100) == b"still mine"
    assert list(relay.sessions) == ["x"]


# --- an agent that does not read, a relay that does not read --------------------------------

def test_an_agent_that_stops_reading_does_not_freeze_the_relayed_connections(path, pairs, relay):
    """The relay wrote its answers and "ended" lines with a blocking sendall, from its
    main thread and from the splicer's (on_end). An agent connected but not reading
    (stopped, stuck) filled the socket after a few hundred lines; the splicer's thread
    then blocked in sendall and no session was relayed any more."""
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        live, live_peer, live_replica_peer = pairs.session("live")
        stuck.connect(path)           # an agent that never reads its answers
        adopt(stuck, live)
        live.close()

        def hand_over_short_sessions():
            for i in range(600):      # sessions that end at once: each one an "ended" line
                c, c_peer = socket.socketpair()
                r, r_peer = socket.socketpair()
                c_peer.close()
                r_peer.close()
                try:
                    adopt(stuck, Session(f"short{i}", None, 0, r), client=c)
                except OSError:
                    return
                finally:
                    c.close()
                    r.close()
        threading.Thread(target=hand_over_short_sessions, daemon=True).start()
        time.sleep(3)
        live_replica_peer.sendall(b"are you there?")
        live_peer.settimeout(3)
        try:
            got = live_peer.recv(100)
        except socket.timeout:
            got = None
        assert got == b"are you there?", "the relayed connection is frozen by an agent that does not read"
        other = RelayClient(path)     # and another agent is answered
        assert other.held() == ["live"]
        other.close()
    finally:
        stuck.close()


def test_an_agent_that_lets_its_answers_pile_up_is_dropped(path, relay, monkeypatch):
    from ftcp.agent import relay as relay_module
    monkeypatch.setattr(relay_module, "MAX_QUEUED", 1 << 16)
    lagging = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lagging.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lagging.connect(path)
    lagging.settimeout(0.2)
    try:
        for _ in range(20000):        # asks and asks, never reads
            lagging.sendall(b'{"cmd": "list"}\n')
    except (socket.timeout, BrokenPipeError, ConnectionResetError):
        pass
    wait_for(lambda: not relay._conns, 5, "the relay to drop it", interval=0.05)
    lagging.close()
    assert RelayClient(path).held() == []


def test_the_ended_sessions_an_agent_was_sent_are_not_told_again_and_the_rest_are(path, relay, monkeypatch):
    """When an agent goes away, what it was sent is not told to the next one (it once
    was: a failed send put back every line of the batch), and what it was not sent
    whole is."""
    from ftcp.agent import relay as relay_module
    monkeypatch.setattr(relay_module, "FEED_LIMIT", 1 << 30)    # all of it queued for the first agent
    first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    first.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    first.connect(path)
    wait_for(lambda: relay._agent is not None, 5, "the relay to see the agent", interval=0.01)
    ids = [f"s{i:05d}" for i in range(5000)]
    for conn_id in ids:               # what the splicer's thread does when sessions end
        relay._ended(SimpleNamespace(conn_id=conn_id, error=None))
    wait_for(lambda: not relay.ended, 5, "every one queued for the first agent", interval=0.01)
    first.settimeout(2)
    got = first.recv(3000)
    first.shutdown(socket.SHUT_RD)    # it stops: the relay's next send fails
    try:
        while True:
            more = first.recv(65536)
            if not more:
                break
            got += more
    except (socket.timeout, ConnectionResetError):
        pass
    first.close()
    told_first = [json.loads(line)["id"] for line in got.split(b"\n") if line.endswith(b"}")]
    wait_for(lambda: not relay._conns, 5, "the relay to drop the first agent", interval=0.01)
    told_next = []
    again = RelayClient(path, on_ended=lambda conn_id, error: told_next.append(conn_id))
    assert again.held() == []
    wait_for(lambda: len(told_first) + len(told_next) >= len(ids), 5, "the rest", interval=0.01)
    assert 0 < len(told_first) < len(ids)
    assert told_first + told_next == ids
    again.close()


def test_hand_over_to_a_relay_that_does_not_read_does_not_block_the_agent(path, pairs):
    """hand_over runs on the agent's capture thread (Coordinator.go), and its socket had
    no timeout: a relay that accepts but does not read blocked go in sendall, capture
    stopped for every service of this backup. Now it gives up within its timeout and
    returns what it could not hand over (the agent relays it)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    sessions = []
    for i in range(3):
        s, _peer, _rpeer = pairs.session(f"big{i}")
        s.to_replica = bytearray(b"x" * (1 << 20))   # client bytes the replica has not had yet
        sessions.append(s)
    result = []
    agent = RelayClient(path, timeout=1.0)
    started = time.monotonic()
    t = threading.Thread(target=lambda: result.append(agent.hand_over(sessions)), daemon=True)
    t.start()
    t.join(5)
    blocked = t.is_alive()
    listener.close()
    assert not blocked, "go (the capture thread) is blocked in hand_over by a relay that does not read"
    assert result == [sessions] and time.monotonic() - started < 2
    assert all(s.client.fileno() >= 0 for s in sessions)   # still the agent's, to relay itself
    for s in sessions:
        s.close()


@pytest.mark.parametrize("stalls", [False, True], ids=["reads-slowly", "stalls-mid-way"])
def test_hand_over_waits_for_a_slow_relay_and_gives_up_on_one_that_stalls(path, pairs, stalls):
    """Each session's message gets the timeout: a relay that reads slowly is given every
    session, one that stops reading costs the timeout once, and what it was not given
    comes back to be relayed by the agent."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    done = threading.Event()

    def slow_relay():
        conn, _ = listener.accept()
        got = 0
        while not done.is_set() and (not stalls or got < 200_000):
            data, _anc, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(8))
            got += len(data)
            time.sleep(0.01)          # some 100 sessions a second (a relay reads 10,000)
        done.wait(10)
        conn.close()
    threading.Thread(target=slow_relay, daemon=True).start()
    sessions = []
    for i in range(150):
        s, _peer, _rpeer = pairs.session(f"s{i}")
        s.to_client = bytearray(b"y" * 4096)
        sessions.append(s)
    agent = RelayClient(path, timeout=1.0)
    started = time.monotonic()
    left = agent.hand_over(sessions)
    took = time.monotonic() - started
    done.set()
    listener.close()
    if stalls:
        assert 0 < len(left) < len(sessions) and left == sessions[len(sessions) - len(left):]
        assert took < 3
    else:
        assert left == [] and took > 1.2, took        # longer than the timeout, in all: it waited
    for s in left:
        s.close()


def test_descriptors_that_come_on_a_body_s_byte_are_closed_and_the_body_is_intact(path, pairs, relay):
    a, _a_peer, a_replica_peer = pairs.session("a")
    stray, stray_peer, _ = pairs.session("stray")
    body = bytes(range(256)) * 400
    line = adopt_line("a", to_replica=body)
    head = len(line) - len(body)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    send_raw(conn, line[:1], fds=(a.client.fileno(), a.replica.fileno()))
    send_raw(conn, line[1:head + 5000])
    send_raw(conn, line[head + 5000:head + 5001], fds=(stray.client.fileno(), stray.replica.fileno()))
    send_raw(conn, line[head + 5001:])
    assert answer(conn) == {"cmd": "adopted", "id": "a"}
    a.close()
    stray.close()
    assert is_reset(stray_peer, timeout=2.0) == "rst"
    a_replica_peer.settimeout(5)
    got = b""
    while len(got) < len(body):
        got += a_replica_peer.recv(1 << 16)
    assert got == body

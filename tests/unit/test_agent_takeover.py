"""ftcp.agent.takeover: prepare (replica catch-up, compare, client socket) and the Splicer.

The client socket is normally rebuilt with TCP_REPAIR; here ``make_socket`` is a fake
that records the unacknowledged bytes it is given and returns one end of a socketpair
(the test holds the other end as "the client"). Replicas are a tiny line server on
127.0.0.1 ("PING X\\n" -> "PONG X\\n", "QUIT\\n" closes) or socketpairs.
"""
import socket
import threading
import time
import zlib

import pytest

from ftcp.agent import listening
from ftcp.agent.takeover import Session, Splicer, prepare
from tests.support.taken_over import TcpRepair
from tests.support.line_server import LineServer
from tests.support.taken_over import client_pair, how_it_ends
from topology.processes import wait_for


class FakeRepair:
    """``make_socket`` stand-in: ``params`` is the connection's name."""

    def __init__(self):
        self.unacked = {}     # name -> bytes queued as already sent
        self.clients = {}     # name -> the test's end ("the client")

    def __call__(self, params, unacked):
        assert params not in self.unacked, "make_socket called twice for one connection"
        ours, theirs = socket.socketpair()
        self.unacked[params] = unacked
        self.clients[params] = theirs
        return ours

    def close(self):
        for s in self.clients.values():
            s.close()


@pytest.fixture
def server():
    srv = LineServer()
    yield srv
    srv.close()


@pytest.fixture
def fake():
    f = FakeRepair()
    yield f
    f.close()


@pytest.fixture
def sessions():
    made = []
    yield made
    for s in made:
        s.close()


def crc(data):
    return zlib.crc32(data)


def cold(made, name, addr, log, **kw):
    s = Session.cold(name, name, replica_addr=addr, log=log, **kw)
    made.append(s)
    return s


def recv_exactly(sock, n, timeout=5.0):
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        assert data, f"EOF after {buf!r}"
        buf += data
    return buf


# --- prepare ---------------------------------------------------------------------------

def test_hot_session_already_covered_is_finished_without_io(fake, sessions):
    replica, peer = socket.socketpair()
    s = Session("h", "h", client_acked=105, replica=replica, tail_start=100, tail=b"0123456789", sent=107)
    sessions.append(s)
    try:
        prepare([s], timeout=0, make_socket=fake)     # no time at all: nothing may be awaited
        assert s.error is None
        assert fake.unacked["h"] == b"56"               # out[client_acked - tail_start : sent - tail_start]
        assert bytes(s.to_client) == b"789"             # beyond sent
        assert s.client is not None and s.replica.fileno() >= 0
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(1)                                # nothing was written to the replica
    finally:
        peer.close()


def test_cold_sessions_split_unacked_and_to_client_exactly(server, fake, sessions):
    out = b"PONG a\nPONG b\nPONG c\n"
    # need covers all of out via a (matching) check past `sent`, so the split is deterministic
    a = cold(sessions, "a", server.addr, b"PING a\nPING b\nPING c\n", client_acked=7, sent=14,
             checks=[(14, 7, crc(out[14:]))])
    b = cold(sessions, "b", server.addr, b"PING a\nPING b\n", client_acked=3, sent=14)
    c = cold(sessions, "c", server.addr, b"PING a\nPING b\nPING c\n", client_acked=0, sent=21,
             checks=[(0, 21, crc(out))])
    prepare([a, b, c], timeout=5, make_socket=fake)
    assert [s.error for s in (a, b, c)] == [None, None, None]
    assert fake.unacked == {"a": b"PONG b\n", "b": b"G a\nPONG b\n", "c": out}
    assert (bytes(a.to_client), bytes(b.to_client), bytes(c.to_client)) == (b"PONG c\n", b"", b"")


def test_many_cold_replays_overlap():
    """No replica answers before all 50 have their request: replays that waited for one
    another would never get there (and time out)."""
    n = 50
    srv, f, made = LineServer(gate=threading.Barrier(n, timeout=10)), FakeRepair(), []
    try:
        for i in range(n):
            cold(made, f"s{i}", srv.addr, f"PING {i}\n".encode(), client_acked=2, sent=len(f"PONG {i}\n"))
        prepare(made, timeout=10, make_socket=f)
        assert [s.error for s in made] == [None] * n
        assert all(f.unacked[f"s{i}"] == f"NG {i}\n".encode() for i in range(n))
    finally:
        for s in made:
            s.close()
        f.close()
        srv.close()


def test_divergence_fails_only_that_session(server, fake, sessions):
    log = b"PING a\nPING b\n"
    bad = cold(sessions, "bad", server.addr, log, client_acked=0, sent=14, checks=[(7, 7, crc(b"PONG X\n"))])
    good = cold(sessions, "good", server.addr, log, client_acked=0, sent=14, checks=[(7, 7, crc(b"PONG b\n"))])
    prepare([bad, good], timeout=5, make_socket=fake)
    assert "diverged" in bad.error and "server byte 7" in bad.error
    assert bad.replica.fileno() == -1 and bad.client is None and "bad" not in fake.unacked
    assert good.error is None and fake.unacked["good"] == b"PONG a\nPONG b\n"


def test_aligned_divergence_at_takeover_gives_the_client_the_primary_s_bytes(server, fake, sessions):
    """The primary answered "PONG b\n" where the replica says "PONG a\n": the same shape,
    so it passes, counted, and the bytes queued for the client are the primary's. A
    digit for a letter does not pass."""
    log = b"PING a\nPING b\n"
    s = cold(sessions, "s", server.addr, log, client_acked=0, sent=7, checks=[(0, 7, b"PONG b\n")])
    refused = cold(sessions, "r", server.addr, log, client_acked=0, sent=7, checks=[(0, 7, b"PONG 1\n")])
    prepare([s, refused], timeout=5, make_socket=fake)
    assert s.error is None and s.differed == 1
    assert fake.unacked["s"] == b"PONG b\n"
    assert "diverged" in refused.error and "r" not in fake.unacked


def test_replica_that_stays_short_times_out(server, fake, sessions):
    slow = cold(sessions, "slow", server.addr, b"PING a\n", client_acked=0, sent=100)
    ok = cold(sessions, "ok", server.addr, b"PING a\n", client_acked=0, sent=7)
    t0 = time.monotonic()
    prepare([slow, ok], timeout=0.3, make_socket=fake)
    assert time.monotonic() - t0 >= 0.3
    assert slow.error == "the replica did not produce 100 bytes within 0.3 s"
    assert slow.replica.fileno() == -1 and "slow" not in fake.unacked
    assert ok.error is None and fake.unacked["ok"] == b"PONG a\n"


def test_replica_that_closes_early_does_not_reach_sent(server, fake, sessions):
    s = cold(sessions, "eof", server.addr, b"PING a\nQUIT\n", client_acked=0, sent=20)
    t0 = time.monotonic()
    prepare([s], timeout=5, make_socket=fake)
    assert time.monotonic() - t0 < 4, "EOF should end the wait, not the timeout"
    assert "does not reach" in s.error and "(7 bytes)" in s.error
    assert s.replica.fileno() == -1 and "eof" not in fake.unacked


def test_cold_replica_where_nothing_listens(server, fake, sessions):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))      # bound, never listening: connecting is refused
    try:
        dead = cold(sessions, "dead", closed.getsockname(), b"PING a\n", client_acked=0, sent=7)
        live = cold(sessions, "live", server.addr, b"PING a\n", client_acked=0, sent=7)
        prepare([dead, live], timeout=5, make_socket=fake)
    finally:
        closed.close()
    assert dead.error and "replica" in dead.error and "refused" in dead.error.lower()
    assert dead.replica.fileno() == -1 and "dead" not in fake.unacked
    assert live.error is None


# --- Splicer ---------------------------------------------------------------------------

def test_splicer_relays_both_ways_and_passes_eof(server, fake, sessions):
    out = b"PONG a\nPONG b\nPONG c\n"
    s = cold(sessions, "x", server.addr, b"PING a\nPING b\nPING c\n", client_acked=7, sent=14,
             checks=[(14, 7, crc(out[14:]))])
    prepare([s], timeout=5, make_socket=fake)
    assert s.error is None and bytes(s.to_client) == b"PONG c\n"
    client = fake.clients["x"]
    more = [f"{i:05d}".encode() for i in range(5000)]     # ~60 KB each way
    splicer = Splicer()
    splicer.start()
    try:
        splicer.add([s])
        assert recv_exactly(client, 7) == b"PONG c\n"     # to_client first
        pings = b"".join(b"PING " + m + b"\n" for m in more)
        expected = b"".join(b"PONG " + m + b"\n" for m in more)
        writer = threading.Thread(target=client.sendall, args=(pings,))
        writer.start()
        assert recv_exactly(client, len(expected)) == expected
        writer.join(5)
        client.shutdown(socket.SHUT_WR)                   # client EOF -> replica -> server closes
        assert client.recv(1) == b""                      # ... and the replica's close reaches the client
        wait_for(lambda: splicer.live == 0, 5, "the splicer to end every session", interval=0.01)
        assert s.error is None and s.client.fileno() == -1 and s.replica.fileno() == -1
        assert s.to_client_bytes == 7 + len(expected)
        assert s.to_replica_bytes == len(pings)           # everything the client sent, no more
    finally:
        splicer.stop()
    assert not splicer.is_alive()


def test_splicer_passes_replica_close_after_pending_output(fake, sessions):
    replica, server_end = socket.socketpair()
    s = Session("r", "r", client_acked=0, replica=replica, tail=b"abcdef", sent=2)
    sessions.append(s)
    prepare([s], timeout=0, make_socket=fake)
    assert fake.unacked["r"] == b"ab" and bytes(s.to_client) == b"cdef"
    server_end.sendall(b"ghi")
    server_end.close()                                    # the replica ends before go
    splicer = Splicer(server_alive=lambda addr: True)     # a socketpair has no server to ask about
    splicer.start()
    try:
        splicer.add([s])
        client = fake.clients["r"]
        assert recv_exactly(client, 7) == b"cdefghi"
        assert client.recv(1) == b""                      # FIN only after all pending output
        assert splicer.live == 1                          # the client has not closed yet
    finally:
        splicer.stop()
    assert not splicer.is_alive()


def test_a_primary_segment_the_replica_never_produced_is_not_taken(server, fake, sessions):
    """The replica closed before the primary's segment at byte 7: nothing compared it,
    so the connection is not taken (the pool's checks are never dropped unread)."""
    short = cold(sessions, "short", server.addr, b"PING a\nQUIT\n", client_acked=0, sent=7,
                 checks=[(7, 7, crc(b"PONG b\n"))])
    prepare([short], timeout=5, make_socket=fake)
    assert "ended at server byte 7" in short.error and "short" not in fake.unacked


# --- how a taken-over connection ends: a FIN only when the server program closed ------

@pytest.fixture
def tcp():
    t = TcpRepair()
    yield t
    t.close()


def taken(sessions, tcp, server, name):
    s = cold(sessions, name, server.addr, b"PING a\n", client_acked=0, sent=7)
    prepare([s], timeout=5, make_socket=tcp)
    assert s.error is None
    return s, tcp.clients[name]


def ends_with_rst(client) -> bool:
    client.settimeout(5)
    try:
        while client.recv(65536):
            pass
    except ConnectionResetError:
        return True
    return False


def test_a_server_that_closes_one_connection_reaches_the_client_as_a_fin(server, tcp, sessions):
    s, client = taken(sessions, tcp, server, "q")
    splicer = Splicer()
    splicer.start()
    try:
        splicer.add([s])
        assert recv_exactly(client, 7) == b"PONG a\n"
        client.sendall(b"QUIT\n")                      # the server closes this connection and listens on
        assert client.recv(1) == b""                    # a FIN: the server program closed its side
        client.close()
        wait_for(lambda: splicer.live == 0, 5, "the session to end", interval=0.01)
        assert s.error is None
    finally:
        splicer.stop()


def test_a_server_that_died_resets_the_client_instead_of_ending_its_stream(tcp, sessions):
    server = LineServer()
    s, client = taken(sessions, tcp, server, "d")
    splicer = Splicer()
    splicer.start()
    try:
        splicer.add([s])
        assert recv_exactly(client, 7) == b"PONG a\n"
        server.close()                                  # listener and connections gone: a crash
        assert ends_with_rst(client)
        assert "no longer listens" in s.error
    finally:
        splicer.stop()


def test_stopping_the_splicer_resets_every_client(server, tcp, sessions):
    s, client = taken(sessions, tcp, server, "s")
    splicer = Splicer()
    splicer.start()
    splicer.add([s])
    assert recv_exactly(client, 7) == b"PONG a\n"
    splicer.stop()                                      # the agent stops: no FIN may reach the client
    assert ends_with_rst(client) and s.error == "agent stopping"


def test_a_server_that_died_before_go_resets_a_half_closed_client():
    """The client had half-closed before the failover (client_done): prepare shuts the
    replica's write side at once. The replica's server answers part of the request and
    dies (its listener and connection closed). Both ends of stream crossed, so the
    replica socket has no peer any more when the Splicer takes the session at go: the
    server's address was taken when the session was made, and it no longer listens."""
    server = socket.create_server(("127.0.0.1", 0))
    addr = server.getsockname()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        while conn.recv(100):
            pass                          # the request, up to the client's end of stream
        conn.sendall(b"PART OF THE ANSW")  # ... and the server process crashes
        server.close()
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    replica = socket.create_connection(addr)
    s = Session("hc", None, 0, replica, client_done=True)
    replica.sendall(b"GET / HTTP/1.0\r\n\r\n")
    s.shut_replica_if_done()              # what prepare does for a half-closed client
    time.sleep(0.3)                       # the controller's round trip to go
    with pytest.raises(OSError):
        replica.getpeername()             # asking the socket now would not say
    s.client, client = client_pair(listener)
    s.client.setblocking(False)
    s.replica.setblocking(False)
    splicer = Splicer()
    splicer.start()
    try:
        splicer.add([s])
        got, end = how_it_ends(client)
        assert got == b"PART OF THE ANSW"
        assert end == "rst", f"the client got a {end.upper()} after a dead server's partial answer"
        assert s.replica_addr == addr
    finally:
        splicer.stop()
        listener.close()


def test_a_replica_whose_server_is_not_known_is_not_taken_for_alive():
    """A replica that is not an Internet socket (or was never connected) has no server
    to ask about: its end of stream reaches the client as a RST, never a FIN."""
    replica, server_end = socket.socketpair()
    listener = socket.create_server(("127.0.0.1", 0))
    s = Session("u", None, 0, replica)
    assert s.replica_addr is None
    s.client, client = client_pair(listener)
    s.to_client = bytearray(b"last words")
    s.client.setblocking(False)
    s.replica.setblocking(False)
    server_end.close()
    splicer = Splicer()
    splicer.start()
    try:
        splicer.add([s])
        assert how_it_ends(client) == (b"last words", "rst")
    finally:
        splicer.stop()
        listener.close()


def test_a_cold_session_knows_its_replica_s_server_before_it_connects(sessions):
    closed = socket.create_server(("127.0.0.1", 0))
    addr = closed.getsockname()
    try:
        s = cold(sessions, "c", addr, b"", client_acked=0)
        assert s.replica_addr == addr
    finally:
        closed.close()


def test_ends_of_stream_held_together_are_checked_against_one_read_of_the_listeners():
    """Reading the kernel's listeners costs the more the more sockets the host has (the
    /proc tables list every connection: 16.8 ms at 30,000): the holds that end in one
    pass share one read."""
    server = socket.create_server(("127.0.0.1", 0))
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    reads = []

    def listeners():
        reads.append(time.monotonic())
        return listening.listeners()
    made, clients, ends = [], [], []
    for i in range(40):
        replica, server_end = socket.socketpair()
        s = Session(f"e{i}", None, 0, replica, replica_addr=server.getsockname())
        s.client, client = client_pair(listener)
        s.client.setblocking(False)
        s.replica.setblocking(False)
        made.append(s)
        clients.append(client)
        ends.append(server_end)
    splicer = Splicer(listeners=listeners)
    splicer.start()
    try:
        splicer.add(made)
        for end in ends:
            end.close()                   # every replica's server closes its connection at once
        assert [how_it_ends(c) for c in clients] == [(b"", "fin")] * 40
        assert 1 <= len(reads) <= 2, f"{len(reads)} reads of the listeners for 40 ends of stream"
    finally:
        splicer.stop()
        for sock in [server, listener, *clients]:
            sock.close()


@pytest.mark.parametrize("client_done", [False, True], ids=["client-open", "client-half-closed"])
def test_a_replica_end_seen_before_go_reaches_the_client(client_done):
    """prepare can see the replica's end of stream, and the relay's adopt carries it: with
    nothing left for the client the session has no READ interest on the replica (and,
    half-closed, none at all), so the hold must start when the session is added."""
    listener = socket.create_server(("127.0.0.1", 0))
    a, b = socket.socketpair()
    b.close()                              # the replica's server closed its side
    s = Session("eof", None, 0, a, client_done=client_done)
    s.replica_eof = True
    s.replica_shut = client_done
    s.client, client = client_pair(listener)
    if client_done:
        client.shutdown(socket.SHUT_WR)    # the client's FIN, which the rebuilt socket has
    s.client.setblocking(False)
    s.replica.setblocking(False)
    splicer = Splicer(server_alive=lambda addr: True)
    splicer.start()
    try:
        splicer.add([s])
        got, end = how_it_ends(client, timeout=2.0)
        assert end == "fin", f"the client is left {end}: the server's end never reached it"
        if client_done:
            wait_for(lambda: splicer.live == 0, 2, "the session to end", interval=0.01)
            assert s.error is None
    finally:
        splicer.stop()
        listener.close()


def test_prepare_can_hand_the_splicer_a_replica_that_already_ended():
    """How the session above arises: a hot replica whose server finished its answer and
    closed (the primary crashed just before its own FIN), with client bytes the replica
    was not given yet. prepare sends them and reads the end of stream in the same pass
    (replica_eof), the output covers what the primary sent, so the session is taken; at
    go the client gets the FIN (the server still listens)."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        conn.sendall(b"whole answer")
        conn.close()                       # the server program closes: a FIN
    threading.Thread(target=serve, daemon=True).start()
    replica = socket.create_connection(server.getsockname())
    time.sleep(0.2)
    assert replica.recv(100) == b"whole answer"    # what the hot pool read and kept as the tail
    s = Session("hot", "hot", 0, replica, unsent=b"one more line\n", tail_start=0, tail=b"whole answer", sent=12)
    clients = {}

    def make_socket(params, unacked):
        ours, clients[params] = client_pair(listener)
        ours.sendall(unacked)
        return ours
    prepare([s], timeout=3, make_socket=make_socket)
    assert s.error is None and s.replica_eof and not s.to_client
    client = clients["hot"]
    splicer = Splicer()
    splicer.start()
    try:
        splicer.add([s])
        assert how_it_ends(client, timeout=2.0) == (b"whole answer", "fin")
    finally:
        splicer.stop()
        server.close()
        listener.close()


def test_stopping_the_splicer_resets_a_session_registered_nowhere():
    """A half-closed client's session whose replica ended waits in its hold with no
    socket registered: the Splicer's stop must reset it too, not leave it open."""
    listener = socket.create_server(("127.0.0.1", 0))
    a, b = socket.socketpair()
    b.close()
    s = Session("held", None, 0, a, client_done=True)
    s.replica_eof = s.replica_shut = True
    s.client, client = client_pair(listener)
    client.shutdown(socket.SHUT_WR)
    s.client.setblocking(False)
    s.replica.setblocking(False)
    splicer = Splicer(server_alive=lambda addr: True, clock=lambda: 0.0)   # a hold that never ends
    splicer.start()
    try:
        splicer.add([s])
        wait_for(lambda: splicer.live == 1, 2, "the splicer to take it", interval=0.01)
    finally:
        splicer.stop()
        listener.close()
    assert how_it_ends(client, timeout=2.0) == (b"", "rst") and s.error == "agent stopping"

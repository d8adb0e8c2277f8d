"""Review finding 5: descriptors are paired with lines by a FIFO: stray ones shift every later adopt; a bad line strands an adopt.

The test states what should hold; it fails on the code under review."""
import socket
import threading
import time

import pytest

from ftcp.agent.relay import Relay
from tests.support.taken_over import Pairs, adopt_line, is_reset, send_raw


@pytest.fixture
def pairs():
    p = Pairs()
    yield p
    p.close()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "relay.sock")


def test_descriptors_that_came_without_an_adopt_never_pair_with_the_next_adopt(path, pairs):
    """Reader.read queues every SCM_RIGHTS set and gives the oldest to the next line
    whose "fds" is truthy. A message that brings descriptors but does not say so (a
    "list" here) leaves them queued: the next adopt (B) is given them, so B's pending
    output (to_client) goes to another connection's client, and B's own sockets stay
    queued for whichever adopt comes next."""
    relay = Relay(path)
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    try:
        stray, stray_peer, _ = pairs.session("stray")
        b, b_peer, _ = pairs.session("b")
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        send_raw(conn, b'{"cmd": "list"}\n', fds=(stray.client.fileno(), stray.replica.fileno()))
        time.sleep(0.2)
        send_raw(conn, adopt_line("b", to_client=b"B's private answer"), fds=(b.client.fileno(), b.replica.fileno()))
        time.sleep(0.5)
        stray.close()
        b.close()
        stray_peer.settimeout(0.5)
        try:
            leaked = stray_peer.recv(100)
        except socket.timeout:
            leaked = b""
        assert leaked == b"", f"another connection's client got B's bytes: {leaked!r}"
        b_peer.settimeout(2)
        assert b_peer.recv(100) == b"B's private answer"
    finally:
        relay.stop()
        thread.join(5)


def test_a_bad_line_after_an_adopt_in_the_same_read_neither_leaks_nor_strands_it(path, pairs):
    """An adopt and a line that does not parse arrive in one read: the adopt's
    descriptors were already taken off the queue into the list Reader.read was building,
    the JSONDecodeError discards that list, and _close closes only what is still queued.
    The adopt's two sockets stay open in the relay, neither relayed nor closed: its
    client neither gets data nor an end, for as long as the relay lives."""
    relay = Relay(path)
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    try:
        a, a_peer, a_replica_peer = pairs.session("a")
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        send_raw(conn, adopt_line("a") + b"{not json\n", fds=(a.client.fileno(), a.replica.fileno()))
        time.sleep(0.5)
        a.close()                        # the agent keeps nothing (as hand_over does)
        a_replica_peer.sendall(b"hello")
        state = is_reset(a_peer, timeout=2.0)
        with relay._lock:
            held = sorted(relay.sessions)
        assert state != "open" or held == ["a"], \
            f"session a is neither relayed ({held}) nor ended: its client's connection just hangs"
    finally:
        relay.stop()
        thread.join(5)

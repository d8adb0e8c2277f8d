"""Review finding 3: an agent that stops reading freezes the relay; a relay that stops reading blocks the agent's go.

The test states what should hold; it fails on the code under review."""
import socket
import threading
import time

import pytest

from ftcp.agent.handoff import RelayClient
from ftcp.agent.relay import Relay
from tests.support.taken_over import Pairs, adopt_line, send_raw
from topology.processes import wait_for


@pytest.fixture
def pairs():
    p = Pairs()
    yield p
    p.close()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "relay.sock")


def test_an_agent_that_stops_reading_does_not_freeze_the_relayed_connections(path, pairs):
    """The relay writes "adopted" and "ended" lines to the agent with blocking sendall
    under _send_lock, from the main thread and from the splicer's thread (on_end). An
    agent that is connected but does not read (stopped: SIGSTOP, a debugger, swapped
    out, stuck) fills the socket buffer after a few hundred lines; the splicer's thread
    then blocks in sendall and no session is relayed any more (the main thread blocks
    on _send_lock too, so a new agent is not answered either)."""
    relay = Relay(path)
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        live, live_peer, live_replica_peer = pairs.session("live")
        stuck.connect(path)           # an agent that never reads its answers
        wait_for(lambda: relay._agent is not None, 5, "the relay to see the agent", interval=0.01)
        send_raw(stuck, adopt_line("live"), fds=(live.client.fileno(), live.replica.fileno()))
        live.close()

        def hand_over_short_sessions():
            for i in range(600):      # sessions that end at once: each one an "ended" line
                c, c_peer = socket.socketpair()
                r, r_peer = socket.socketpair()
                c_peer.close()
                r_peer.close()
                try:
                    send_raw(stuck, adopt_line(f"short{i}"), fds=(c.fileno(), r.fileno()))
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
    finally:
        stuck.close()                 # unblocks the relay
        relay.stop()
        thread.join(5)


def test_hand_over_to_a_relay_that_does_not_read_does_not_block_the_agent(path, pairs):
    """RelayClient's socket has no timeout and hand_over runs on the agent's capture
    thread (Coordinator.go). A relay that accepts but does not read (frozen as in the
    test above, or stopped) blocks go in sendall: capture stops for every service of
    this backup, go is never answered. Here a relay that never reads, and a batch of
    sessions larger than the socket buffer."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    sessions = []
    for i in range(3):
        s, _peer, _rpeer = pairs.session(f"big{i}")
        s.to_replica = bytearray(b"x" * (1 << 20))   # client bytes the replica has not had yet
        sessions.append(s)
    result = []
    agent = RelayClient(path)
    t = threading.Thread(target=lambda: result.append(agent.hand_over(sessions)), daemon=True)
    t.start()
    t.join(5)
    blocked = t.is_alive()
    listener.close()
    for s in sessions:
        s.close()
    assert not blocked, "go (the capture thread) is blocked in hand_over by a relay that does not read"

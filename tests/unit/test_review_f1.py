"""Review finding 1: the relay dies (resetting every connection it holds) at its descriptor limit or on a malformed message.

The test states what should hold; it fails on the code under review."""
import socket
import time

import pytest

from ftcp.agent.handoff import RelayClient
from tests.support.taken_over import Pairs, is_reset, relay_process
from topology.processes import wait_for


@pytest.fixture
def pairs():
    p = Pairs()
    yield p
    p.close()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "relay.sock")


def test_the_relay_survives_its_fd_limit_and_keeps_what_it_holds(path, tmp_path, pairs):
    """The relay keeps the soft RLIMIT_NOFILE it was started with (1024 by default
    under systemd/login shells; the agent raises its own, the relay does not). Each
    session costs it 2 descriptors. Here the limit is 40: after a dozen sessions a
    handed-over message arrives with no SCM_RIGHTS (the kernel could not install the
    descriptors: MSG_CTRUNC), Reader.read pops an empty deque (IndexError), which
    nothing catches, and the relay process exits: every client it held is reset."""
    proc = relay_process(path, str(tmp_path / "relay.log"), nofile=40)
    try:
        first, first_peer, first_replica_peer = pairs.session("first")
        agent = RelayClient(path)
        assert agent.hand_over([first]) == []
        for i in range(30):
            s, _peer, _rpeer = pairs.session(f"s{i}")
            left = agent.hand_over([s])
            for rest in left:
                rest.close()
            time.sleep(0.02)
            if proc.poll() is not None:
                break
        time.sleep(0.5)
        log = open(tmp_path / "relay.log").read()
        alive = proc.poll() is None
        try:
            first_replica_peer.sendall(b"still there?")
        except OSError:
            pass                     # the relay is gone, and its end of the replica with it
        state = is_reset(first_peer, timeout=1.0)
        assert alive, f"the relay died at its fd limit (exit {proc.returncode}); first client: {state}; " \
                      f"log tail: {log[-600:]!r}"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("line", [b"[1]\n", b"null\n", b'"adopt"\n',
                                  b'{"cmd": "adopt", "id": "x", "fds": 2}\n'],
                         ids=["array", "null", "string", "adopt-without-descriptors"])
def test_a_malformed_message_does_not_kill_the_relay_and_its_sessions(path, tmp_path, pairs, line):
    """Valid JSON that is not an object (message.get: AttributeError) or an adopt line
    that says fds but carries none (fds.popleft(): IndexError) escapes Reader.read,
    whose caller catches only OSError and ValueError: serve_forever raises, the relay
    process exits, and every held client gets a RST."""
    proc = relay_process(path, str(tmp_path / "relay.log"))
    try:
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
    finally:
        proc.kill()
        proc.wait()

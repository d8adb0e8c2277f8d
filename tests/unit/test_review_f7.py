"""Review finding 7: a session with more than 16 MiB pending is refused by the relay.

The test states what should hold; it fails on the code under review."""
import threading

import pytest

from ftcp.agent.handoff import RelayClient
from ftcp.agent.relay import Relay
from tests.support.taken_over import Pairs


@pytest.fixture
def pairs():
    p = Pairs()
    yield p
    p.close()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "relay.sock")


def test_a_session_with_more_than_16_mib_pending_is_held_by_the_relay(path, pairs):
    """MAX_HEADER assumes a session carries at most 2 x BUFFER_LIMIT, but prepare ends a
    cold replay as soon as the output covers what the primary sent, with any part of
    the log still unsent (an upload the server had not answered yet): to_replica is the
    rest of the log, unbounded. Its adopt line is refused ("longer than the relay
    takes"), the relay drops the agent's connection and the agent relays it itself --
    so it dies with the agent, which the relay exists to prevent."""
    relay = Relay(path)
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    try:
        s, _peer, _rpeer = pairs.session("upload")
        s.to_replica = bytearray(b"u" * (13 << 20))
        agent = RelayClient(path)
        left = agent.hand_over([s])
        for rest in left:
            rest.close()
        assert left == [], "a session with 13 MiB still to pass to its replica is not held by the relay"
    finally:
        relay.stop()
        thread.join(5)

"""Review finding 2: a half-closed client whose replica server died before go gets a FIN, not a RST.

The test states what should hold; it fails on the code under review."""
import socket
import threading
import time

import pytest

from ftcp.agent import listening
from ftcp.agent.takeover import Session, Splicer
from tests.support.review_helpers import client_pair, how_it_ends


@pytest.fixture
def listener():
    s = socket.create_server(("127.0.0.1", 0))
    yield s
    s.close()


def test_a_server_that_died_before_go_resets_a_half_closed_client(listener):
    """The client had half-closed before the failover (client_done): prepare shuts the
    replica's write side at once. The replica's server answers part of the request and
    dies (its listener and connection closed). Both FINs crossed, so the replica socket
    is in CLOSE when the Splicer takes the session at go: listening.peer() gets
    ENOTCONN and returns None, and server_alive(None) is True ("a test's socketpair"):
    the client is told, with a FIN, that the truncated answer is all there is."""
    server = socket.create_server(("127.0.0.1", 0))
    addr = server.getsockname()

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
    assert not listening.is_listening(*addr)
    s.client, client = client_pair(listener)
    s.client.setblocking(False)
    s.replica.setblocking(False)
    splicer = Splicer()
    splicer.start()
    try:
        splicer.add([s])
        got, end = how_it_ends(client)
        assert got == b"PART OF THE ANSW"
        assert end == "rst", f"the client got a {end.upper()} after a dead server's partial answer " \
                             f"(replica_addr={s.replica_addr})"
    finally:
        splicer.stop()

"""Review finding 6: a session whose replica ended before go never ends.

The test states what should hold; it fails on the code under review."""
import socket
import threading
import time

import pytest

from ftcp.agent.takeover import Session, Splicer, prepare
from tests.support.taken_over import client_pair, how_it_ends


@pytest.fixture
def listener():
    s = socket.create_server(("127.0.0.1", 0))
    yield s
    s.close()


@pytest.mark.parametrize("client_done", [False, True], ids=["client-open", "client-half-closed"])
def test_a_replica_end_seen_before_go_reaches_the_client(listener, client_done):
    """prepare can see the replica's end of stream (a hot replica with client bytes
    still to send whose server had closed: WRITE and READ in one select, recv -> b"");
    the relay's adopt carries replica_eof too. The Splicer starts the EOF hold only
    from _io, and a session with replica_eof has no READ interest on the replica: with
    nothing left for the client, the hold is never started. The client waits forever
    for the end (or, half-closed, the session has no interest at all and is never
    ended, not even by the Splicer's stop)."""
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
        assert end == "fin", f"the client is left {end}: the server's end never reached it " \
                             f"(splicer.live={splicer.live})"
    finally:
        splicer.stop()


def test_prepare_can_hand_the_splicer_a_replica_that_already_ended(listener):
    """How the session above arises: a hot replica whose server finished its answer and
    closed (the primary crashed just before its own FIN), with client bytes the replica
    was not given yet. prepare sends them and reads the end of stream in the same pass
    (replica_eof), the output covers what the primary sent, so the session is taken;
    at go the client gets neither the FIN nor a RST."""
    from ftcp.agent.takeover import prepare
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        conn.sendall(b"whole answer")
        conn.close()                       # the server program closes: a FIN
    threading.Thread(target=serve, daemon=True).start()
    replica = socket.create_connection(server.getsockname())
    time.sleep(0.2)
    replica.recv(100)                      # what the hot pool read and kept as the tail
    s = Session("hot", "hot", 0, replica, unsent=b"one more line\n", tail_start=0, tail=b"whole answer", sent=12)
    clients = {}

    def make_socket(params, unacked):
        ours, clients[params] = client_pair(listener)
        ours.sendall(unacked)
        return ours
    prepare([s], timeout=3, make_socket=make_socket)
    assert s.error is None and s.replica_eof and not s.to_client
    client = clients["hot"]
    assert client.recv(100) == b"whole answer"
    splicer = Splicer()
    splicer.start()
    try:
        splicer.add([s])
        got, end = how_it_ends(client, timeout=2.0)
        assert end != "open", f"the client is left waiting: neither a FIN nor a RST (splicer.live={splicer.live})"
    finally:
        splicer.stop()
        server.close()

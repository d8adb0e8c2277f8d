"""The relay (ftcp/agent/relay.py) and the agent's side of it (ftcp/agent/handoff.py):
a session handed over goes on being relayed after the agent's side is gone; a restarted
agent learns what the relay holds and what ended; the relay dying resets its clients;
only the relay's own uid may hand sessions over. Real TCP on loopback, a real relay
(a thread here, a process where it is killed)."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

from ftcp.agent.handoff import RelayClient
from ftcp.agent.relay import Relay
from ftcp.agent.takeover import Session, prepare
from tests.support.line_server import LineServer
from tests.support.taken_over import TcpRepair
from topology.processes import wait_for


@pytest.fixture
def server():
    srv = LineServer()
    yield srv
    srv.close()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "relay.sock")


@pytest.fixture
def relay(path):
    r = Relay(path)
    thread = threading.Thread(target=r.serve_forever, daemon=True)
    thread.start()
    yield r
    r.stop()
    thread.join(5)
    assert not thread.is_alive()


def taken(server, tcp, name):
    s = Session.cold(name, name, 0, server.addr, b"PING a\n", sent=7)
    prepare([s], timeout=5, make_socket=tcp)
    assert s.error is None
    return s, tcp.clients[name]


def pong(client, word):
    client.settimeout(5)
    client.sendall(b"PING " + word + b"\n")
    want, got = b"PONG " + word + b"\n", b""
    while len(got) < len(want):
        data = client.recv(100)
        assert data, f"EOF after {got!r}"
        got += data
    return got == want


def test_a_session_handed_over_outlives_the_agents_side_and_a_new_agent_sees_it(relay, path, server):
    tcp = TcpRepair()
    s, client = taken(server, tcp, "a")
    ended = []
    agent = RelayClient(path, on_ended=lambda cid, err: ended.append((cid, err)))
    assert agent.hand_over([s]) == []
    assert s.client.fileno() == -1 and s.replica.fileno() == -1     # the agent kept nothing
    assert client.recv(7) == b"PONG a\n"
    agent.close()                                                    # the agent is gone
    for i in range(50):
        assert pong(client, b"%d" % i)
    again = RelayClient(path, on_ended=lambda cid, err: ended.append((cid, err)))
    assert again.held() == ["a"]
    client.sendall(b"QUIT\n")                                         # the server closes: a FIN
    client.settimeout(5)
    assert client.recv(1) == b""
    client.close()
    wait_for(lambda: ended, 5, "the relay to tell the session ended", interval=0.01)
    assert ended == [("a", None)] and again.held() == []
    again.close()


def test_the_replica_s_server_address_goes_along_with_a_session(relay, path, server):
    """The relay asks whether the server still listens at the address the agent took
    while the replica was connected, not at whatever the socket says by then."""
    tcp = TcpRepair()
    s, client = taken(server, tcp, "addr")
    agent = RelayClient(path)
    assert agent.hand_over([s]) == []
    wait_for(lambda: "addr" in relay.sessions, 5, "the relay to adopt it", interval=0.01)
    assert relay.sessions["addr"].replica_addr == server.addr
    agent.close()


def test_a_session_with_more_than_16_mib_pending_is_held_by_the_relay(relay, path):
    """The pending bytes once rode base64 in the adopt line, which the relay took up to
    16 MiB (MAX_HEADER). But prepare ends a cold replay as soon as the output covers
    what the primary sent, with any part of the log still unsent (an upload the server
    had not answered yet): to_replica is the rest of the log, as long as the log cap
    lets it be. Such a session was refused, and relayed by the agent -- so it died with
    the agent, which the relay exists to prevent. The bytes now follow the line."""
    tcp = TcpRepair()
    replica, replica_peer = socket.socketpair()
    s = Session("upload", None, 0, replica)
    s.client = tcp("upload", b"")
    upload = bytes(range(256)) * ((40 << 20) // 256)          # 40 MiB the replica has not had yet
    s.to_replica = bytearray(upload)
    s.to_client = bytearray(b"the answer so far")
    agent = RelayClient(path, timeout=10.0)
    got = []
    reader = threading.Thread(target=lambda: got.append(_read_all(replica_peer, len(upload))), daemon=True)
    reader.start()
    left = agent.hand_over([s])
    for rest in left:
        rest.close()
    assert left == [], "a session with 40 MiB still to pass to its replica is not held by the relay"
    reader.join(20)
    assert got == [upload]                                      # every byte, in order
    client = tcp.clients["upload"]
    client.settimeout(5)
    assert client.recv(100) == b"the answer so far"
    agent.close()


def _read_all(sock, n):
    sock.settimeout(20)
    out = bytearray()
    while len(out) < n:
        data = sock.recv(1 << 20)
        if not data:
            break
        out += data
    return bytes(out)


def test_without_a_relay_the_sessions_come_back_to_be_relayed_by_the_agent(path, server):
    tcp = TcpRepair()
    s, _client = taken(server, tcp, "b")
    assert RelayClient(path).hand_over([s]) == [s]
    assert s.client.fileno() >= 0
    s.close()


def test_the_relay_killed_resets_its_clients(path, server):
    proc = subprocess.Popen([sys.executable, "-m", "ftcp.agent.relay", "--socket", path],
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        wait_for(lambda: os.path.exists(path), 10, "the relay's socket", interval=0.01)
        tcp = TcpRepair()
        s, client = taken(server, tcp, "c")
        agent = RelayClient(path)
        wait_for(lambda: agent.held() == [], 10, "the relay to answer", interval=0.05)
        assert agent.hand_over([s]) == []
        assert client.recv(7) == b"PONG a\n" and pong(client, b"x")
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        client.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while client.recv(100):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_only_the_relays_uid_may_connect():
    where = tempfile.mkdtemp(prefix="ftcp-relay-")
    os.chmod(where, 0o755)
    path = os.path.join(where, "relay.sock")
    relay = Relay(path)
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    os.chmod(path, 0o666)      # past the file's mode: the relay checks the peer itself
    pid = os.fork()
    if pid == 0:               # the child: another user tries to hand something over
        code = 1
        try:
            os.setuid(65534)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            sock.settimeout(5)
            try:
                sock.sendall(b'{"cmd": "list"}\n')
                code = 0 if sock.recv(100) == b"" else 2  # closed without an answer
            except (ConnectionResetError, BrokenPipeError):
                code = 0
        except BaseException as e:
            os.write(2, repr(e).encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    relay.stop()
    thread.join(5)
    shutil.rmtree(where)
    assert os.waitstatus_to_exitcode(status) == 0

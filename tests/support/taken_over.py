"""Taken-over sessions over real sockets for the relay's and the splicer's tests: sessions,
a relay process, how a connection ends."""
import array
import json
import os
import resource
import socket
import subprocess
import sys

from ftcp.agent import repair
from ftcp.agent.takeover import Session
from topology.processes import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Pairs:
    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.keep = []

    def tcp(self):
        """(ours: SO_LINGER 0 like a repaired socket, the client's end)"""
        ours = socket.create_connection(self.listener.getsockname())
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, repair.LINGER_RST)
        theirs, _ = self.listener.accept()
        self.keep.append(theirs)
        return ours, theirs

    def session(self, name, to_client=b""):
        client, client_peer = self.tcp()
        replica, replica_peer = socket.socketpair()
        self.keep.append(replica_peer)
        s = Session(name, None, 0, replica)
        s.client = client
        s.to_client = bytearray(to_client)
        return s, client_peer, replica_peer

    def close(self):
        for s in [self.listener, *self.keep]:
            s.close()


def relay_process(path, log, nofile=None):
    """``python -m ftcp.agent.relay``; nofile: its RLIMIT_NOFILE (a number, or (soft, hard))."""
    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile if isinstance(nofile, tuple) else (nofile, nofile))
    proc = subprocess.Popen([sys.executable, "-m", "ftcp.agent.relay", "--socket", path, "--log-file", log],
                            cwd=ROOT, preexec_fn=limit)
    wait_for(lambda: os.path.exists(path), 10, "the relay's socket", interval=0.01)
    return proc


def is_reset(peer, timeout=3.0) -> str:
    peer.settimeout(timeout)
    try:
        while peer.recv(65536):
            pass
    except ConnectionResetError:
        return "rst"
    except socket.timeout:
        return "open"
    return "fin"


def send_raw(sock, data: bytes, fds=()):
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(data)


def adopt_line(name, to_client=b"", to_replica=b"", **kw) -> bytes:
    """An adopt as the agent sends it: its line, then the pending bytes."""
    msg = {"cmd": "adopt", "id": name, "fds": 2, "to_client": len(to_client), "to_replica": len(to_replica),
           "bytes": len(to_client) + len(to_replica), "client_eof": False, "replica_eof": False,
           "client_shut": False, "replica_shut": False, **kw}
    return json.dumps(msg).encode() + b"\n" + to_client + to_replica


def client_pair(listener):
    ours = socket.create_connection(listener.getsockname())
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, repair.LINGER_RST)
    theirs, _ = listener.accept()
    return ours, theirs


def how_it_ends(peer, timeout=3.0):
    """(bytes received, "fin" | "rst" | "open")"""
    peer.settimeout(timeout)
    got = b""
    try:
        while True:
            data = peer.recv(65536)
            if not data:
                return got, "fin"
            got += data
    except ConnectionResetError:
        return got, "rst"
    except socket.timeout:
        return got, "open"


def open_fds(pid) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class TcpRepair:
    """``make_socket`` stand-in with real TCP on loopback: our end gets SO_LINGER 0 as a
    repaired socket does, so a close that is not a session's normal end is a RST the
    test's end (the client) can see."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.clients = {}

    def __call__(self, params, unacked):
        ours = socket.create_connection(self.listener.getsockname())
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, repair.LINGER_RST)
        self.clients[params], _ = self.listener.accept()
        ours.sendall(unacked)      # what TCP_REPAIR queues as already sent reaches the client
        return ours

    def close(self):
        for s in [self.listener, *self.clients.values()]:
            s.close()

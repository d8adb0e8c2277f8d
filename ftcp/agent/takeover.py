"""Take over a connection on the backup: repaired client socket spliced to the replica.

One ``Session`` per connection. The replica connection is either the hot one that
has been fed all along (ftcp/agent/replica.py: only its unsent input and its kept
output ``tail`` come along), or, cold, a fresh one fed the whole frozen log. The
client's socket is rebuilt with TCP_REPAIR and two threads splice the two. Replica
output below ``skip`` (what the client acknowledged to the primary) is dropped; what
follows is held until ``go`` (the switch now sends the client to us), then flows.
"""
from __future__ import annotations

import logging
import socket
import threading
import zlib

from ftcp.agent import repair

LOG = logging.getLogger("ftcp.agent.takeover")
CHUNK = 65536


class Diverged(ValueError):
    """The replica's output is not the primary's."""


class Session:
    def __init__(self, conn_id: str, params: repair.RepairParams, skip: int, replica: socket.socket,
                 unsent: bytes = b"", tail_start: int = 0, tail: bytes = b"", checks=(), sent: int = 0,
                 make_socket=repair.repaired_socket):
        self.conn_id = conn_id
        self.params = params
        self.skip = skip              # server bytes the client acknowledged
        self.sent = max(sent, skip)   # server bytes the primary sent (the mirror saw)
        self.replica = replica
        self.log = unsent            # client bytes the replica has not been given yet
        self.tail_start = tail_start  # replica output offset of tail[0]
        self.tail = tail              # replica output already read, not yet known to the client
        self.checks = list(checks)    # (offset, length, crc32) the primary sent, still to compare
        self._make_socket = make_socket
        self._go = threading.Event()
        self._client_ready = threading.Event()
        self._pending = b""
        self.client = None
        self.error = None
        self.to_client = self.to_replica = 0
        self.mode = "hot"
        self._threads = []

    @classmethod
    def cold(cls, conn_id, params, skip, replica_addr, log, **kw):
        """A fresh replica connection that is fed the whole log."""
        sock = socket.create_connection(replica_addr, timeout=5)
        sock.settimeout(None)
        return cls(conn_id, params, skip, sock, unsent=log, **kw)

    def start(self) -> None:
        """Read the replica up to what the primary sent, compare, rebuild the client
        socket with the unacknowledged part queued, start splicing (raises on failure,
        Diverged included)."""
        try:
            # The c2r thread feeds the replica meanwhile: the log may be what it needs.
            self._start_thread(self._client_to_replica, "c2r", early=True)
            data = self._verified_start()
            rel_acked, rel_sent = self.skip - self.tail_start, self.sent - self.tail_start
            if rel_acked < 0 or len(data) < rel_sent:
                raise Diverged(f"the replica's output ({self.tail_start + len(data)} bytes) does not reach what "
                               f"the primary sent ({self.sent})")
            self._pending = data[rel_sent:]
            self.client = self._make_socket(self.params, data[rel_acked:rel_sent])
        except BaseException:
            self._client_ready.set()   # the c2r thread sees no client and ends
            self.replica.close()
            raise
        self._client_ready.set()
        self._start_thread(self._replica_to_client, "r2c")

    def _start_thread(self, target, name, early=False):
        t = threading.Thread(target=target, name=f"{name} {self.conn_id}", daemon=True)
        t.start()
        self._threads.append(t)

    def go(self) -> None:
        """The client now reaches us: release the replica's output and kick."""
        self._go.set()
        try:
            # The client may be waiting in a retransmission timeout: a window probe
            # makes it answer (and resend) now.
            repair.window_probe(self.client)
        except OSError as e:
            LOG.warning("%s: window probe failed: %s", self.conn_id, e)

    def _client_to_replica(self):
        try:
            self.replica.sendall(self.log)
            self.log = b""
            self._client_ready.wait()
            if self.client is None:
                return   # the takeover of this connection failed
            while True:
                data = self.client.recv(CHUNK)
                if not data:
                    self.replica.shutdown(socket.SHUT_WR)
                    return
                self.replica.sendall(data)
                self.to_replica += len(data)
        except OSError as e:
            self._fail(f"client->replica: {e}")

    def _verified_start(self) -> bytes:
        """The replica's output from ``tail_start``, read until it covers what the
        primary sent and every segment not compared yet, and compared: no replica
        byte reaches the client before that. Raises Diverged."""
        data = bytearray(self.tail)
        need = max([self.sent] + [off + n for off, n, _ in self.checks])
        while self.tail_start + len(data) < need:
            chunk = self.replica.recv(CHUNK)
            if not chunk:
                break  # the replica ended early: nothing more to compare against
            data += chunk
        view = memoryview(data)
        for off, n, crc in self.checks:
            rel = off - self.tail_start
            if rel >= 0 and rel + n <= len(data) and zlib.crc32(view[rel:rel + n]) != crc:
                raise Diverged(f"diverged at takeover: the replica's output differs from the primary's "
                               f"at server byte {off}")
        return bytes(data)

    def _replica_to_client(self):
        pending, self._pending, self.tail = self._pending, b"", b""
        try:
            while True:
                if pending:
                    data, pending = pending, b""
                else:
                    data = self.replica.recv(CHUNK)
                if not data:
                    self._go.wait()
                    self.client.shutdown(socket.SHUT_WR)
                    return
                self._go.wait()
                self.client.sendall(data)
                self.to_client += len(data)
        except OSError as e:
            self._fail(f"replica->client: {e}")

    def _fail(self, why: str):
        if self.error is None:
            self.error = why
            LOG.error("%s: %s", self.conn_id, why)

    def close(self):
        for sock in (self.client, self.replica):
            if sock is not None:
                sock.close()

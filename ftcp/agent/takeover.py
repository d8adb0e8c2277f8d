"""Take over a connection on the backup: replica fed the log, repaired socket, splice.

One ``Session`` per connection (cold replay): a fresh connection to the replica (the
same server program on the backup) is fed the frozen client log, the client's socket
is rebuilt with TCP_REPAIR, and two threads splice them. The replica's first
``skip`` output bytes already reached the client from the primary (the client
acknowledged them), so they are dropped; what follows is held until ``go`` (the
switch now sends the client to us), then flows to the client.
"""
from __future__ import annotations

import logging
import socket
import threading

from ftcp.agent import repair

LOG = logging.getLogger("ftcp.agent.takeover")
CHUNK = 65536


class Session:
    def __init__(self, conn_id: str, params: repair.RepairParams, log: bytes, skip: int, replica: tuple,
                 make_socket=repair.repaired_socket):
        self.conn_id = conn_id
        self.params = params
        self.log = log
        self.skip = skip
        self.replica_addr = replica
        self._make_socket = make_socket
        self._go = threading.Event()
        self.client = self.replica = None
        self.error = None
        self.to_client = self.to_replica = 0
        self._threads = []

    def start(self) -> None:
        """Connect the replica and rebuild the client socket (raises on failure)."""
        self.replica = socket.create_connection(self.replica_addr, timeout=5)
        self.replica.settimeout(None)
        try:
            self.client = self._make_socket(self.params)
        except BaseException:
            self.replica.close()
            raise
        for target, name in ((self._client_to_replica, "c2r"), (self._replica_to_client, "r2c")):
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
            while True:
                data = self.client.recv(CHUNK)
                if not data:
                    self.replica.shutdown(socket.SHUT_WR)
                    return
                self.replica.sendall(data)
                self.to_replica += len(data)
        except OSError as e:
            self._fail(f"client->replica: {e}")

    def _replica_to_client(self):
        skip = self.skip
        try:
            while True:
                data = self.replica.recv(CHUNK)
                if not data:
                    if skip:
                        self._fail(f"replica ended {skip} bytes short of what the client already has")
                        return
                    self._go.wait()
                    self.client.shutdown(socket.SHUT_WR)
                    return
                if skip:
                    dropped = min(skip, len(data))
                    data, skip = data[dropped:], skip - dropped
                    if not data:
                        continue
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

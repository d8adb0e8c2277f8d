"""The agent's side of the relay (ftcp/agent/relay.py): at ``go`` the sessions of a
takeover are handed over to the relay, which holds them from then on, so the agent may
stop, restart or die without cutting a taken-over connection.

A session handed over is the relay's alone: the agent closes its own descriptors as
soon as they are sent (the kernel holds a reference in flight), and never relays a
session it sent, whatever the answer -- two relays of one connection would interleave
its bytes. What could not be sent (no relay listening, the relay gone mid-way, or one
that reads nothing for ``timeout`` seconds) comes back to the caller, which relays it in
the agent rather than dropping it. A message cut short by the timeout is one the relay
never takes (it closes the descriptors of a message that did not come whole).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable, Optional

from ftcp.agent.handoff_protocol import Reader, send_message, send_session

LOG = logging.getLogger(__name__)


class RelayClient:
    def __init__(self, path: str, on_ended: Optional[Callable[[str, Optional[str]], None]] = None,
                 timeout: float = 2.0):
        self.path, self.on_ended, self.timeout = path, on_ended, timeout
        self.sock = None
        self._lock = threading.Lock()
        self._answers = threading.Condition()
        self._held = None       # the ids the relay said it holds, at the last ``list``
        self.adopted = 0

    def _connect(self) -> bool:
        if self.sock is not None:
            return True
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            LOG.error("no relay at %s (%s): taken-over connections are relayed by the agent itself and end "
                      "with it", self.path, e)
            return False
        self.sock = sock
        threading.Thread(target=self._read, args=(sock,), name="ftcp-relay-answers", daemon=True).start()
        return True

    def _read(self, sock: socket.socket) -> None:
        reader = Reader(sock)
        while True:
            try:
                messages = reader.read()
            except (OSError, ValueError) as e:
                LOG.error("relay connection failed: %s", e)
                messages = None
            if messages is None:
                with self._lock:
                    if self.sock is sock:
                        self.sock = None
                sock.close()
                return
            for incoming in messages:
                for fd in incoming.fds:    # the relay sends none
                    os.close(fd)
                self._answer(incoming.message)

    def _answer(self, message: dict) -> None:
        cmd = message.get("cmd")
        if cmd == "ended":
            if message.get("error"):
                LOG.warning("%s: ended in the relay: %s", message.get("id"), message["error"])
            else:
                LOG.info("%s: ended in the relay", message.get("id"))
            if self.on_ended is not None:
                self.on_ended(message.get("id"), message.get("error"))
        elif cmd == "sessions":
            with self._answers:
                self._held = list(message.get("ids") or [])
                self._answers.notify_all()
        elif cmd == "adopted":
            with self._answers:
                self.adopted += 1
                self._answers.notify_all()
        elif cmd == "error":
            LOG.error("the relay refused %s: %s", message.get("id") or "a request", message.get("error"))

    def hand_over(self, sessions: list) -> list:
        """Give the relay these kicked sessions; returns those it could not be given.
        A relay that stops reading holds it up ``timeout`` seconds at most: each
        session's message must be sent whole within it (SO_SNDTIMEO set to what is left
        before each send), else it and the ones after it come back."""
        with self._lock:
            if not sessions or not self._connect():
                return list(sessions)
            for i, s in enumerate(sessions):
                try:
                    send_session(self.sock, s, time.monotonic() + self.timeout)
                except OSError as e:     # TimeoutError included
                    LOG.error("handing %s to the relay failed (%s): it and %d more are relayed by the agent",
                              s.conn_id, e, len(sessions) - i - 1)
                    self._disconnect()    # a message cut short: the relay drops it with the connection
                    return sessions[i:]
                s.close()    # the relay's now: the kernel keeps the socket for it
        return []

    def _disconnect(self) -> None:
        """Close the connection (with the lock held); the answers' thread ends too."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.sock = None

    def held(self) -> Optional[list]:
        """The ids of the sessions the relay holds (None: it did not say in time)."""
        with self._lock:
            if not self._connect():
                return None
            with self._answers:
                self._held = None
            try:
                send_message(self.sock, {"cmd": "list"}, deadline=time.monotonic() + self.timeout)
            except OSError as e:
                LOG.error("cannot ask the relay what it holds: %s", e)
                self._disconnect()
                return None
        with self._answers:
            self._answers.wait_for(lambda: self._held is not None, self.timeout)
            return self._held

    def close(self) -> None:
        with self._lock:
            if self.sock is not None:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

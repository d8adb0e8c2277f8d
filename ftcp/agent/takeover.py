"""Take over connections on the backup: repaired client sockets spliced to replicas.

A takeover handles all of a service's connections at once, in two phases:

* ``prepare`` (the takeover's worker thread, before ``ready``): each connection's replica --
  the hot one that has been fed all along (only its unsent input and its kept output
  ``tail`` come along, ftcp/agent/replica.py) or, cold, a fresh connection fed the
  whole frozen log -- is read until its output covers what the primary sent and every
  primary segment not compared yet; the output is compared (a mismatch: the
  connection is not taken, never spliced); the client's socket is rebuilt with
  TCP_REPAIR with the unacknowledged part queued as already sent. One selector drives
  every replica, so a thousand cold replays overlap instead of queueing.
* ``Splicer`` (one thread for every live session, after ``go``: the switch now sends
  the client to us): the replica's output flows to the client, the client's bytes to
  the replica. Nothing reaches the client before ``go``: until then the backup's
  packets would reach the client from the wrong address.

A taken-over connection ends with a FIN only when the server program closed its side:
the replica's end of stream is held for ``EOF_HOLD`` and passed on only if the server
still listens then (ftcp/agent/listening.py); a server that died takes its listener
with it, and its clients get a RST. Every other end -- an error, the agent stopping,
the agent killed -- is a RST too: the client sockets keep SO_LINGER 0 until a session
ends normally, so even the kernel's close of a dead agent's sockets resets them.

This module is long because a session is shared by both phases: prepare fills it, the
splicer drains it, and the rules for how it ends sit with the splicer that applies them.
"""
from __future__ import annotations

import collections
import errno
import logging
import math
import os
import selectors
import socket
import threading
import time

from ftcp.agent import listening, repair
from ftcp.agent.acks import AckNumbers, ack_segment
from ftcp.agent.divergence import settle
from ftcp.agent.wakeup import Wakeup
from ftcp.common.statuses import Reason

LOG = logging.getLogger(__name__)
CHUNK = 65536
# Bytes a session buffers each way before it stops reading that side (TCP flow
# control then holds the sender back).
BUFFER_LIMIT = 1 << 20
# How long a replica's end of stream waits before the splicer asks whether its server
# still listens: a dying process closes its listener and its connections within it.
EOF_HOLD = 0.05
# Holds end on a multiple of this, so the ends of stream seen together are checked
# together, against one read of the kernel's listeners (a hold is never shorter).
EOF_TICK = 0.01


class Diverged(ValueError):
    """The replica's output is not the primary's."""


class Session:
    """One connection's takeover: its replica socket, what is still to be compared and
    sent, and (once prepared) the repaired client socket."""

    def __init__(self, conn_id: str, params: repair.RepairParams, client_acked: int, replica: socket.socket,
                 unsent: bytes = b"", tail_start: int = 0, tail: bytes = b"", checks=(), sent: int = 0,
                 mode: str = "hot", connecting: bool = False, client_done: bool = False, replica_addr=None):
        self.conn_id = conn_id
        self.params = params
        self.client_acked = client_acked   # server bytes the client acknowledged
        self.sent = max(sent, client_acked)   # server bytes the primary sent (as far as the mirror saw)
        self.replica = replica
        self.mode = mode
        self.tail_start = tail_start     # replica output offset of out[0]
        self.out = bytearray(tail)       # replica output not yet known to the client
        self.checks = list(checks)       # (offset, length, expectation) the primary sent, still to compare
        self.differed = 0                # bytes of it the replica produced differently (tolerated)
        self.need = max([self.sent] + [off + n for off, n, _ in self.checks])
        self.to_replica = bytearray(unsent)   # client bytes the replica has not been given
        self.to_client = bytearray()          # replica output for the client, after go
        self.connecting = connecting
        self.replica_eof = False
        # client_done: the client had sent its FIN (half-closed): the replica gets EOF
        # after the log, as the primary did, and the rebuilt socket has the FIN already
        self.client_eof = client_done
        self.client_shut = self.replica_shut = False
        self.ended = False
        self.client = None
        # the replica's server (address, port): asked at the end of stream whether it still
        # listens. Taken now, while the replica is connected (once both ends of stream have
        # crossed the socket has no peer any more); None: not known, which is not alive.
        self.replica_addr = tuple(replica_addr[:2]) if replica_addr else listening.peer(replica)
        self.error = None
        self.to_client_bytes = self.to_replica_bytes = 0

    @classmethod
    def cold(cls, conn_id, params, client_acked, replica_addr, log: bytes, **kw) -> "Session":
        """A fresh replica connection that is fed the whole log (connects in ``prepare``)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # a relay: no Nagle delay
        err = sock.connect_ex(replica_addr)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, f"cannot connect to the replica at {replica_addr[0]}:{replica_addr[1]}: "
                               f"{os.strerror(err)}")
        return cls(conn_id, params, client_acked, sock, unsent=log, mode="cold", connecting=True,
                   replica_addr=replica_addr, **kw)

    @property
    def covered(self) -> bool:
        return self.tail_start + len(self.out) >= self.need

    def finish_prepare(self, make_socket=repair.repaired_socket) -> None:
        """Compare, then rebuild the client socket (raises Diverged or OSError)."""
        for off, n, expected in self.checks:
            rel = off - self.tail_start
            if rel < 0:
                continue   # output the client acknowledged before the pool could compare it
            if rel + n > len(self.out):
                raise Diverged(f"the replica's output ended at server byte {self.tail_start + len(self.out)}, "
                               f"before the primary's segment at {off}")
            count = settle(expected, self.out, rel, n)
            if count is None:
                raise Diverged(f"{Reason.DIVERGED.text} at takeover: the replica's output differs from the primary's "
                               f"at server byte {off}")
            self.differed += count
        rel_acked, rel_sent = self.client_acked - self.tail_start, self.sent - self.tail_start
        if rel_acked < 0 or len(self.out) < rel_sent:
            raise Diverged(f"the replica's output ({self.tail_start + len(self.out)} bytes) does not reach what "
                           f"the primary sent ({self.sent})")
        self.client = make_socket(self.params, bytes(self.out[rel_acked:rel_sent]))
        self.client.setblocking(False)
        self.to_client = self.out[rel_sent:]
        self.out = bytearray()

    def kick(self, acks=None) -> bool:
        """A window probe makes the client answer with an ACK now, telling the rebuilt
        socket what it has of the primary's last bytes; then ``acks``
        (ftcp/agent/acks.py) tells the client what the socket has of its bytes, so
        it resends the rest at once instead of on its retransmission timer.
        True when both went out."""
        try:
            snd_nxt, rcv_nxt, rcv_wnd, tsval = repair.window_probe(self.client)
            if acks is None:
                return False
            p = self.params
            numbers = AckNumbers(snd_nxt, rcv_nxt, rcv_wnd >> p.rcv_wscale, tsval, p.ts_recent)
            acks.send(ack_segment(p.local, p.remote, numbers, p.timestamps), p.remote[0])
            return True
        except OSError as e:
            LOG.warning("%s: kick failed: %s", self.conn_id, e)
            return False

    def shut_replica_if_done(self) -> None:
        """Pass the client's FIN on to the replica once it has every byte before it."""
        if self.client_eof and not self.to_replica and not self.replica_shut and not self.connecting:
            self.replica_shut = True
            try:
                self.replica.shutdown(socket.SHUT_WR)
            except OSError:
                pass   # the hot replica's pool may have shut it already

    def close(self) -> None:
        for sock in (self.client, self.replica):
            if sock is not None:
                sock.close()


def prepare(sessions, timeout: float, clock=time.monotonic, make_socket=repair.repaired_socket) -> None:
    """Drive every session's replica until its output covers what is needed, then
    compare and rebuild its client socket. A session that cannot be taken gets its
    ``error`` set and its sockets closed; the others are ready for ``Splicer.add``."""
    sel = selectors.DefaultSelector()
    deadline = clock() + timeout

    def done(s, error=None):
        if s.replica.fileno() >= 0 and s in waiting:
            sel.unregister(s.replica)
        waiting.discard(s)
        if error is None:
            try:
                s.finish_prepare(make_socket)
                return
            except (OSError, ValueError) as e:
                error = str(e)
        s.error = error
        s.close()

    waiting = set()
    for s in sessions:
        if s.replica_addr is None:
            s.replica_addr = listening.peer(s.replica)
        s.replica.setblocking(False)
        s.shut_replica_if_done()
        if not s.connecting and not s.to_replica and s.covered:
            done(s)   # a hot replica that is already where the primary was
            continue
        sel.register(s.replica, selectors.EVENT_READ | selectors.EVENT_WRITE, s)
        waiting.add(s)
    while waiting:
        left = deadline - clock()
        if left <= 0:
            for s in list(waiting):
                done(s, f"the replica did not produce {s.need} bytes within {timeout:.1f} s")
            break
        for key, mask in sel.select(left):
            s = key.data
            try:
                if mask & selectors.EVENT_WRITE:
                    if s.connecting:
                        err = s.replica.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, f"replica connection: {os.strerror(err)}")
                        s.connecting = False
                    if s.to_replica:
                        del s.to_replica[:s.replica.send(s.to_replica)]
                    s.shut_replica_if_done()
                if mask & selectors.EVENT_READ:
                    data = s.replica.recv(CHUNK)
                    if data:
                        s.out += data
                    else:
                        s.replica_eof = True
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                done(s, f"replica: {e.strerror or e}")
                continue
            if s.covered or s.replica_eof:
                done(s)
            elif not s.connecting and not s.to_replica:
                sel.modify(s.replica, selectors.EVENT_READ, s)
    sel.close()


class Splicer(threading.Thread):
    """One selector thread that splices every live session: client <-> replica."""

    def __init__(self, server_alive=None, clock=time.monotonic, on_end=None, stopping: str = "agent stopping",
                 listeners=listening.listeners):
        super().__init__(name="ftcp-splicer", daemon=True)
        self._sel = selectors.DefaultSelector()
        self._new = collections.deque()
        self._wakeup = Wakeup()
        self._sel.register(self._wakeup, selectors.EVENT_READ, None)
        self._events = {}     # socket -> registered events
        self._halt = False
        # server_alive(address) -> bool, asked per session (tests); by default every hold
        # that ends in one pass is checked against one read of the listeners.
        self._server_alive, self._listeners, self._clock = server_alive, listeners, clock
        self._on_end, self._stopping = on_end, stopping   # told of each ended session; why a stop ends them
        self._held = {}       # session -> when its replica's end of stream is checked
        self._sessions = set()   # every live session (one with nothing to wait for is registered nowhere)
        self.live = 0

    def add(self, sessions) -> None:
        """Start splicing these prepared sessions (called at ``go``)."""
        self._new.extend(sessions)
        self._wakeup.wake()

    def stop(self) -> None:
        self._halt = True
        self.add(())
        self.join(5)

    def run(self) -> None:
        while not self._halt:
            due = min(self._held.values(), default=None)
            timeout = 1.0 if due is None else max(0.0, min(1.0, due - self._clock()))
            for key, mask in self._sel.select(timeout=timeout):
                if key.data is None:
                    self._wakeup.drain()
                    continue
                s, side = key.data
                if not s.ended:   # an earlier event of this batch may have ended it
                    self._io(s, side, mask)
            self._take_new()
            self._check_held()
        self._take_new()
        for s in list(self._sessions):   # registered or not: every live one is reset
            self._end(s, self._stopping)
        self._sel.close()
        self._wakeup.close()

    def _take_new(self) -> None:
        while self._new:
            s = self._new.popleft()
            if s.replica_addr is None:
                s.replica_addr = listening.peer(s.replica)
            self.live += 1
            self._sessions.add(s)
            # an end of stream seen before go (in prepare, or by the agent before the
            # relay took it) is passed on as one seen here would be
            self._advance(s)

    def _io(self, s: Session, side: str, mask: int) -> None:
        try:
            if side == "r":
                eof, sent = _pump(s.replica, mask, s.to_client, s.to_replica)
                s.replica_eof |= eof
                s.to_replica_bytes += sent
            else:
                eof, sent = _pump(s.client, mask, s.to_replica, s.to_client)
                s.client_eof |= eof
                s.to_client_bytes += sent
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._end(s, f"{'replica' if side == 'r' else 'client'}: {e.strerror or e}")
            return
        self._advance(s)

    def _advance(self, s: Session) -> None:
        """A side's end of stream is passed on once everything before it has been (the
        replica's once its server is known to be alive: _check_held); the session ends
        when both have been and nothing is left to send."""
        if s.replica_eof and not s.to_client and not s.client_shut and s not in self._held:
            self._held[s] = math.ceil((self._clock() + EOF_HOLD) / EOF_TICK) * EOF_TICK
        if s.client_eof and not s.to_replica and not s.replica_shut:
            s.replica_shut = True
            if not self._shut(s, s.replica, "replica"):
                return
        if s.client_shut and s.client_eof and not s.to_client and not s.to_replica:
            self._end(s)
            return
        self._update(s)

    def _check_held(self) -> None:
        """Pass on the replicas' ends of stream whose hold is over: a FIN to the client if
        the server still listens (it closed this connection), else a RST (it died)."""
        now = self._clock()
        table = None      # the kernel's listeners, read once for every hold that ends now
        for s in [s for s, due in self._held.items() if due <= now]:
            del self._held[s]
            if s.ended:
                continue
            if self._server_alive is not None:
                alive = self._server_alive(s.replica_addr)
            else:
                if table is None and s.replica_addr is not None:
                    table = self._listeners()
                alive = listening.server_alive(s.replica_addr, table)
            if not alive:
                self._end(s, "the server on this host no longer listens: its connection ended with it "
                             "(the client is reset, not told it has everything)")
                continue
            s.client_shut = True
            if self._shut(s, s.client, "client"):
                self._advance(s)

    def _shut(self, s: Session, sock, side: str) -> bool:
        """Pass an end of stream on to one side (its FIN); an error ends the session."""
        try:
            sock.shutdown(socket.SHUT_WR)
            return True
        except OSError as e:
            self._end(s, f"{side}: {e.strerror or e}")
            return False

    def _update(self, s: Session) -> None:
        """Read a side while the other side's buffer has room and it has not ended;
        write a side while there is something for it."""
        want_r = ((selectors.EVENT_READ if not s.replica_eof and len(s.to_client) < BUFFER_LIMIT else 0)
                  | (selectors.EVENT_WRITE if s.to_replica else 0))
        want_c = ((selectors.EVENT_READ if not s.client_eof and len(s.to_replica) < BUFFER_LIMIT else 0)
                  | (selectors.EVENT_WRITE if s.to_client else 0))
        self._interest(s.replica, want_r, (s, "r"))
        self._interest(s.client, want_c, (s, "c"))

    def _interest(self, sock, events, data) -> None:
        old = self._events.get(sock, 0)
        if events == old:
            return
        if not events:
            self._sel.unregister(sock)
            del self._events[sock]
        elif old:
            self._sel.modify(sock, events, data)
            self._events[sock] = events
        else:
            self._sel.register(sock, events, data)
            self._events[sock] = events

    def _end(self, s: Session, error=None) -> None:
        """End a session: after both ends of stream were passed on, a normal close (what
        the client was sent still arrives); else a RST to the client."""
        s.ended = True
        self._held.pop(s, None)
        self._sessions.discard(s)
        if error is not None:
            s.error = error
            LOG.error("%s: %s", s.conn_id, error)
        else:
            LOG.info("%s: closed after takeover (%d bytes to the client, %d to the replica)", s.conn_id,
                     s.to_client_bytes, s.to_replica_bytes)
            try:
                repair.released(s.client)
            except OSError:
                pass
        for sock in (s.replica, s.client):
            self._interest(sock, 0, None)
        s.close()
        self.live -= 1
        if self._on_end is not None:
            self._on_end(s)


def _pump(sock, mask: int, into: bytearray, out: bytearray):
    """One side of a session: read what it sends into ``into`` and write ``out`` to it.
    Returns (it ended its output, bytes written)."""
    eof, sent = False, 0
    if mask & selectors.EVENT_READ:
        data = sock.recv(CHUNK)
        if data:
            into += data
        else:
            eof = True
    if mask & selectors.EVENT_WRITE and out:
        sent = sock.send(out)
        del out[:sent]
    return eof, sent

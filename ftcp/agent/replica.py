"""Hot standby: one connection to the backup's replica per protected connection,
fed the client's bytes as they are logged, its output consumed as the client
acknowledges the primary's. At takeover the replica is already where the primary
was, so a takeover only rebuilds sockets (no replay, no regeneration stall).

One selector thread owns every replica socket. The capture thread talks to it
through a command queue (``open``, ``feed``, ``acked``, ``finish``, ``drop``) and
``detach`` hands a replica over to a takeover Session. The replica's output beyond
what the client acknowledged is kept (``tail``, bounded: past ``max_tail`` the
thread stops reading and TCP flow control holds the replica back).

Divergence check: for every server segment of the primary the capture thread sends
(offset, length, expectation); the pool compares it with the replica's output at the
same offset, before that output may be dropped, by the service's divergence rule
(ftcp/agent/divergence.py). Output that fails it marks the replica diverged: the
connection becomes unprotected and is reset at failover, never spliced to a replica
that would send the client bytes the primary never would have. Output that differs
and passes (``aligned``) is counted per connection and overwritten with the
primary's bytes.

This module is long because the pool's selector thread and what it keeps per replica
(input, output tail, pending checks, failure) change together: splitting them would
put one replica's state in two places.
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import selectors
import socket
import threading

from ftcp.agent.divergence import STRICT, expectation, settle
from ftcp.agent.wakeup import Wakeup
from ftcp.common.statuses import ConnStatus, Reason

LOG = logging.getLogger(__name__)


class Detached:
    """A hot replica handed over to a takeover."""

    __slots__ = ("sock", "unsent", "fed", "tail_start", "tail", "diverged", "checks")

    def __init__(self, sock, unsent, fed, tail_start, tail, diverged=None, checks=()):
        self.sock, self.unsent, self.fed, self.tail_start, self.tail = sock, unsent, fed, tail_start, tail
        self.diverged = diverged
        self.checks = list(checks)   # primary segments the replica has not produced yet


class _Waiter:
    """The answer to a detach: the pool thread puts it, the takeover waits for it. If
    the takeover gave up waiting, the pool thread closes the sockets instead of
    leaking them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._result = None
        self._gave_up = False

    def put(self, result: dict, discard) -> None:
        with self._lock:
            if self._gave_up:
                discard(result)
                return
            self._result = result
        self._done.set()

    def wait(self, timeout: float) -> dict:
        self._done.wait(timeout)
        with self._lock:
            if self._result is None:
                self._gave_up = True
                return {}
            return self._result


class _Replica:
    __slots__ = ("conn_id", "sock", "out", "fed", "produced", "tail", "acked", "finish", "connected", "failed",
                 "events", "checks", "expected_bytes", "verified", "diverged", "eof")

    def __init__(self, conn_id, sock):
        self.conn_id, self.sock = conn_id, sock
        self.out = bytearray()     # client bytes not yet written to the replica
        self.fed = 0               # client bytes written to the replica
        self.produced = 0          # replica output bytes read so far
        self.tail = bytearray()    # replica output [produced - len(tail), produced)
        self.acked = 0             # replica output the client already has (from the primary)
        self.finish = False        # client sent FIN: shut the replica's input once out is empty
        self.connected = False
        self.failed = None         # why this replica is unusable
        self.events = 0
        self.checks = collections.deque()  # (offset, length, expectation) of the primary's output
        self.expected_bytes = 0    # primary bytes held in checks (aligned divergence)
        self.verified = 0          # replica output known equal to the primary's, up to here
        self.diverged = None
        self.eof = False           # the replica closed its output


class ReplicaPool(threading.Thread):
    def __init__(self, addresses: dict, max_tail: int = 1 << 20):
        super().__init__(name="ftcp-replicas", daemon=True)
        self.addresses = addresses            # service -> (ip, port)
        self.max_tail = max_tail
        self._sel = selectors.DefaultSelector()
        self._cmds = collections.deque()
        self._wakeup = Wakeup()
        self._sel.register(self._wakeup, selectors.EVENT_READ, None)
        self._replicas = {}
        self._halt = False
        self.failures = 0
        self.diverged = {}      # conn id -> reason (read by the capture thread)
        self.differed = {}      # conn id -> bytes that differed and were tolerated (aligned divergence)
        self.failed = {}        # conn id -> why its replica is unusable (read by the capture thread)
        self.unverified = 0     # primary segments that could not be compared (output already gone)
        self.differed_total = 0

    # --- called from other threads ---------------------------------------------------

    def _cmd(self, *cmd):
        # Wake the thread only when the queue was empty: it drains the whole queue once
        # awake, and a write per command would cost the capture thread a syscall per packet.
        idle = not self._cmds
        self._cmds.append(cmd)
        if idle:
            self._wakeup.wake()

    def open(self, conn_id: str, service: str):
        self._cmd("open", conn_id, service)

    def feed(self, conn_id: str, data: bytes):
        self._cmd("feed", conn_id, data)

    def acked(self, conn_id: str, count: int):
        self._cmd("acked", conn_id, count)

    def expect(self, conn_id: str, checks: list):
        """The primary sent these (offset, length, expectation) ranges: compare."""
        self._cmd("expect", conn_id, checks)

    def finish(self, conn_id: str):
        self._cmd("finish", conn_id)

    def drop(self, conn_id: str):
        self._cmd("drop", conn_id)

    def detach_many(self, conn_ids, timeout: float = 2.0) -> dict:
        """Take these replicas out of the pool in one round trip to the pool thread:
        {conn id: Detached} for those that are usable or diverged."""
        waiter = _Waiter()
        self._cmd("detach", None, (list(conn_ids), waiter))
        return waiter.wait(timeout)

    def stop(self):
        self._halt = True
        self._cmd("noop")
        self.join(5)

    # --- the selector thread --------------------------------------------------------------

    def run(self):
        while not self._halt:
            for key, mask in self._sel.select(timeout=1.0):
                if key.data is None:
                    self._wakeup.drain()
                    continue
                self._io(key.data, mask)
            while self._cmds:
                self._apply(self._cmds.popleft())
        for rep in list(self._replicas.values()):
            self._close(rep)

    def _apply(self, cmd):
        kind, conn_id = cmd[0], cmd[1] if len(cmd) > 1 else None
        if kind == "detach":
            ids, waiter = cmd[2]
            waiter.put({cid: d for cid in ids if cid in self._replicas
                        for d in [self._detach(self._replicas[cid])] if d is not None}, self._close_detached)
            return
        rep = self._replicas.get(conn_id)
        if kind == "open":
            self._open(conn_id, cmd[2])
        elif rep is None:
            pass
        elif kind == "feed":
            if not rep.failed:     # a replica that failed is never fed again
                rep.out += cmd[2]
                if len(rep.out) > self.max_tail:
                    self._fail(rep, f"the replica does not read its input: {len(rep.out)} bytes waiting")
                    rep.out = bytearray()
        elif kind == "acked":
            rep.acked = max(rep.acked, cmd[2])
            self._check(rep)
            self._trim(rep)
        elif kind == "expect":
            rep.checks.extend(cmd[2])
            rep.expected_bytes += sum(n for _, n, expected in cmd[2] if not isinstance(expected, int))
            while len(rep.checks) > 100_000 or rep.expected_bytes > self.max_tail:
                _, n, expected = rep.checks.popleft()
                if not isinstance(expected, int):
                    rep.expected_bytes -= n
                self.unverified += 1
            self._check(rep)
        elif kind == "finish":
            rep.finish = True
        elif kind == "drop":
            self._close(rep)
        if conn_id in self._replicas:
            self._update(rep if rep is not None else self._replicas[conn_id])

    def _open(self, conn_id, service):
        addr = self.addresses.get(service)
        if addr is None or conn_id in self._replicas:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # spliced after a takeover: no Nagle delay
        rep = _Replica(conn_id, sock)
        self._replicas[conn_id] = rep
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            self._fail(rep, f"cannot connect to the replica at {addr[0]}:{addr[1]}: {os.strerror(err)}")
            return
        rep.events = selectors.EVENT_WRITE
        self._sel.register(sock, rep.events, rep)

    def _fail(self, rep, reason: str) -> None:
        """The replica is unusable (a takeover replays the log instead)."""
        rep.failed = reason
        self.failures += 1
        self.failed[rep.conn_id] = reason
        LOG.warning("%s: %s", rep.conn_id, reason)

    def _update(self, rep):
        """Select for writing while there is input to give, for reading while the
        tail has room and the replica has not closed its output; nothing once failed."""
        events = 0
        if not rep.failed:
            if not rep.connected or rep.out or rep.finish:
                events |= selectors.EVENT_WRITE
            if rep.connected and len(rep.tail) < self.max_tail and not rep.eof:
                events |= selectors.EVENT_READ
        if events != rep.events:
            if events:
                if rep.events:
                    self._sel.modify(rep.sock, events, rep)
                else:
                    self._sel.register(rep.sock, events, rep)
            else:
                self._sel.unregister(rep.sock)
            rep.events = events

    def _io(self, rep, mask):
        try:
            if mask & selectors.EVENT_WRITE:
                if not rep.connected:
                    err = rep.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    rep.connected = True
                if rep.out:
                    sent = rep.sock.send(rep.out)
                    del rep.out[:sent]
                    rep.fed += sent
                elif rep.finish:
                    rep.sock.shutdown(socket.SHUT_WR)
                    rep.finish = False
            if mask & selectors.EVENT_READ:
                data = rep.sock.recv(65536)
                if data:
                    rep.tail += data
                    rep.produced += len(data)
                    self._check(rep)
                    self._trim(rep)
                else:
                    rep.eof = True   # no more output: stop selecting for it (it would spin)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._fail(rep, f"replica connection: {e.strerror or e}")
            self._sel.unregister(rep.sock)
            rep.events = 0
            return
        self._update(rep)

    def _check(self, rep):
        """Compare the primary's segments with the replica's output we still hold."""
        checks = rep.checks
        start = rep.produced - len(rep.tail)
        while checks and rep.diverged is None:
            off, n, expected = checks[0]
            if off + n <= rep.verified:
                checks.popleft()      # a retransmission of what was checked already
            elif off < start:
                checks.popleft()      # that output is gone (the client had acked it)
                self.unverified += 1
            elif off + n <= rep.produced:
                checks.popleft()
                rep.expected_bytes -= n
                count = settle(expected, rep.tail, off - start, n)
                if count is None:
                    rep.diverged = Reason.DIVERGED.because(
                        f"the replica's output differs from the primary's at server byte {off}")
                    rep.failed = rep.diverged
                    self.diverged[rep.conn_id] = rep.diverged
                    LOG.error("%s: %s", rep.conn_id, rep.diverged)
                    return
                if count:
                    self.differed[rep.conn_id] = self.differed.get(rep.conn_id, 0) + count
                    self.differed_total += count
                rep.verified = max(rep.verified, off + n)
            else:
                return                # the replica has not produced that far yet

    def _trim(self, rep):
        """Drop replica output the client already has from the primary."""
        start = rep.produced - len(rep.tail)
        if rep.acked > start:
            del rep.tail[:min(len(rep.tail), rep.acked - start)]

    def _detach(self, rep):
        del self._replicas[rep.conn_id]
        self.diverged.pop(rep.conn_id, None)   # the verdict travels in the Detached
        self.differed.pop(rep.conn_id, None)
        self.failed.pop(rep.conn_id, None)
        if rep.events:
            self._sel.unregister(rep.sock)
            rep.events = 0
        if rep.diverged:
            rep.sock.close()
            return Detached(None, b"", rep.fed, 0, b"", diverged=rep.diverged)
        if rep.failed or not rep.connected:
            rep.sock.close()
            return None
        rep.sock.setblocking(True)
        return Detached(rep.sock, bytes(rep.out), rep.fed, rep.produced - len(rep.tail), bytes(rep.tail),
                        checks=[c for c in rep.checks if c[0] + c[1] > rep.verified])

    @staticmethod
    def _close_detached(result: dict) -> None:
        for detached in result.values():
            if detached.sock is not None:
                detached.sock.close()

    def _close(self, rep):
        self._replicas.pop(rep.conn_id, None)
        # A verdict not collected yet belongs to this replica, not to a later
        # connection on the same 4-tuple (commands run in order: no newer one exists).
        self.diverged.pop(rep.conn_id, None)
        self.differed.pop(rep.conn_id, None)
        self.failed.pop(rep.conn_id, None)
        if rep.events:
            self._sel.unregister(rep.sock)
            rep.events = 0
        rep.sock.close()


class HotStandby:
    """The tap the log writer calls for every connection it collects (capture thread):
    keeps one hot replica per protected connection, fed exactly the logged bytes, and
    the tracker's hook for the primary's segments (the divergence check)."""

    def __init__(self, pool: ReplicaPool, tracker, max_hot: int = 256, divergence: dict = None):
        self.pool = pool
        self.tracker = tracker
        self.divergence = {} if divergence is None else divergence   # service -> mode (default strict)
        # Each hot replica costs the agent a socket and events on the pool thread; in
        # CPython on 2 cores, 1,000 busy ones starved the capture thread (ring overflow,
        # capture gaps). Past max_hot, connections are taken over by cold replay.
        self.max_hot = max_hot
        self._open = {}     # conn id -> the Conn whose replica is open
        self._checks = {}   # Conn -> [(offset, length, expectation)] not yet sent to the pool
        tracker.s2c_hook = self.primary_sent

    def primary_sent(self, conn, off: int, payload) -> None:
        # Per packet: a CRC of the payload in place (strict) or a copy of it (aligned),
        # batched per connection until the next collect (which may be the one that opens
        # its replica). Not for connections past max_hot: nothing would compare it.
        if self._open.get(conn.id) is conn or len(self._open) < self.max_hot:
            mode = self.divergence.get(conn.service, STRICT)
            self._checks.setdefault(conn, []).append((off, len(payload), expectation(mode, payload)))

    def seen(self, conn, data: bytes) -> None:
        cid = conn.id
        current = self._open.get(cid)
        if current is not None and current is not conn:
            self.pool.drop(cid)  # the 4-tuple now belongs to a new connection
            del self._open[cid]
            self._checks.pop(current, None)
            current = None
        if current is not None:
            reason = self.pool.diverged.pop(cid, None)
            if reason is not None:
                self.tracker.mark_unprotected(conn, reason)
            conn.divergent = self.pool.differed.get(cid, conn.divergent)
            failed = self.pool.failed.get(cid)
            if failed is not None:
                conn.replica = f"failed: {failed}"
        if conn.status != ConnStatus.PROTECTED:
            self._checks.pop(conn, None)
            if current is not None:
                self.pool.drop(cid)
                del self._open[cid]
            return
        if current is None:
            # A replica must be fed the log from its first byte: a connection passed
            # over once (max_hot reached) stays cold even when a slot frees later, or
            # its replica would answer a stream that starts mid-way (false divergence).
            if not (data or conn.s2c_sent):
                return    # nothing exchanged yet: a slot only for a connection that carries data
            if conn.isn_c is None or len(self._open) >= self.max_hot or conn.c2s_logged != len(data):
                self._checks.pop(conn, None)
                conn.replica = "cold"
                return
            self.pool.open(cid, conn.service)
            self._open[cid] = conn
            conn.replica = "hot"
        checks = self._checks.pop(conn, None)
        if checks:
            self.pool.expect(cid, checks)
        if data:
            self.pool.feed(cid, data)
        self.pool.acked(cid, conn.s2c_acked)
        if conn.fin_c:
            self.pool.finish(cid)

    def gone(self, conn) -> None:
        if self._open.get(conn.id) is conn:
            del self._open[conn.id]
            self.pool.drop(conn.id)
        self._checks.pop(conn, None)

    def detach_all(self, conns) -> dict:
        """The hot replicas of these connections, out of the pool: {conn id: Detached}."""
        ids = []
        for conn in conns:
            self._checks.pop(conn, None)
            if self._open.get(conn.id) is conn:
                del self._open[conn.id]
                ids.append(conn.id)
        return self.pool.detach_many(ids) if ids else {}

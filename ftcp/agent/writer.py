"""Move what the tracker learned into Redis: batched, atomic, exact across outages.

Two threads meet here. The capture thread calls ``collect`` (it alone touches the
tracker and its connections); the writer thread calls ``flush``, which only sees
the snapshots ``collect`` left in the entries. So a slow or dead Redis never stalls
capture: packets keep being tracked while a write waits for its timeout.

Each flush is one MULTI/EXEC with every changed connection's new client bytes
(RPUSH) and ``c2s_stored``, its state hash, the service's live set, events and the
agent heartbeat. The log is exact at every flush; the rest of the state hash is
snapshotted at most every ``state_interval`` per connection (at once on a change of
state or status, and when it closes), and only the fields that changed are sent: a
thousand chatty connections otherwise cost the writer thread a whole core and starve
capture of the GIL (the ring overflowed). If
Redis is away the bytes wait in a bounded buffer; when the buffer is full, the
connections whose bytes must be dropped are marked unprotected (and only those).
After an error the stored log lengths are read back before writing again, so a
transaction that was applied but whose reply was lost is never appended twice.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import deque
from typing import Optional

from ftcp.common.statuses import ConnStatus, Reason
from ftcp.common.errors import StoreError

LOG = logging.getLogger(__name__)


class ConnWrite:
    """One connection's part of a flush: ``state`` holds only the hash fields that
    changed; ``reset`` replaces an older record; ``listed`` adds it to its service's
    live set (needed once, and again after Redis may have lost it)."""
    __slots__ = ("conn_id", "service", "state", "data", "reset", "closed", "listed")

    def __init__(self, conn_id, service, state, data, reset, closed, listed=True):
        self.conn_id, self.service, self.state = conn_id, service, state
        self.data, self.reset, self.closed, self.listed = data, reset, closed, listed


class _Entry:
    __slots__ = ("conn", "conn_id", "service", "state", "chunks", "nbytes", "stored", "new", "closed",
                 "dirty", "reported", "dropped", "fresh", "stale", "snap_at", "written")

    def __init__(self, conn):
        self.conn = conn
        self.conn_id, self.service = conn.id, conn.service
        self.state = None      # snapshot of conn.to_state() taken by the capture thread
        self.fresh = False     # a snapshot not yet written
        self.stale = False     # the connection changed since its last snapshot
        self.snap_at = 0.0     # when the last snapshot was taken
        self.written = {}      # the hash fields as last stored in Redis
        self.chunks = []
        self.nbytes = 0        # buffered, not yet stored
        self.stored = 0        # bytes of this connection's log known to be in Redis
        self.new = True        # first write replaces any older record with this id
        self.closed = False
        self.dirty = True
        self.reported = False  # conn_unprotected event written
        self.dropped = False   # part of the log was lost: never append after the hole


def redis_fields(state: dict) -> dict:
    """A state dict as Redis hash fields: None -> "", bool -> 0/1, containers -> JSON."""
    out = {}
    for key, value in state.items():
        if value is None:
            value = ""
        elif isinstance(value, bool):
            value = int(value)
        elif isinstance(value, (dict, list, tuple)):
            value = json.dumps(value)
        out[key] = value
    return out


class LogWriter:
    def __init__(self, store, tracker, max_buffer: int = 256 << 20, retry_interval: float = 0.5,
                 agent_name: str = "agent", tap=None, state_interval: float = 0.25):
        self.store = store
        self.tracker = tracker
        self.state_interval = state_interval
        self._due = deque()       # (time, entry): stale entries in the order their snapshot falls due
        self.tap = tap            # sees each collected connection and its new bytes (hot standby)
        self.max_buffer = max_buffer
        self.retry_interval = retry_interval
        self.agent_name = agent_name
        self._lock = threading.Lock()
        # Two flushes at once (the writer thread and a takeover) could land their
        # transactions out of order; one at a time keeps every log in order.
        self._flush_lock = threading.Lock()
        self._entries = {}        # Conn -> _Entry, insertion ordered
        self._by_id = {}          # conn id -> its latest _Entry
        self._marks = []          # (Conn, reason) found by the writer thread, applied by collect
        self._heartbeat = None
        self.buffered = 0
        self.redis_up = True
        self._resync = False
        self.redis_errors = 0
        self.bytes_logged = 0
        self.lost_conns = 0

    # --- capture thread ---------------------------------------------------------------

    def collect(self, now: float, heartbeat: Optional[dict] = None) -> None:
        """Take the tracker's news into the entries (capture thread only)."""
        tracker = self.tracker
        with self._lock:
            marks, self._marks = self._marks, []
            for conn, reason in marks:
                tracker.mark_unprotected(conn, reason)
                entry = self._entries.get(conn)
                if entry is not None:
                    self._snapshot(entry, now)
            for conn in tracker.take_dirty():
                entry = self._entries.get(conn)
                if entry is None:
                    if tracker.embryonic(conn):
                        continue   # no handshake seen: anyone can make these (ftcp/agent/tracker.py)
                    entry = self._new_entry(conn)
                data = conn.take_c2s()
                if self.tap is not None:
                    self.tap.seen(conn, data)
                if data and not entry.dropped:
                    entry.chunks.append(data)
                    entry.nbytes += len(data)
                    self.buffered += len(data)
                    entry.dirty = True   # the log (and c2s_stored) is written at every flush
                state = entry.state
                if (state is None or now - entry.snap_at >= self.state_interval
                        or state["status"] != conn.status or state["state"] != conn.state):
                    self._snapshot(entry, now)
                elif not entry.stale:
                    entry.stale = True
                    self._due.append((entry.snap_at + self.state_interval, entry))
            due = self._due
            while due and due[0][0] <= now:
                entry = due.popleft()[1]
                if entry.stale:
                    self._snapshot(entry, now)
            for conn in tracker.expire(now):
                if self.tap is not None:
                    self.tap.gone(conn)
                entry = self._entries.get(conn)
                if entry is None:
                    continue       # never written: nothing to close in Redis
                self._snapshot(entry, now)
                entry.closed = True
            if self.buffered > self.max_buffer:
                self._shed(now)
            if heartbeat is not None:
                self._heartbeat = heartbeat

    def snapshot_all(self, now: float) -> None:
        """Snapshot every connection that changed since its last snapshot (before a
        takeover's flush, or at shutdown: Redis then shows the last state)."""
        with self._lock:
            for _, entry in self._due:
                if entry.stale:
                    self._snapshot(entry, now)
            self._due.clear()

    def adopt(self, conn, now: float) -> None:
        """A connection rebuilt from Redis (Tracker.adopt): its record and log are
        there already, ``c2s_logged`` bytes of it; later bytes are appended."""
        with self._lock:
            entry = self._new_entry(conn)
            entry.new, entry.stored = False, conn.c2s_logged
            self._snapshot(entry, now)

    @staticmethod
    def _snapshot(entry: _Entry, now: float) -> None:
        entry.state = entry.conn.to_state()
        entry.snap_at = now
        entry.fresh = entry.dirty = True
        entry.stale = False

    def _new_entry(self, conn) -> _Entry:
        # A new connection on a 4-tuple still listed (port reuse within the grace
        # period): the tracker dropped the old Conn without expiring it. Its entry is
        # written one last time as closed, before the new record replaces it (entries
        # are written in insertion order, so the new one's reset comes after).
        old = self._by_id.get(conn.id)
        if old is not None and old.conn is not conn and old.conn in self._entries:
            old.closed = old.dirty = True
        entry = self._entries[conn] = self._by_id[conn.id] = _Entry(conn)
        return entry

    def _shed(self, now: float) -> None:
        """Drop the largest buffers until under the bound; those connections lose
        protection, with the reason, and nobody else does."""
        for entry in sorted(self._entries.values(), key=lambda e: e.nbytes, reverse=True):
            if self.buffered <= self.max_buffer:
                break
            if not entry.nbytes:
                continue
            reason = Reason.REDIS_UNAVAILABLE.because(f"{entry.nbytes} bytes of the client log could not be stored")
            self.tracker.mark_unprotected(entry.conn, reason)
            self.buffered -= entry.nbytes
            entry.chunks, entry.nbytes, entry.dropped = [], 0, True
            self._snapshot(entry, now)
            self.lost_conns += 1
            LOG.warning("%s: dropped its unstored log (Redis unavailable, buffer full)", entry.conn_id)

    # --- writer thread --------------------------------------------------------------------

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(1 for e in self._entries.values() if e.dirty) + (self._heartbeat is not None)

    def flush(self) -> bool:
        """Write every dirty connection (and the heartbeat) in one transaction."""
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> bool:
        batch = None
        try:
            if self._resync:
                self._resync_lengths()
            with self._lock:
                batch = self._prepare()
            if batch is None:
                return True
            entries, writes, events, heartbeat = batch
            self.store.write_conns(writes, agent=heartbeat, agent_name=self.agent_name, events=events)
        except StoreError as e:
            with self._lock:
                self.redis_errors += 1
                if self.redis_up:
                    LOG.error("cannot write to Redis; buffering (%d bytes so far): %s", self.buffered, e)
                self.redis_up, self._resync = False, True
                if batch is not None:
                    self._restore(batch)
            return False
        with self._lock:
            if not self.redis_up:
                LOG.info("Redis is back: %d connection(s) written", len(writes))
            self.redis_up = True
            self._commit(batch)
        return True

    def _prepare(self):
        dirty = [e for e in self._entries.values() if e.dirty]
        if not dirty and self._heartbeat is None:
            return None
        writes, events = [], []
        for e in dirty:
            data = b"".join(e.chunks)
            if e.fresh:
                fields = redis_fields(e.state)
                if not e.new:
                    # only what changed since the last stored write (see _commit)
                    written = e.written
                    fields = {k: v for k, v in fields.items() if written.get(k) != v}
            else:
                fields = {}
            fields["c2s_stored"] = e.stored + len(data)
            writes.append(ConnWrite(e.conn_id, e.service, fields, data, e.new, e.closed,
                                    listed=e.new or not e.written))
            if e.state["status"] != ConnStatus.PROTECTED and not e.reported:
                events.append({"kind": "conn_unprotected", "conn": e.conn_id, "service": e.service,
                               "reason": e.state["reason"], "time": str(e.state["last_seen"])})
                e.reported = True   # taken back by _restore if this write fails
            e.chunks, e.nbytes, e.dirty, e.fresh = [], 0, False, False
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat = dict(heartbeat, redis_errors=self.redis_errors, bytes_logged=self.bytes_logged,
                             buffered=self.buffered, lost_conns=self.lost_conns)
        return dirty, writes, events, heartbeat

    def _restore(self, batch) -> None:
        """A failed write: its bytes go back in front of anything collected since."""
        entries, writes, events, heartbeat = batch
        unreported = {ev["conn"] for ev in events if ev["kind"] == "conn_unprotected"}
        for e, w in zip(entries, writes):
            if w.data:
                e.chunks.insert(0, w.data)
                e.nbytes += len(w.data)
            e.dirty = e.fresh = True
            if e.conn_id in unreported:
                e.reported = False
        if self._heartbeat is None:
            self._heartbeat = heartbeat

    def _commit(self, batch) -> None:
        entries, writes, _, _ = batch
        for e, w in zip(entries, writes):
            e.stored += len(w.data)
            self.bytes_logged += len(w.data)
            self.buffered -= len(w.data)
            if e.new:
                e.written = dict(w.state)
            else:
                e.written.update(w.state)
            e.new = False
            if e.closed and not e.dirty:
                del self._entries[e.conn]
                if self._by_id.get(e.conn_id) is e:
                    del self._by_id[e.conn_id]

    def _resync_lengths(self) -> None:
        """After a failed write: what did Redis really store? Trim what it has."""
        with self._lock:
            known = [e for e in self._entries.values() if not e.new]
        lengths = self.store.log_lengths(self.agent_name, [e.conn_id for e in known])
        with self._lock:
            for e in known:
                # What Redis holds is unknown after an error (it may even have restarted
                # empty): the next write of each connection carries its whole state hash.
                e.written = {}
                e.dirty = e.fresh = True
                extra = lengths.get(e.conn_id, 0) - e.stored
                if extra < 0:
                    # Redis came back without what it had acknowledged (restarted
                    # without persistence, or a stale replica): that log is gone.
                    self._marks.append((e.conn, f"{Reason.REDIS_LOST.text} {-extra} bytes of the stored client log"))
                    self.buffered -= e.nbytes
                    e.chunks, e.nbytes, e.dropped = [], 0, True
                    self.lost_conns += 1
                elif extra > 0:
                    data = b"".join(e.chunks)[extra:]
                    self.buffered -= e.nbytes - len(data)
                    self.bytes_logged += extra
                    e.stored += extra
                    e.chunks, e.nbytes = ([data] if data else []), len(data)
            self._resync = False


class WriterThread(threading.Thread):
    """Calls writer.flush every ``interval`` seconds (sooner when woken)."""

    def __init__(self, writer: LogWriter, interval: float):
        super().__init__(name="ftcp-redis-writer", daemon=True)
        self.writer = writer
        self.interval = interval
        self._wake = threading.Event()
        self._halt = threading.Event()

    def wake(self):
        self._wake.set()

    def run(self):
        while not self._halt.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                ok = self.writer.flush()
            except Exception:
                # a bug, or a record in Redis that does not decode: logged, and the
                # writer goes on (its buffers are bounded; the heartbeat keeps beating)
                LOG.exception("the Redis writer failed a flush; retrying")
                ok = False
            if not ok:
                self._halt.wait(self.writer.retry_interval)

    def stop(self):
        self._halt.set()
        self._wake.set()
        self.join()

"""The Redis log writer: batching, outages, exact retries, bounded buffer."""
import hashlib

from ftcp.agent.writer import LogWriter, redis_fields
from ftcp.store import StoreError


class FakeConn:
    def __init__(self, cid, service="svc"):
        self.id, self.service = cid, service
        self.status, self.reason = "protected", ""
        self.pending = []

    def take_c2s(self):
        data, self.pending = b"".join(self.pending), []
        return data

    state = "established"

    def to_state(self):
        return {"id": self.id, "state": self.state, "status": self.status, "reason": self.reason, "last_seen": 1.0,
                "opts": {"mss": 1460}, "ts_ok": True, "closed_at": None}


class FakeTracker:
    def __init__(self):
        self.dirty, self.expired = [], []

    def take_dirty(self):
        out, self.dirty = self.dirty, []
        return out

    def expire(self, now):
        out, self.expired = self.expired, []
        return out

    @staticmethod
    def embryonic(conn):
        return False

    def mark_unprotected(self, conn, reason):
        if conn.status == "protected":
            conn.status, conn.reason = "unprotected", reason


class FakeStore:
    """Applies write_conns like Redis MULTI/EXEC; can fail before or after applying."""

    def __init__(self):
        self.logs, self.hashes, self.live, self.events, self.agent = {}, {}, {}, [], None
        self.fail = None  # None | "before" | "after" (applied, reply lost)
        self.calls = 0

    def write_conns(self, writes, agent=None, agent_name="", events=()):
        self.calls += 1
        if self.fail == "before":
            raise StoreError("down")
        for w in writes:
            if w.reset:
                self.logs.pop(w.conn_id, None)
            self.logs[w.conn_id] = self.logs.get(w.conn_id, b"") + w.data
            if w.reset:
                self.hashes.pop(w.conn_id, None)
            self.hashes.setdefault(w.conn_id, {}).update(w.state)   # HSET merges
            self.live.setdefault(w.service, set())
            if w.closed:
                self.live[w.service].discard(w.conn_id)
            elif w.listed:
                self.live[w.service].add(w.conn_id)
        self.events += list(events)
        if agent is not None:
            self.agent = agent
        if self.fail == "after":
            raise StoreError("reply lost")

    def log_lengths(self, ids):
        if self.fail == "before":
            raise StoreError("down")
        return {i: len(self.logs.get(i, b"")) for i in ids}


def setup(**kw):
    store, tracker = FakeStore(), FakeTracker()
    return store, tracker, LogWriter(store, tracker, **kw)


def feed(tracker, conn, data):
    conn.pending.append(data)
    tracker.dirty.append(conn)


def test_batches_bytes_and_state_in_one_write():
    store, tracker, w = setup()
    a, b = FakeConn("a"), FakeConn("b")
    feed(tracker, a, b"hello ")
    feed(tracker, b, b"x")
    w.collect(0.0)
    feed(tracker, a, b"world")
    w.collect(0.0, heartbeat={"pid": 1})
    assert w.flush() and store.calls == 1
    assert store.logs == {"a": b"hello world", "b": b"x"}
    assert store.hashes["a"]["c2s_stored"] == 11 and store.hashes["a"]["ts_ok"] == 1
    assert store.live["svc"] == {"a", "b"}
    assert store.agent["pid"] == 1 and store.agent["bytes_logged"] == 0  # counted as of the batch
    assert w.bytes_logged == 12 and w.buffered == 0
    assert w.flush() and store.calls == 1  # nothing new: no write


def test_outage_then_recovery_writes_everything_once():
    store, tracker, w = setup()
    a = FakeConn("a")
    feed(tracker, a, b"one ")
    w.collect(0.0)
    assert w.flush()
    store.fail = "before"
    feed(tracker, a, b"two ")
    w.collect(0.0)
    assert not w.flush() and not w.redis_up and w.redis_errors == 1
    feed(tracker, a, b"three")
    w.collect(0.0)
    store.fail = None
    assert w.flush() and w.redis_up
    assert store.logs["a"] == b"one two three"


def test_applied_but_unacknowledged_write_is_not_appended_twice():
    store, tracker, w = setup()
    a = FakeConn("a")
    feed(tracker, a, b"first ")
    w.collect(0.0)
    assert w.flush()
    store.fail = "after"
    feed(tracker, a, b"second ")
    w.collect(0.0)
    assert not w.flush()
    store.fail = None
    feed(tracker, a, b"third")
    w.collect(0.0)
    assert w.flush()
    assert store.logs["a"] == b"first second third"
    assert w.bytes_logged == len(b"first second third")


def test_full_buffer_unprotects_exactly_the_connections_dropped():
    store, tracker, w = setup(max_buffer=1000)
    big, small = FakeConn("big"), FakeConn("small")
    store.fail = "before"
    feed(tracker, small, b"s" * 100)
    feed(tracker, big, b"b" * 1500)
    w.collect(0.0)
    assert big.status == "unprotected" and big.reason.startswith("redis unavailable: 1500 bytes")
    assert small.status == "protected" and w.buffered == 100 and w.lost_conns == 1
    assert not w.flush()
    feed(tracker, big, b"after the hole")  # bytes the tracker still delivers: never logged
    store.fail = None
    w.collect(0.0)
    assert w.flush()
    assert store.logs["small"] == b"s" * 100 and store.logs["big"] == b""
    assert store.hashes["big"]["status"] == "unprotected"
    assert [(e["kind"], e["conn"]) for e in store.events] == [("conn_unprotected", "big")]


def test_redis_that_lost_data_unprotects_the_connection():
    store, tracker, w = setup()
    a = FakeConn("a")
    feed(tracker, a, b"stored")
    w.collect(0.0)
    assert w.flush()
    store.fail = "before"
    feed(tracker, a, b" more")
    w.collect(0.0)
    assert not w.flush()
    store.fail = None
    store.logs.clear()  # Redis restarted empty
    assert w.flush()    # resync notices; the mark is applied by the next collect
    w.collect(0.0)
    assert a.status == "unprotected" and a.reason == "redis lost 6 bytes of the stored client log"
    assert w.flush() and store.hashes["a"]["status"] == "unprotected"


def test_closed_connections_leave_the_live_set_and_new_ones_reset_old_records():
    store, tracker, w = setup()
    a = FakeConn("a")
    feed(tracker, a, b"old")
    w.collect(0.0)
    w.flush()
    tracker.expired.append(a)
    w.collect(1.0)
    w.flush()
    assert store.live["svc"] == set()
    again = FakeConn("a")  # same 4-tuple reused by a new connection
    feed(tracker, again, b"new")
    w.collect(2.0)
    w.flush()
    assert store.logs["a"] == b"new" and store.live["svc"] == {"a"}


def test_large_random_stream_arrives_exact_through_failures():
    import random
    rng = random.Random(7)
    store, tracker, w = setup()
    a = FakeConn("a")
    sent = bytearray()
    for i in range(300):
        chunk = rng.randbytes(rng.randint(1, 3000))
        sent += chunk
        feed(tracker, a, chunk)
        w.collect(float(i))
        store.fail = rng.choice([None, None, "before", "after"])
        w.flush()
    store.fail = None
    w.collect(300.0)
    assert w.flush()
    assert hashlib.sha256(store.logs["a"]).digest() == hashlib.sha256(bytes(sent)).digest()


def test_redis_fields():
    assert redis_fields({"a": None, "b": True, "c": {"x": 1}, "d": 5, "e": "s"}) == \
        {"a": "", "b": 1, "c": '{"x": 1}', "d": 5, "e": "s"}


def test_port_reuse_before_expiry_retires_the_old_entry():
    store, tracker, w = setup()
    old = FakeConn("a")
    feed(tracker, old, b"old bytes")
    w.collect(0.0)
    new = FakeConn("a")  # the tracker replaced `old` without expiring it
    feed(tracker, new, b"new")
    w.collect(0.5)
    assert w.flush()
    assert store.logs["a"] == b"new" and store.live["svc"] == {"a"}
    assert list(w._entries) == [new]  # nothing left behind


def test_a_busy_connection_state_is_written_at_most_every_interval_and_only_what_changed():
    store, tracker, w = setup(state_interval=0.25)
    a = FakeConn("a")
    feed(tracker, a, b"1")
    w.collect(0.0)
    assert w.flush() and store.hashes["a"]["reason"] == ""
    writes = []
    store_write = store.write_conns
    store.write_conns = lambda ws, **kw: (writes.extend(ws), store_write(ws, **kw))
    a.reason = "changed"                   # no new snapshot yet: only the log moves
    feed(tracker, a, b"2")
    w.collect(0.1)
    assert w.flush()
    assert writes[-1].state == {"c2s_stored": 2} and store.logs["a"] == b"12"
    tracker.dirty.append(a)                # changed again, nothing to log: waits for its time
    w.collect(0.2)
    assert w.flush() and len(writes) == 1
    w.collect(0.26)                        # due: the snapshot is taken although no packet came
    assert w.flush() and writes[-1].state == {"reason": "changed", "c2s_stored": 2}
    assert store.hashes["a"]["reason"] == "changed" and not writes[-1].listed


def test_a_change_of_status_is_written_at_once():
    store, tracker, w = setup(state_interval=10.0)
    a = FakeConn("a")
    feed(tracker, a, b"x")
    w.collect(0.0)
    assert w.flush()
    tracker.mark_unprotected(a, "capture gap: server acked 5 bytes not seen")
    tracker.dirty.append(a)
    w.collect(0.001)
    assert w.flush() and store.hashes["a"]["status"] == "unprotected"
    assert [e["kind"] for e in store.events] == ["conn_unprotected"]


def test_snapshot_all_writes_what_waits_for_its_interval():
    store, tracker, w = setup(state_interval=10.0)
    a = FakeConn("a")
    feed(tracker, a, b"x")
    w.collect(0.0)
    a.reason = "later"
    tracker.dirty.append(a)
    w.collect(0.1)
    w.snapshot_all(0.1)
    assert w.flush() and store.hashes["a"]["reason"] == "later"


def test_after_an_error_the_whole_state_is_written_again():
    store, tracker, w = setup(state_interval=10.0)
    a = FakeConn("a")
    feed(tracker, a, b"x")
    w.collect(0.0)
    assert w.flush()
    store.hashes.clear()                   # Redis restarted empty...
    store.live.clear()
    store.fail = "before"
    feed(tracker, a, b"y")
    w.collect(0.1)
    assert not w.flush()
    store.fail = None
    store.logs["a"] = b"x"
    assert w.flush()                       # ...the next write carries every field and the set
    assert store.hashes["a"]["id"] == "a" and store.live["svc"] == {"a"}

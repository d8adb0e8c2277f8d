"""The Redis log writer: batching, outages, exact retries, bounded buffer.

The Store is the real one over fakeredis (tests/support/store.py): what the writer
reads back after an error (``log_lengths``) is what the real Store answers."""
import hashlib

from ftcp.agent.writer import LogWriter, redis_fields
from ftcp.common.errors import StoreError
from ftcp.common.keys import conn_key, svc_conns_key
from tests.support.fakes import FakeConn
from tests.support.store import fake_store


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


AGENT = "agent"   # the writer's agent: its records are in this namespace


class Redis:
    """The real Store, and the faults a test injects: ``fail`` None, "before" (Redis
    away: nothing applied) or "after" (the transaction applied, its reply lost).
    ``writes`` keeps every batch the writer sent."""

    def __init__(self):
        self.store = fake_store()
        self.fail = None
        self.writes = []

    @property
    def fail(self):
        return self._fail

    @fail.setter
    def fail(self, how):
        self._fail = how
        self.store.server.connected = how != "before"

    def write_conns(self, writes, **kw):
        self.writes.append(list(writes))
        self.store.write_conns(writes, **kw)
        if self.fail == "after":
            raise StoreError("reply lost")

    def log_lengths(self, host, ids):
        return self.store.log_lengths(host, ids)

    # what Redis holds (in the agent's namespace)
    def log(self, cid):
        return self.store.conn_log(AGENT, cid)

    def conn(self, cid):
        return self.store.conn_state(AGENT, cid) or {}

    def live(self, service="svc"):
        return self.store.service_conns(service, AGENT)

    def events(self):
        return [record for _, record in self.store.events()]

    def agent(self):
        return self.store.agent_state(AGENT)

    def restarted_empty(self):
        self.store.fake_redis.flushall()


def setup(**kw):
    redis, tracker = Redis(), FakeTracker()
    return redis, tracker, LogWriter(redis, tracker, **dict({"agent_name": AGENT}, **kw))


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
    assert w.flush() and len(store.writes) == 1
    assert (store.log("a"), store.log("b")) == (b"hello world", b"x")
    assert store.conn("a")["c2s_stored"] == 11 and store.conn("a")["ts_ok"] is True
    assert store.live() == {"a", "b"}
    assert store.agent()["pid"] == 1 and store.agent()["bytes_logged"] == 0  # counted as of the batch
    assert w.bytes_logged == 12 and w.buffered == 0
    assert w.flush() and len(store.writes) == 1  # nothing new: no write


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
    assert store.log("a") == b"one two three"


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
    assert store.log("a") == b"first second third"
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
    assert store.log("small") == b"s" * 100 and store.log("big") == b""
    assert store.conn("big")["status"] == "unprotected"
    assert [(e["kind"], e["conn"]) for e in store.events()] == [("conn_unprotected", "big")]


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
    store.restarted_empty()
    assert w.flush()    # resync notices; the mark is applied by the next collect
    w.collect(0.0)
    assert a.status == "unprotected" and a.reason == "redis lost 6 bytes of the stored client log"
    assert w.flush() and store.conn("a")["status"] == "unprotected"


def test_closed_connections_leave_the_live_set_and_new_ones_reset_old_records():
    store, tracker, w = setup()
    a = FakeConn("a")
    feed(tracker, a, b"old")
    w.collect(0.0)
    w.flush()
    tracker.expired.append(a)
    w.collect(1.0)
    w.flush()
    assert store.live() == set()
    again = FakeConn("a")  # same 4-tuple reused by a new connection
    feed(tracker, again, b"new")
    w.collect(2.0)
    w.flush()
    assert store.log("a") == b"new" and store.live() == {"a"}


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
    assert hashlib.sha256(store.log("a")).digest() == hashlib.sha256(bytes(sent)).digest()


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
    assert store.log("a") == b"new" and store.live() == {"a"}
    assert list(w._entries) == [new]  # nothing left behind


def test_a_busy_connection_state_is_written_at_most_every_interval_and_only_what_changed():
    store, tracker, w = setup(state_interval=0.25)
    a = FakeConn("a")
    feed(tracker, a, b"1")
    w.collect(0.0)
    assert w.flush() and store.conn("a")["reason"] == ""
    a.reason = "changed"                   # no new snapshot yet: only the log moves
    feed(tracker, a, b"2")
    w.collect(0.1)
    assert w.flush()
    last, = store.writes[-1]
    assert last.state == {"c2s_stored": 2} and store.log("a") == b"12"
    tracker.dirty.append(a)                # changed again, nothing to log: waits for its time
    w.collect(0.2)
    assert w.flush() and len(store.writes) == 2
    w.collect(0.26)                        # due: the snapshot is taken although no packet came
    assert w.flush()
    last, = store.writes[-1]
    assert last.state == {"reason": "changed", "c2s_stored": 2} and not last.listed
    assert store.conn("a")["reason"] == "changed"


def test_a_change_of_status_is_written_at_once():
    store, tracker, w = setup(state_interval=10.0)
    a = FakeConn("a")
    feed(tracker, a, b"x")
    w.collect(0.0)
    assert w.flush()
    tracker.mark_unprotected(a, "capture gap: server acked 5 bytes not seen")
    tracker.dirty.append(a)
    w.collect(0.001)
    assert w.flush() and store.conn("a")["status"] == "unprotected"
    assert [e["kind"] for e in store.events()] == ["conn_unprotected"]


def test_snapshot_all_writes_what_waits_for_its_interval():
    store, tracker, w = setup(state_interval=10.0)
    a = FakeConn("a")
    feed(tracker, a, b"x")
    w.collect(0.0)
    a.reason = "later"
    tracker.dirty.append(a)
    w.collect(0.1)
    w.snapshot_all(0.1)
    assert w.flush() and store.conn("a")["reason"] == "later"


def test_after_an_error_the_whole_state_is_written_again():
    """What Redis holds is unknown after an error (here it came back from a snapshot
    with the log but without the hash's other fields and the live set): the next write
    of each connection carries its whole hash and its set membership."""
    store, tracker, w = setup(state_interval=10.0)
    a = FakeConn("a")
    feed(tracker, a, b"x")
    w.collect(0.0)
    assert w.flush()
    store.fail = "before"
    feed(tracker, a, b"y")
    w.collect(0.1)
    assert not w.flush()
    store.fail = None
    redis = store.store.fake_redis
    redis.delete(conn_key(AGENT, "a"))
    redis.hset(conn_key(AGENT, "a"), "c2s_stored", 1)
    redis.srem(svc_conns_key("svc", AGENT), "a")
    assert w.flush()
    last, = store.writes[-1]
    assert last.listed and {"id", "state", "status", "reason", "c2s_stored"} <= set(last.state)
    assert store.conn("a")["id"] == "a" and store.live() == {"a"} and store.log("a") == b"xy"


def test_the_writer_thread_survives_a_flush_that_raises():
    import threading
    from ftcp.agent.writer import WriterThread

    class Writer:
        retry_interval = 0.0

        def __init__(self):
            self.calls, self.done = 0, threading.Event()

        def flush(self):
            self.calls += 1
            if self.calls == 1:
                raise ValueError("a record that does not decode")
            self.done.set()
            return True

    writer = Writer()
    thread = WriterThread(writer, 0.001)
    thread.start()
    try:
        assert writer.done.wait(5) and thread.is_alive()
    finally:
        thread.stop()

"""Hot standby: which connections get a replica and what it is told (HotStandby, with a
fake pool), and the pool's feeding, trimming and divergence check (ReplicaPool, against
a tiny line server on 127.0.0.1)."""
import selectors
import zlib

import pytest

from ftcp.agent.replica import Detached, HotStandby, ReplicaPool
from tests.support.fakes import FakeConn
from tests.support.line_server import LineServer
from topology.processes import wait_for


# --- HotStandby with a fake pool ----------------------------------------------------------

class FakePool:
    def __init__(self):
        self.calls = []
        self.diverged = {}
        self.differed = {}
        self.failed = {}

    def __getattr__(self, kind):
        if kind not in ("open", "feed", "expect", "acked", "finish", "drop"):
            raise AttributeError(kind)
        return lambda *args: self.calls.append((kind,) + args)

    def of(self, cid):
        """The calls about one connection."""
        return [c for c in self.calls if c[1] == cid]

    def kinds(self, cid):
        return [c[0] for c in self.of(cid)]


class FakeTracker:
    s2c_hook = None

    def __init__(self):
        self.marked = []

    def mark_unprotected(self, conn, reason):
        self.marked.append((conn, reason))
        conn.status = "unprotected"


def log(hot, conn, data):
    """The client sent data: logged, then collected (what the writer does)."""
    conn.c2s_logged += len(data)
    hot.seen(conn, data)


@pytest.fixture
def pool():
    return FakePool()


def standby(pool, max_hot=256):
    return HotStandby(pool, FakeTracker(), max_hot=max_hot)


def test_first_seen_opens_and_feeds_then_only_new_bytes(pool):
    hot, a = standby(pool), FakeConn("a")
    log(hot, a, b"hello")
    a.s2c_acked = 4
    log(hot, a, b" world")
    a.fin_c = True
    log(hot, a, b"")
    assert pool.of("a") == [
        ("open", "a", "svc"), ("feed", "a", b"hello"), ("acked", "a", 0),
        ("feed", "a", b" world"), ("acked", "a", 4),
        ("acked", "a", 4), ("finish", "a"),
    ]


def test_at_most_max_hot_replicas_and_a_passed_over_connection_stays_cold(pool):
    hot, a, b = standby(pool, max_hot=1), FakeConn("a"), FakeConn("b")
    log(hot, a, b"x")
    log(hot, b, b"y")          # no slot: b's byte 0 goes to nobody
    assert pool.kinds("b") == []
    hot.gone(a)
    assert pool.of("a")[-1] == ("drop", "a")
    log(hot, b, b"z")          # a slot is free, but a replica of b would start mid-stream
    assert pool.kinds("b") == []


def test_connection_with_nothing_logged_yet_opens_once_a_slot_frees(pool):
    hot, a, b = standby(pool, max_hot=1), FakeConn("a"), FakeConn("b")
    log(hot, a, b"x")
    log(hot, b, b"")           # passed over, but nothing was logged yet
    hot.gone(a)
    log(hot, b, b"hi")
    assert pool.of("b") == [("open", "b", "svc"), ("feed", "b", b"hi"), ("acked", "b", 0)]


def test_unprotected_connection_replica_is_dropped_and_its_slot_freed(pool):
    hot, a, b = standby(pool, max_hot=1), FakeConn("a"), FakeConn("b")
    log(hot, a, b"x")
    a.status = "unprotected"
    log(hot, a, b"more")
    assert pool.kinds("a") == ["open", "feed", "acked", "drop"]
    log(hot, b, b"y")
    assert pool.kinds("b") == ["open", "feed", "acked"]


def test_divergence_reported_by_pool_unprotects_the_connection(pool):
    hot, a = standby(pool), FakeConn("a")
    log(hot, a, b"x")
    reason = "diverged: the replica's output differs from the primary's at server byte 0"
    pool.diverged["a"] = reason
    log(hot, a, b"")
    assert hot.tracker.marked == [(a, reason)]
    assert pool.diverged == {}
    assert pool.kinds("a")[-1] == "drop"


def test_new_connection_on_the_same_four_tuple_gets_a_new_replica(pool):
    hot, old, new = standby(pool), FakeConn("a"), FakeConn("a")
    log(hot, old, b"x")
    log(hot, new, b"y")
    assert pool.kinds("a") == ["open", "feed", "acked", "drop", "open", "feed", "acked"]


def test_primary_segments_are_checked_on_the_next_seen(pool):
    hot, a = standby(pool), FakeConn("a")
    assert hot.tracker.s2c_hook == hot.primary_sent
    log(hot, a, b"")                         # nothing exchanged yet: no slot
    assert pool.of("a") == [] and a.replica == ""
    hot.primary_sent(a, 0, b"220 ready\n")   # before the replica exists: sent when it opens
    a.s2c_sent = 10
    log(hot, a, b"")
    hot.primary_sent(a, 10, b"PONG a\n")
    hot.primary_sent(a, 17, b"PONG b\n")
    log(hot, a, b"PING c\n")
    crc = zlib.crc32
    assert pool.of("a") == [
        ("open", "a", "svc"), ("expect", "a", [(0, 10, crc(b"220 ready\n"))]), ("acked", "a", 0),
        ("expect", "a", [(10, 7, crc(b"PONG a\n")), (17, 7, crc(b"PONG b\n"))]),
        ("feed", "a", b"PING c\n"), ("acked", "a", 0),
    ]
    assert a.replica == "hot"


def test_an_aligned_service_keeps_the_primary_s_bytes_to_compare(pool):
    hot, a = HotStandby(pool, FakeTracker(), divergence={"svc": "aligned"}), FakeConn("a")
    log(hot, a, b"PING 1\n")
    hot.primary_sent(a, 0, memoryview(b"PONG 1\n"))
    pool.differed["a"] = 3           # what the pool found so far
    log(hot, a, b"")
    assert ("expect", "a", [(0, 7, b"PONG 1\n")]) in pool.of("a")
    assert a.divergent == 3


def test_no_checks_queued_for_connections_that_cannot_be_hot(pool):
    hot, a, b = standby(pool, max_hot=1), FakeConn("a"), FakeConn("b")
    log(hot, a, b"x")
    hot.primary_sent(b, 0, b"PONG b\n")
    assert b not in hot._checks      # no CRC kept for a connection past max_hot
    log(hot, b, b"y")
    assert "expect" not in pool.kinds("b")


# --- ReplicaPool against a real line server ----------------------------------------------

@pytest.fixture
def server():
    srv = LineServer()
    yield srv.addr
    srv.close()


@pytest.fixture
def replicas(server):
    rp = ReplicaPool({"svc": server})
    rp.start()
    yield rp
    rp.stop()
    assert not rp.is_alive()


def produced(rp, cid):
    rep = rp._replicas.get(cid)
    return rep.produced if rep is not None else None


OUTPUT = b"PONG a\nPONG b\n"


def test_pool_feeds_replica_checks_its_output_and_detaches_it(replicas):
    replicas.open("c1", "svc")
    replicas.expect("c1", [(0, 7, zlib.crc32(OUTPUT[:7])), (7, 7, zlib.crc32(OUTPUT[7:]))])
    replicas.feed("c1", b"PING a\nPING b\n")
    replicas.acked("c1", 7)        # the client has "PONG a\n" from the primary
    wait_for(lambda: produced(replicas, "c1") == len(OUTPUT), 5, "the replica to produce its whole output",
             interval=0.005)
    det = replicas.detach_many(["c1", "unknown"])["c1"]
    assert isinstance(det, Detached)
    try:
        assert det.diverged is None and "c1" not in replicas.diverged
        assert (det.fed, det.unsent) == (14, b"")
        assert (det.tail_start, det.tail) == (7, b"PONG b\n")   # produced == tail_start + len(tail)
        assert det.checks == []                                 # both compared
        det.sock.settimeout(5)
        det.sock.sendall(b"PING c\n")                           # handed over live
        assert det.sock.recv(64) == b"PONG c\n"
    finally:
        if det.sock is not None:
            det.sock.close()
    assert replicas.detach_many(["c1"]) == {}


def test_pool_marks_replica_diverged_on_crc_mismatch(replicas):
    replicas.open("c1", "svc")
    replicas.expect("c1", [(0, 7, zlib.crc32(OUTPUT[:7])), (7, 7, zlib.crc32(b"PONG x\n"))])
    replicas.feed("c1", b"PING a\nPING b\n")
    wait_for(lambda: "c1" in replicas.diverged, 5, "the divergence verdict", interval=0.005)
    reason = replicas.diverged["c1"]
    assert reason.startswith("diverged") and "server byte 7" in reason
    det = replicas.detach_many(["c1"])["c1"]
    assert isinstance(det, Detached)
    assert det.diverged == reason and det.sock is None
    assert "c1" not in replicas.diverged     # the verdict travelled with the Detached


def test_a_replica_that_closes_its_output_is_no_longer_selected_for_reading():
    """recv() of b"" on a closed replica: selecting it for reading again would spin
    the pool thread at full CPU until the connection ends."""
    srv = LineServer(lines=1)
    rp = ReplicaPool({"svc": srv.addr})
    rp.start()
    try:
        rp.open("c1", "svc")
        rp.feed("c1", b"PING a\n")
        wait_for(lambda: "c1" in rp._replicas and rp._replicas["c1"].eof, 5, "the replica's EOF", interval=0.005)
        rep = rp._replicas["c1"]
        assert rep.produced == 7 and not rep.events & selectors.EVENT_READ
    finally:
        rp.stop()
        srv.close()


def test_a_reused_four_tuple_frees_the_old_slot(pool):
    hot, old, b = standby(pool, max_hot=1), FakeConn("a"), FakeConn("b")
    log(hot, old, b"x")
    new = FakeConn("a")               # same 4-tuple, new connection, passed over...
    new.status = "unprotected"
    hot.seen(new, b"")
    log(hot, b, b"y")                 # ...and the slot the old one held is free again
    assert pool.kinds("b")[0] == "open"


def test_a_verdict_not_collected_dies_with_its_replica(replicas):
    replicas.open("c1", "svc")
    replicas.expect("c1", [(0, 7, zlib.crc32(b"PONG x\n"))])
    replicas.feed("c1", b"PING a\n")
    wait_for(lambda: "c1" in replicas.diverged, 5, "the divergence verdict", interval=0.005)
    replicas.drop("c1")
    wait_for(lambda: "c1" not in replicas._replicas, 5, "the replica to be dropped", interval=0.005)
    assert "c1" not in replicas.diverged   # a new connection on this 4-tuple starts clean


def clock_answer(index, line):
    """"PING X\n" -> "PONG X <the replica's own counter>\n": like a Date header, the
    same shape as the primary's answer but not the same digits, until the counter
    grows a digit."""
    return b"PONG " + line.removeprefix(b"PING ").rstrip() + b" %d\n" % (7 + index)


@pytest.fixture
def clock_replicas():
    srv = LineServer(clock_answer)
    rp = ReplicaPool({"svc": srv.addr})
    rp.start()
    yield rp
    rp.stop()
    srv.close()


def test_aligned_tolerates_same_shape_output_and_keeps_the_primary_s_bytes(clock_replicas):
    rp = clock_replicas
    rp.open("c1", "svc")
    primary = b"PONG a 3\nPONG b 4\n"       # the replica says 7 and 8
    rp.expect("c1", [(0, 9, primary[:9]), (9, 9, primary[9:])])
    rp.feed("c1", b"PING a\nPING b\n")
    wait_for(lambda: produced(rp, "c1") == 18 and not rp._replicas["c1"].checks, 5, "both answers compared",
             interval=0.005)
    assert rp.differed["c1"] == 2 and "c1" not in rp.diverged
    det = rp.detach_many(["c1"])["c1"]
    try:
        assert det.diverged is None and det.tail == primary   # the primary's bytes, not the replica's
    finally:
        det.sock.close()


def test_aligned_refuses_output_that_moved(clock_replicas):
    rp = clock_replicas
    rp.open("c1", "svc")
    rp.expect("c1", [(0, 10, b"PONG a 10\n")])      # the primary's counter had two digits
    rp.feed("c1", b"PING a\nPING b\n")
    wait_for(lambda: "c1" in rp.diverged, 5, "the divergence verdict", interval=0.005)
    assert "server byte 0" in rp.diverged["c1"]


def test_aligned_expectations_are_bounded_in_bytes(clock_replicas):
    rp = clock_replicas
    rp.max_tail = 100
    rp.open("c1", "svc")
    rp.expect("c1", [(i * 10, 10, b"x" * 10) for i in range(30)])   # the replica has produced nothing
    wait_for(lambda: rp.unverified == 20, 5, "20 unverified bytes", interval=0.005)
    rep = rp._replicas["c1"]
    assert rep.expected_bytes == 100 and rep.checks[0][0] == 200


def test_a_replica_failure_is_shown_on_its_connection(pool):
    hot, a = standby(pool), FakeConn("a")
    log(hot, a, b"x")
    pool.failed["a"] = "replica connection: Connection refused"
    log(hot, a, b"y")
    assert a.replica == "failed: replica connection: Connection refused"


def test_a_replica_that_does_not_read_its_input_fails_and_its_input_is_dropped(replicas):
    replicas.max_tail = 1000
    replicas.open("c1", "svc")
    replicas.feed("c1", b"x" * 1001)
    wait_for(lambda: "c1" in replicas.failed, 5, "the replica to fail", interval=0.005)
    assert "does not read its input" in replicas.failed["c1"] and replicas.failures == 1
    assert len(replicas._replicas["c1"].out) == 0

"""ftcp.agent.tracker and what it is made of (conn, reassembly, segment_checks, admission):
TCP state and exact client->server reassembly, frames built with scapy.

Long because it tests one state machine through one entry, the segments fed to it: its
cases stay together, grouped by what the client or the server sends."""
import hashlib
import json
import random

import pytest
from scapy.all import ARP, IP, TCP, Ether

from ftcp.agent.packet import ACK, PSH, Segment, ip_int
from ftcp.agent.conn import Conn
from ftcp.agent.seqspace import seq_diff, seq_leq, seq_lt
from ftcp.agent.tracker import Tracker
from tests.support.wire import C, OPTS, S, S_OPTS, SERVICES, SPORT, STREAM, Link, frame, ts

@pytest.fixture
def t():
    return Tracker(SERVICES, log_cap=1 << 20)


def drain(conn):
    return conn.take_c2s()


# --- sequence arithmetic -----------------------------------------------------------------

def test_seq_helpers():
    assert seq_diff(0, 0xFFFFFFFF) == 1
    assert seq_diff(0xFFFFFFFF, 0) == -1
    assert seq_diff(10, 3) == 7
    assert seq_diff(0x80000000, 0) == -0x80000000
    assert seq_diff(0x7FFFFFFF, 0) == 0x7FFFFFFF
    assert seq_lt(0xFFFFFFF0, 5) is True
    assert seq_lt(5, 0xFFFFFFF0) is False
    assert seq_lt(7, 7) is False
    assert seq_leq(7, 7) is True
    assert seq_leq(8, 7) is False


# --- handshake and options ------------------------------------------------------------------

def test_handshake_with_options_full_state(t):
    L = Link(t, now=10.0)
    conn = L.handshake(c_opts=OPTS, s_opts=S_OPTS)
    assert isinstance(conn, Conn)
    L.now = 11.5
    L.data(0, 5, opts=ts(101, 500), win=502)
    L.sack(5, opts=ts(501, 101), win=509)
    assert drain(conn) == STREAM[:5]
    state = conn.to_state()
    assert state == {
        "id": "10.0.0.1:40000-10.0.0.2:7000",
        "service": "echo",
        "client_ip": "10.0.0.1", "client_port": 40000,
        "server_ip": "10.0.0.2", "server_port": 7000,
        "state": "established", "status": "protected", "reason": "",
        "isn_c": 1000, "isn_s": 5000,
        "c_opts": {"mss": 1460, "wscale": 7, "sack_perm": True, "ts": True},
        "s_opts": {"mss": 1400, "wscale": 9, "sack_perm": True, "ts": True},
        "mss_c": 1460, "mss_s": 1400, "wscale_c": 7, "wscale_s": 9, "sack_ok": True, "ts_ok": True,
        "c2s_logged": 5, "c2s_next": 1006, "c2s_acked": 5, "s_ack": 1006,
        "s2c_sent": 0, "s2c_next": 5001, "s2c_acked": 0, "c_ack": 5001,
        "c_win": 502, "c_win_scaled": 502 << 7, "s_win": 509, "s_win_scaled": 509 << 9,
        "c_tsval": 101, "c_tsecr": 500, "s_tsval": 501, "s_tsecr": 101,
        "fin_c": False, "fin_c_seq": None, "fin_s": False, "fin_s_seq": None, "rst": False,
        "ooo_bytes": 0,
        "divergent_bytes": 0,
        "replica": "",
        "first_seen": 10.0, "last_seen": 11.5, "closed_at": None, "restored": False,
    }
    assert json.loads(json.dumps(state)) == state


def test_syn_windows_are_not_scaled(t):
    L = Link(t)
    conn = L.c("S", L.isn_c, opts=OPTS, win=64240)
    assert (conn.c_win, conn.c_win_scaled) == (64240, 64240)
    L.s("SA", L.isn_s, L.cs(0), opts=S_OPTS, win=65160)
    assert (conn.s_win, conn.s_win_scaled) == (65160, 65160)
    L.cack(0, win=300)
    assert (conn.c_win, conn.c_win_scaled) == (300, 300 << 7)


def test_handshake_without_options(t):
    L = Link(t)
    conn = L.handshake(c_opts=[], s_opts=[])
    assert conn.c_opts == {"mss": None, "wscale": None, "sack_perm": False, "ts": False}
    assert conn.s_opts == {"mss": None, "wscale": None, "sack_perm": False, "ts": False}
    assert (conn.mss_c, conn.mss_s) == (536, 536)
    assert (conn.wscale_c, conn.wscale_s, conn.sack_ok, conn.ts_ok) == (0, 0, False, False)
    L.data(0, 10, win=1000)
    assert (conn.c_win, conn.c_win_scaled) == (1000, 1000)
    assert (conn.c_tsval, conn.s_tsval) == (None, None)


@pytest.mark.parametrize("c_opts,s_opts,expect", [
    # (wscale_c, wscale_s, sack_ok, ts_ok, mss_c, mss_s)
    ([("WScale", 7)], [], (0, 0, False, False, 536, 536)),
    ([], [("WScale", 5)], (0, 0, False, False, 536, 536)),
    ([("WScale", 0)], [("WScale", 0)], (0, 0, False, False, 536, 536)),
    ([("WScale", 2)], [("WScale", 15)], (2, 14, False, False, 536, 536)),
    ([("WScale", 15)], [("WScale", 3)], (14, 3, False, False, 536, 536)),
    ([("SAckOK", b"")], [], (0, 0, False, False, 536, 536)),
    ([("SAckOK", b"")], [("SAckOK", b"")], (0, 0, True, False, 536, 536)),
    ([("Timestamp", (1, 0))], [], (0, 0, False, False, 536, 536)),
    ([("Timestamp", (1, 0))], [("Timestamp", (2, 1))], (0, 0, False, True, 536, 536)),
    ([("MSS", 1200)], [("MSS", 9000)], (0, 0, False, False, 1200, 9000)),
    (OPTS, [("MSS", 1460)], (0, 0, False, False, 1460, 1460)),
])
def test_asymmetric_offers(t, c_opts, s_opts, expect):
    conn = Link(t).handshake(c_opts=c_opts, s_opts=s_opts)
    assert (conn.wscale_c, conn.wscale_s, conn.sack_ok, conn.ts_ok, conn.mss_c, conn.mss_s) == expect


def test_to_state_keys(t):
    conn = Link(t).handshake()
    assert set(conn.to_state()) == {
        "id", "service", "client_ip", "client_port", "server_ip", "server_port", "state", "status", "reason",
        "isn_c", "isn_s", "c_opts", "s_opts", "mss_c", "mss_s", "wscale_c", "wscale_s", "sack_ok", "ts_ok",
        "c2s_logged", "c2s_next", "c2s_acked", "s_ack", "s2c_sent", "s2c_next", "s2c_acked", "c_ack",
        "c_win", "c_win_scaled", "s_win", "s_win_scaled", "c_tsval", "c_tsecr", "s_tsval", "s_tsecr",
        "fin_c", "fin_c_seq", "fin_s", "fin_s_seq", "rst", "ooo_bytes", "divergent_bytes",
        "replica", "first_seen", "last_seen", "closed_at", "restored"}


def test_to_state_is_a_copy(t):
    conn = Link(t).handshake()
    conn.to_state()["c_opts"]["mss"] = 1
    assert conn.c_opts["mss"] == 1460


# --- direction and counters ----------------------------------------------------------------

def test_direction_from_either_end_and_ignored(t):
    L = Link(t)
    conn = L.handshake()
    assert conn.key == (ip_int(C), 40000, ip_int(S), SPORT)
    assert t.conns == {conn.key: conn}
    # a segment between two non-service endpoints, and one to the service IP on another port
    assert t.feed_frame(frame(C, "10.0.0.9", 1, 2, "A", 1, 1), 1.0) is None
    assert t.feed_frame(frame(C, S, 40000, 7001, "S", 1, 0), 1.0) is None
    assert t.feed_frame(frame(S, C, 7001, 40000, "A", 1, 1), 1.0) is None
    assert (t.packets, t.ignored, t.malformed) == (6, 3, 0)


def test_counters_malformed_and_packets(t):
    L = Link(t)
    L.handshake()
    assert t.feed_frame(b"\x00" * 10, 1.0) is None                       # not even Ethernet: not TCP
    assert t.feed_frame(bytes(Ether() / ARP()), 1.0) is None               # a broadcast: not ours, not broken
    assert t.feed_frame(bytes(Ether() / IP(src=C, dst=S, flags="MF") / TCP(dport=SPORT)), 1.0) is None
    assert (t.packets, t.ignored, t.malformed, t.other) == (3, 0, 1, 2)


def test_two_connections_are_independent(t):
    a, b = Link(t, cport=40001), Link(t, cport=40002, isn_c=0xFFFFFFF0)
    ca, cb = a.handshake(), b.handshake()
    assert ca is not cb
    a.data(0, 10)
    b.data(0, 20)
    a.data(10, 5)
    assert (drain(ca), drain(cb)) == (STREAM[:15], STREAM[:20])
    assert cb.id == "10.0.0.1:40002-10.0.0.2:7000"


# --- reassembly ---------------------------------------------------------------------------

def test_in_order_delivery_and_take(t):
    L = Link(t)
    conn = L.handshake()
    assert drain(conn) == b""
    for off in (0, 100, 200):
        L.data(off, 100)
    assert (conn.c2s_logged, conn.c2s_next) == (300, 1301)
    assert drain(conn) == STREAM[:300]
    assert drain(conn) == b""
    L.data(300, 1)
    assert drain(conn) == STREAM[300:301]


def test_reordering(t):
    L = Link(t)
    conn = L.handshake()
    L.data(100, 100)
    L.data(200, 50)
    assert (conn.c2s_logged, conn.ooo_bytes, conn.c2s_next) == (0, 150, 1001)
    assert drain(conn) == b""
    L.data(0, 100)
    assert (conn.c2s_logged, conn.ooo_bytes, conn.c2s_next) == (250, 0, 1251)
    assert drain(conn) == STREAM[:250]
    assert conn.status == "protected"


def test_retransmission_delivered_once(t):
    L = Link(t)
    conn = L.handshake()
    L.data(0, 100)
    L.data(100, 100)
    L.data(0, 100)
    L.data(100, 100)
    L.data(0, 200)  # repacketized retransmission
    assert conn.c2s_logged == 200
    assert drain(conn) == STREAM[:200]
    L.data(150, 50)  # a late duplicate of the tail, after the take
    assert drain(conn) == b""


def test_partial_overlap_with_delivered_bytes(t):
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.data(5, 10)  # bytes 5..9 old, 10..14 new
    assert conn.c2s_logged == 15
    assert drain(conn) == STREAM[:15]


def test_overlaps_on_both_sides_of_held_segments(t):
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.data(20, 10)       # held 20..29
    L.data(15, 10)       # held 15..24: overlaps the front of 20..29
    L.data(25, 15)       # held 25..39: overlaps the back of 20..29
    L.data(12, 30)       # held 12..41: covers everything held, beyond both ends
    assert conn.c2s_logged == 10
    assert conn.ooo_bytes == 30                     # bytes 12..41, each held once
    L.data(8, 6)         # 8..13: overlaps delivered bytes and the front of the held ones
    assert (conn.c2s_logged, conn.ooo_bytes) == (42, 0)
    assert drain(conn) == STREAM[:42]


def test_same_offset_keeps_the_longer_segment(t):
    L = Link(t)
    conn = L.handshake()
    L.data(10, 5)
    L.data(10, 20)
    L.data(10, 8)
    assert conn.ooo_bytes == 20
    L.data(0, 10)
    assert drain(conn) == STREAM[:30]


def test_held_copies_that_differ_leave_the_connection_unprotected(t):
    """Which of two differing held copies Linux keeps depends on how it merged its
    out-of-order queue: the connection is unprotected, its log never guesses."""
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.data(20, 10)
    L.c("PA", L.cs(25), L.ss(0), b"#" * 10)          # 25..34: differs from what is held at 25..29
    assert conn.status == "unprotected" and conn.reason == "conflicting copies of client data at client byte 25"
    assert t.ooo_total == 0 and drain(conn) == STREAM[:10]


def test_a_held_copy_covered_by_what_is_held_is_not_kept_twice(t):
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.data(20, 20)
    L.data(25, 10)                                    # same bytes, inside 20..39
    assert (conn.status, conn.ooo_bytes) == ("protected", 20)
    L.data(10, 10)
    assert drain(conn) == STREAM[:40]


def test_in_order_bytes_win_over_a_differing_held_copy(t):
    """The in-order segment is queued first and the held one trimmed behind it, in
    Linux as here: no ambiguity, the connection stays protected."""
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.c("PA", L.cs(15), L.ss(0), b"#" * 10)          # held 15..24
    L.data(10, 10)                                    # 10..19 in order: its 15..19 win
    assert conn.status == "protected" and drain(conn) == STREAM[:20] + b"#" * 5


def test_hole_filled_later_releases_what_follows(t):
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.data(20, 10)
    L.data(30, 10)
    L.data(50, 10)   # beyond a second hole
    assert drain(conn) == STREAM[:10]
    L.data(10, 10)
    assert (conn.c2s_logged, conn.ooo_bytes) == (40, 10)
    assert drain(conn) == STREAM[10:40]
    L.data(40, 10)
    assert drain(conn) == STREAM[40:60]
    assert conn.ooo_bytes == 0


@pytest.mark.parametrize("isn_c", [0xFFFFFFFF - 4, 0xFFFFFFFF, 0xFFFFFFFE])
def test_client_stream_wraps_at_2_32(t, isn_c):
    L = Link(t, isn_c=isn_c)
    conn = L.handshake()
    assert conn.isn_c == isn_c
    L.data(10, 10)
    L.data(0, 4)
    L.data(20, 20)
    L.data(4, 6)
    assert conn.c2s_logged == 40
    assert conn.c2s_next == (isn_c + 41) % 2 ** 32
    assert conn.c2s_next <= 40  # really wrapped (at the SYN itself for ISN 2^32-1)
    L.sack(40)
    assert conn.status == "protected"
    assert (conn.c2s_acked, conn.s_ack) == (40, (isn_c + 41) % 2 ** 32)
    assert drain(conn) == STREAM[:40]


def test_server_stream_wraps_at_2_32(t):
    L = Link(t, isn_s=0xFFFFFFFF - 2)
    conn = L.handshake()
    L.sdata(0, 100, 0)
    L.sdata(200, 100, 0)  # reordered on the way to the mirror: highest counts
    L.sdata(100, 100, 0)
    assert (conn.s2c_sent, conn.s2c_next) == (300, (0xFFFFFFFF - 2 + 301) % 2 ** 32)
    L.cack(100)
    assert (conn.s2c_acked, conn.c_ack) == (100, L.ss(100))
    L.cack(50)  # an old ACK does not move the mark back
    L.cack(300)
    assert (conn.s2c_acked, conn.c_ack) == (300, 298)
    assert conn.status == "protected"


def test_long_stream_wraps_from_isn_near_top(t):
    L = Link(t, isn_c=2 ** 32 - 1000)
    conn = L.handshake()
    got = b""
    for off in range(0, 5000, 500):
        L.data(off, 500)
        L.sack(off + 500)
        got += drain(conn)
    assert got == STREAM[:5000]
    assert conn.c2s_next == 2 ** 32 - 1000 + 5001 - 2 ** 32
    assert conn.status == "protected"


def test_tcp_fast_open_data_in_syn(t):
    L = Link(t)
    conn = L.c("S", L.isn_c, payload=STREAM[:30], opts=OPTS)
    assert (conn.c2s_logged, conn.c2s_next) == (30, 1031)
    L.s("SA", L.isn_s, L.cs(30), opts=S_OPTS)
    L.cack(0, coff=30)
    L.data(30, 10)
    assert drain(conn) == STREAM[:40]
    assert (conn.status, conn.c2s_acked) == ("protected", 30)


def test_keepalive_probes_below_the_stream_are_ignored(t):
    # Keepalives carry seq = snd_nxt - 1, some stacks with one garbage byte: at offset -1
    # before any data, i.e. on the ISN, so 32-bit offsets would see them ~4 GiB ahead.
    L = Link(t)
    conn = L.handshake()
    L.c("A", L.isn_c, L.ss(0), payload=b"\x00")
    L.s("A", L.isn_s, L.cs(0), payload=b"\x00")
    assert (conn.c2s_logged, conn.ooo_bytes, conn.s2c_sent, conn.s2c_next) == (0, 0, 0, L.ss(0))
    L.data(0, 10)
    L.c("A", L.cs(9), L.ss(0), payload=b"\x00")
    assert (conn.status, conn.c2s_logged, conn.ooo_bytes, drain(conn)) == ("protected", 10, 0, STREAM[:10])


def test_stream_longer_than_4_gib():
    # 64 KiB segments as GRO hands them to AF_PACKET; Segments built directly (scapy would take minutes)
    t = Tracker(SERVICES, log_cap=None)
    isn = 2 ** 32 - 70000
    L = Link(t, isn_c=isn)
    conn = L.handshake()
    cip, sip = ip_int(C), ip_int(S)
    chunk = bytes(range(256)) * 256
    n_segs = 2 ** 32 // len(chunk) + 40
    got = 0
    for i in range(n_segs):
        t.feed(Segment(cip, sip, 40000, SPORT, L.cs(i * 65536), L.ss(0), PSH | ACK, 502, chunk), 2.0)
        got += len(conn.take_c2s())
        if i % 64 == 63:
            t.feed(Segment(sip, cip, SPORT, 40000, L.ss(0), L.cs((i + 1) * 65536), ACK, 502, b""), 2.0)
    total = n_segs * 65536
    assert total > 2 ** 32
    assert (conn.status, got, conn.c2s_logged) == ("protected", total, total)
    assert conn.c2s_next == (isn + 1 + total) % 2 ** 32
    assert conn.c2s_acked == (n_segs // 64) * 64 * 65536


# --- FIN / RST and states ------------------------------------------------------------------

def test_client_closes_first(t):
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.c("FA", L.cs(10), L.ss(0), now=5.0)
    assert (conn.state, conn.fin_c, conn.fin_c_seq) == ("closing", True, L.cs(10))
    assert (conn.c2s_logged, conn.c2s_next) == (10, L.cs(11))
    L.sack(11)
    assert (conn.state, conn.c2s_acked, conn.status) == ("closing", 10, "protected")
    L.sdata(0, 20, 11)  # half-closed: the server still sends
    L.s("FA", L.ss(20), L.cs(11), now=6.0)
    assert (conn.fin_s, conn.fin_s_seq, conn.s2c_next, conn.s2c_sent) == (True, L.ss(20), L.ss(21), 20)
    assert conn.state == "closing"
    L.cack(20, coff=11)  # acks the data, not the FIN yet
    assert conn.state == "closing"
    L.c("A", L.cs(11), L.ss(21), now=7.0)
    assert (conn.state, conn.closed_at, conn.rst) == ("closed", 7.0, False)
    assert (conn.s2c_acked, conn.status) == (20, "protected")
    assert drain(conn) == STREAM[:10]


def test_server_closes_first_and_fin_with_data(t):
    L = Link(t)
    conn = L.handshake()
    L.sdata(0, 10, 0, flags="FPA")
    assert (conn.state, conn.fin_s, conn.fin_s_seq, conn.s2c_sent, conn.s2c_next) == \
        ("closing", True, L.ss(10), 10, L.ss(11))
    L.c("FA", L.cs(0), L.ss(11), payload=STREAM[:5])
    assert (conn.state, conn.fin_c_seq, conn.c2s_next, conn.s2c_acked) == ("closing", L.cs(5), L.cs(6), 10)
    L.sack(6, soff=11, now=3.0)
    assert (conn.state, conn.closed_at, conn.c2s_acked) == ("closed", 3.0, 5)
    assert drain(conn) == STREAM[:5]


def test_fin_beyond_a_hole_counts_once_the_hole_fills(t):
    L = Link(t)
    conn = L.handshake()
    L.c("FA", L.cs(10), L.ss(0), payload=STREAM[10:20])
    assert (conn.state, conn.c2s_next, conn.c2s_logged) == ("closing", L.cs(0), 0)
    L.data(0, 10)
    assert (conn.c2s_next, conn.c2s_logged) == (L.cs(21), 20)
    L.sack(21)
    assert (conn.status, conn.c2s_acked) == ("protected", 20)
    assert drain(conn) == STREAM[:20]


def test_retransmitted_fin_keeps_first(t):
    L = Link(t)
    conn = L.handshake()
    L.c("FA", L.cs(0), L.ss(0))
    L.c("FA", L.cs(0), L.ss(0))
    assert (conn.fin_c_seq, conn.c2s_next) == (L.cs(0), L.cs(1))


@pytest.mark.parametrize("side", ["client", "server"])
def test_rst_closes(t, side):
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.data(20, 10)
    if side == "client":
        L.c("R", L.cs(10), now=4.0)
    else:
        L.s("RA", L.ss(0), L.cs(10), now=4.0)
    assert (conn.state, conn.rst, conn.closed_at, conn.ooo_bytes) == ("closed", True, 4.0, 0)
    L.data(10, 10, now=5.0)  # nothing is delivered after the reset
    assert (conn.c2s_logged, conn.last_seen, conn.closed_at) == (10, 5.0, 4.0)
    assert drain(conn) == STREAM[:10]


def test_rst_refusing_the_syn(t):
    L = Link(t)
    conn = L.c("S", L.isn_c, opts=OPTS)
    L.s("RA", 0, L.cs(0), now=2.0)
    assert (conn.state, conn.rst, conn.closed_at) == ("closed", True, 2.0)


def test_stray_rst_for_unknown_tuple_ignored(t):
    L = Link(t)
    assert L.c("R", 12345) is None
    assert L.s("RA", 1, 2) is None
    assert t.conns == {}
    assert (t.packets, t.ignored) == (2, 2)
    assert t.take_dirty() == []


# --- connections we cannot protect ---------------------------------------------------------

def test_connection_seen_without_syn(t):
    L = Link(t)
    conn = L.data(0, 100, sack=0, now=3.0)
    assert (conn.status, conn.reason) == ("unprotected", "no SYN seen (connection predates capture)")
    assert (conn.state, conn.isn_c, conn.isn_s, conn.c_opts) == ("established", None, None, None)
    assert (conn.c2s_logged, conn.c2s_next, conn.first_seen) == (0, L.cs(100), 3.0)
    L.data(100, 50)
    L.sack(150)
    L.sdata(0, 70, 150)
    L.cack(70, coff=150)
    assert drain(conn) == b""
    assert (conn.c2s_logged, conn.c2s_next, conn.c2s_acked, conn.s_ack) == (0, L.cs(150), 150, L.cs(150))
    assert (conn.s2c_sent, conn.s2c_next, conn.s2c_acked, conn.c_ack) == (70, L.ss(70), 70, L.ss(70))
    assert conn.reason == "no SYN seen (connection predates capture)"
    json.dumps(conn.to_state())


def test_connection_first_seen_from_server_side(t):
    L = Link(t)
    conn = L.sdata(0, 10, 500)
    assert (conn.status, conn.state) == ("unprotected", "established")
    assert (conn.s2c_sent, conn.s2c_next, conn.s_ack, conn.c2s_next) == (10, L.ss(10), L.cs(500), L.cs(500))
    L.data(500, 20, sack=10)
    assert (conn.c2s_next, conn.c2s_logged, conn.s2c_acked) == (L.cs(520), 0, 10)
    assert drain(conn) == b""


def test_synack_without_its_syn(t):
    L = Link(t)
    conn = L.s("SA", L.isn_s, L.cs(0), opts=S_OPTS)
    assert (conn.status, conn.reason) == ("unprotected", "no SYN seen (connection predates capture)")
    assert (conn.state, conn.isn_c, conn.isn_s, conn.c_opts) == ("syn_received", 1000, 5000, None)
    assert conn.s_opts["wscale"] == 9
    assert conn.wscale_s == 0  # the client's offer is unknown
    L.cack(0)
    assert conn.state == "established"
    L.data(0, 10)
    assert (conn.c2s_next, drain(conn)) == (L.cs(10), b"")


def test_log_cap_exactly_reached_stays_protected():
    t = Tracker(SERVICES, log_cap=25)
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.data(10, 15)
    assert (conn.status, conn.c2s_logged) == ("protected", 25)
    L.c("FA", L.cs(25), L.ss(0))
    assert conn.status == "protected"


def test_log_cap_exceeded():
    t = Tracker(SERVICES, log_cap=25)
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.data(10, 10)
    L.data(30, 10)  # held
    L.data(20, 10)  # would take the log to 30
    assert (conn.status, conn.reason) == ("unprotected", "log cap of 25 bytes reached")
    assert (conn.c2s_logged, conn.ooo_bytes) == (25, 0)
    assert drain(conn) == STREAM[:25]
    L.data(40, 10)
    L.sack(50)
    assert (drain(conn), conn.c2s_logged, conn.c2s_next) == (b"", 25, L.cs(50))
    assert conn.reason == "log cap of 25 bytes reached"  # the capture gap did not replace it


def test_log_cap_reached_while_draining_held_segments():
    t = Tracker(SERVICES, log_cap=25)
    L = Link(t)
    conn = L.handshake()
    L.data(10, 10)
    L.data(20, 10)
    L.data(0, 10)
    assert (conn.status, conn.reason, conn.c2s_logged) == ("unprotected", "log cap of 25 bytes reached", 25)
    assert drain(conn) == STREAM[:25]


def test_no_log_cap():
    t = Tracker(SERVICES, log_cap=None)
    L = Link(t)
    conn = L.handshake()
    L.data(0, 1000)
    assert (conn.status, conn.c2s_logged) == ("protected", 1000)


def test_capture_gap_client_to_server(t):
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.data(30, 10)  # 10..29 lost by the capture, the server got them
    L.sack(10)
    assert conn.status == "protected"
    L.sack(40)
    assert (conn.status, conn.reason) == ("unprotected", "capture gap: server acked 30 bytes not seen")
    assert (conn.ooo_bytes, conn.c2s_logged) == (0, 10)
    assert drain(conn) == STREAM[:10]
    L.data(10, 20)  # the missing bytes come too late: nothing more is logged
    assert drain(conn) == b""


def test_an_ack_of_server_bytes_the_mirror_never_showed_is_not_taken(t):
    """As far as the agent knows the server has not sent them: Linux drops such a
    segment (tcp_ack: "ACK of unsent data"), and so does the tracker, data and all. If
    the mirror had missed them, the server's next ACK shows the client bytes we lack:
    a capture gap, with its reason, never a wrong log."""
    L = Link(t)
    conn = L.handshake()
    L.sdata(0, 100, 0)
    L.cack(100)
    L.c("PA", L.cs(0), L.ss(150), STREAM[:10])
    assert (conn.status, conn.s2c_acked, drain(conn), t.out_of_window) == ("protected", 100, b"", 1)
    L.sack(10)
    assert conn.status == "unprotected" and conn.reason.startswith("capture gap")


def test_acks_of_fins_are_not_gaps(t):
    L = Link(t)
    conn = L.handshake()
    L.data(0, 5)
    L.c("FA", L.cs(5), L.ss(0))
    L.sack(6)
    L.s("FA", L.ss(0), L.cs(6))
    L.cack(1, coff=6)
    assert (conn.status, conn.state) == ("protected", "closed")


def test_server_acking_past_our_fin_is_a_gap(t):
    L = Link(t)
    conn = L.handshake()
    L.c("FA", L.cs(5), L.ss(0), payload=STREAM[5:10])  # FIN at 10, 0..4 missing
    L.sack(11)
    assert (conn.status, conn.reason) == ("unprotected", "capture gap: server acked 11 bytes not seen")


def test_reassembly_buffer_overflow():
    t = Tracker(SERVICES, log_cap=1 << 20, max_ooo=100)
    L = Link(t)
    conn = L.handshake()
    L.data(10, 60)
    L.data(70, 40)
    assert (conn.status, conn.ooo_bytes) == ("protected", 100)
    L.data(110, 1)
    assert (conn.status, conn.ooo_bytes) == ("unprotected", 0) and conn.reason.startswith("reassembly buffer overflow")
    L.data(0, 10)
    assert (drain(conn), conn.c2s_logged) == (b"", 0)


def test_default_max_ooo_is_4_mib(t):
    assert t.max_ooo == 4 * 1024 * 1024


def test_mark_unprotected_keeps_first_reason_and_never_reprotects(t):
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    t.take_dirty()
    t.mark_unprotected(conn, "redis unavailable")
    assert t.take_dirty() == [conn]
    t.mark_unprotected(conn, "something else")
    assert (conn.status, conn.reason) == ("unprotected", "redis unavailable")
    assert t.take_dirty() == []
    L.data(10, 10)
    assert (conn.status, conn.c2s_logged) == ("unprotected", 10)
    assert drain(conn) == STREAM[:10]


# --- SYN handling and port reuse ----------------------------------------------------------------

def test_duplicate_syn_and_synack_are_harmless(t):
    L = Link(t)
    conn = L.c("S", L.isn_c, opts=OPTS, win=64240)
    assert L.c("S", L.isn_c, opts=OPTS, win=64240) is conn
    L.s("SA", L.isn_s, L.cs(0), opts=S_OPTS, win=65160)
    L.s("SA", L.isn_s, L.cs(0), opts=[("MSS", 500)])  # a retransmission cannot change the deal
    assert L.c("S", L.isn_c, opts=OPTS) is conn
    L.cack(0)
    L.s("SA", L.isn_s, L.cs(0), opts=S_OPTS, win=1)
    assert (conn.state, conn.mss_s, conn.wscale_s, conn.s_win) == ("established", 1400, 9, 65160)
    L.data(0, 10)
    assert (drain(conn), conn.status) == (STREAM[:10], "protected")
    assert len(t.conns) == 1


def test_syn_with_new_isn_on_established_connection_is_ignored(t):
    # the server answers it with a challenge ACK (RFC 5961) and the connection carries on
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    assert L.c("S", 777, opts=OPTS) is conn
    assert (conn.isn_c, conn.state, t.conns[L.key]) == (1000, "established", conn)
    L.data(10, 10)
    assert drain(conn) == STREAM[:20]


def test_handshake_retried_with_new_isn_starts_fresh(t):
    L = Link(t)
    first = L.c("S", L.isn_c, opts=OPTS)
    second = L.c("S", 9999, opts=OPTS)
    assert second is not first
    assert (second.isn_c, second.state, t.conns[L.key]) == (9999, "syn_sent", second)


def test_port_reuse_after_close(t):
    L = Link(t, now=1.0)
    old = L.handshake()
    L.data(0, 10)
    L.c("FA", L.cs(10), L.ss(0))
    L.s("FA", L.ss(0), L.cs(11))
    L.cack(1, coff=11, now=2.0)
    assert old.state == "closed"
    L2 = Link(t, isn_c=200000, isn_s=300000, now=3.0)
    new = L2.handshake()
    assert new is not old
    assert (new.id, new.isn_c, new.state, new.status, new.c2s_logged, new.first_seen) == \
        (old.id, 200000, "established", "protected", 0, 3.0)
    assert t.conns == {L.key: new}
    L2.data(0, 7)
    assert (drain(new), drain(old)) == (STREAM[:7], STREAM[:10])
    # the replaced one is handed out once, so the writer closes what it wrote of it
    assert t.expire(100.0) == [old] and t.expire(200.0) == []
    assert t.conns == {L.key: new}


def test_syn_after_expiry_starts_fresh(t):
    L = Link(t)
    old = L.handshake()
    L.c("R", L.cs(0), now=5.0)
    assert t.expire(40.0) == [old]
    new = Link(t, isn_c=42, now=41.0).handshake()
    assert (new.isn_c, new.status, t.conns) == (42, "protected", {L.key: new})


def test_syn_on_a_connection_seen_without_syn_starts_fresh(t):
    L = Link(t)
    stray = L.cack(0)  # e.g. a late ACK after the old connection expired
    assert stray.status == "unprotected"
    new = L.handshake()
    assert new is not stray
    assert (new.status, new.reason) == ("protected", "")


# --- dirty / expiry --------------------------------------------------------------------------

def test_take_dirty_returns_each_changed_connection_once(t):
    a, b = Link(t, cport=1), Link(t, cport=2)
    ca = a.handshake()
    cb = b.handshake()
    assert t.take_dirty() == [ca, cb]
    assert t.take_dirty() == []
    a.data(0, 1)
    a.data(1, 1)
    assert t.take_dirty() == [ca]
    b.sack(0)
    assert t.take_dirty() == [cb]


def test_expire_after_grace():
    t = Tracker(SERVICES, log_cap=1000, grace=30.0)
    L = Link(t)
    conn = L.handshake()
    idle = Link(t, cport=2, now=0.0).handshake()
    old = Link(t, cport=3, now=0.0)           # a connection older than the agent: the primary talks on it
    idle_unprotected = old.data(0, 10)
    old.sack(10)
    assert idle_unprotected.status == "unprotected" and not t.embryonic(idle_unprotected)
    L.c("R", L.cs(0), now=10.0)
    assert t.expire(40.0) == []          # exactly grace: not yet
    assert L.key in t.conns
    assert t.expire(40.5) == [conn]
    assert t.take_dirty() == [idle, idle_unprotected]  # the expired one is not handed out again
    assert t.conns == {idle.key: idle, idle_unprotected.key: idle_unprotected}
    assert t.expire(1e9) == []            # idle but not closed: kept
    assert set(t.conns) == {idle.key, idle_unprotected.key}


def test_fin_closed_connection_expires_from_closed_at():
    t = Tracker(SERVICES, log_cap=1000, grace=5.0)
    L = Link(t)
    conn = L.handshake()
    L.c("FA", L.cs(0), L.ss(0), now=2.0)
    L.s("FA", L.ss(0), L.cs(1), now=3.0)
    L.cack(1, coff=1, now=4.0)
    L.cack(1, coff=1, now=8.0)  # TIME_WAIT retransmission: last_seen moves, closed_at does not
    assert (conn.closed_at, conn.last_seen) == (4.0, 8.0)
    assert t.expire(9.0) == []
    assert t.expire(9.01) == [conn]


# --- timestamps -------------------------------------------------------------------------------

def test_newest_timestamp_kept_across_reordering_and_wrap(t):
    L = Link(t)
    top = [("Timestamp", (2 ** 32 - 5, 0))]
    conn = L.handshake(c_opts=top, s_opts=[("Timestamp", (400, 2 ** 32 - 5))])
    assert (conn.c_tsval, conn.c_tsecr, conn.s_tsval, conn.s_tsecr, conn.ts_ok) == \
        (2 ** 32 - 5, 0, 400, 2 ** 32 - 5, True)
    L.data(0, 1, opts=ts(2 ** 32 - 2, 500))
    L.data(1, 1, opts=ts(3, 501))        # TSval wrapped: newer
    L.data(0, 1, opts=ts(2 ** 32 - 2, 500))  # reordered older copy
    assert (conn.c_tsval, conn.c_tsecr) == (3, 501)
    L.sack(2, opts=ts(600, 3))
    L.sack(2, opts=ts(599, 2))
    assert (conn.s_tsval, conn.s_tsecr) == (600, 3)


# --- the whole stream, shuffled -------------------------------------------------------------------

@pytest.mark.parametrize("seed,isn_c", [(1, 2 ** 32 - 100_000), (2, 12345), (3, None)])
def test_randomised_stream_delivered_exactly(seed, isn_c):
    rnd = random.Random(seed)
    isn = isn_c if isn_c is not None else rnd.getrandbits(32)
    data = rnd.randbytes(300_000 + rnd.randrange(50_000))
    total = len(data)
    t = Tracker(SERVICES, log_cap=1 << 20)
    L = Link(t, isn_c=isn, isn_s=rnd.getrandbits(32))
    conn = L.handshake()

    # cut the stream into segments of random size, then let the "network" reorder locally,
    # duplicate, and repacketize retransmissions over arbitrary ranges
    segs, off = [], 0
    while off < total:
        n = min(rnd.randrange(1, 1449), total - off)
        segs.append((off, n))
        off += n
    wire = []
    for i, (off, n) in enumerate(segs):
        wire.append((off, n))
        r = rnd.random()
        if r < 0.05:
            wire.append((off, n))
        elif r < 0.08:
            a = max(0, off - rnd.randrange(3000))
            wire.append((a, min(total, off + n + rnd.randrange(3000)) - a))
    for i in range(len(wire) - 1):
        if rnd.random() < 0.2:
            j = min(len(wire) - 1, i + rnd.randrange(1, 8))
            wire[i], wire[j] = wire[j], wire[i]

    server_has = bytearray(total)  # the primary's own view, to ACK what it has in order
    server_nxt = 0
    taken = []
    for k, (off, n) in enumerate(wire):
        L.c("PA", L.cs(off), L.ss(0), data[off:off + n])
        server_has[off:off + n] = b"\x01" * n
        while server_nxt < total and server_has[server_nxt]:
            server_nxt += 1
        if k % 3 == 0:
            L.sack(server_nxt)
        if rnd.random() < 0.1:
            taken.append(conn.take_c2s())
    L.sack(server_nxt)
    taken.append(conn.take_c2s())
    got = b"".join(taken)
    assert (conn.status, conn.reason) == ("protected", "")
    assert (len(got), conn.c2s_logged, conn.ooo_bytes) == (total, total, 0)
    assert conn.c2s_next == (isn + 1 + total) % 2 ** 32
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def test_logged_bytes_survive_the_reuse_of_the_capture_buffer(t):
    """The capture hands out views into its ring and the kernel refills a block once
    it is handed back, before the writer takes the bytes: what the tracker keeps of an
    in-order segment must be a copy."""
    L = Link(t)
    conn = L.handshake()
    ring = bytearray(frame(C, S, L.cport, SPORT, "PA", L.cs(0), L.ss(0), STREAM[:100]))
    t.feed_frame(memoryview(ring), 1.0)
    ring[:] = bytes(len(ring))   # the kernel writes another packet into that slot
    assert drain(conn) == STREAM[:100]


def test_a_silent_half_closed_connection_times_out_but_an_idle_established_one_never(t):
    closing, idle = Link(t, cport=40001), Link(t, cport=40002)
    a, b = closing.handshake(), idle.handshake()
    closing.c("FA", closing.cs(0), closing.ss(0))      # the client's FIN; its last ACK is never seen
    assert a.state == "closing"
    assert t.expire(1.0 + 119) == [] and a.state == "closing"
    t.expire(1.0 + 121)
    assert (a.state, a.closed_at) == ("closed", 122.0) and b.state == "established"
    assert a in t.take_dirty()                         # written as closed
    assert t.expire(122.0 + t.grace + 1) == [a]        # and gone after the grace period
    assert b.state == "established" and b.key in t.conns


# --- what anyone on the clients' side can send (RFC 793 / 5961, as Linux takes it) ------------

def established_with_data(t):
    L = Link(t)
    conn = L.handshake()
    L.data(0, 100)
    L.sack(100)
    drain(conn)
    return L, conn


def test_a_blind_rst_does_not_close_the_record_one_at_the_next_byte_does(t):
    L, conn = established_with_data(t)
    for seq in (L.cs(99), L.cs(101), L.cs(5000), random.Random(1).getrandbits(32)):
        L.c("R", seq)
        assert conn.state == "established" and not conn.rst
    assert t.out_of_window == 4
    L.c("R", L.cs(100))
    assert conn.state == "closed" and conn.rst


def test_after_the_client_s_fin_a_rst_one_past_it_is_taken(t):
    L, conn = established_with_data(t)
    L.data(100, 0, flags="FA")
    L.c("R", L.cs(101))
    assert conn.state == "closed"


def test_a_fin_or_data_beyond_the_server_s_window_is_not_taken(t):
    L, conn = established_with_data(t)
    window = 509 << 9                                   # what the server last advertised, scaled
    L.sack(100, win=509)
    L.c("FA", L.cs(100 + window + 1), L.ss(0))
    L.c("FA", L.cs(-1000), L.ss(0))                    # before the window: an "old duplicate" FIN
    L.c("FA", L.cs(100 - (1 << 30)), L.ss(0))
    L.c("PA", L.cs(100 + window + 1), L.ss(0), b"evil")
    assert not conn.fin_c and conn.state == "established" and conn._ooo is None
    L.data(100, 10)                                     # the real client goes on
    assert drain(conn) == STREAM[100:110] and conn.status == "protected"


def test_an_ack_far_beyond_what_the_server_sent_is_not_taken(t):
    L, conn = established_with_data(t)
    L.cack(1 << 30, coff=100)
    L.cack(10_000_000, coff=100)
    assert conn.to_state()["s2c_acked"] <= 0 and t.out_of_window == 2
    L.sdata(0, 50, 100)
    L.cack(50, coff=100)
    assert conn.to_state()["s2c_acked"] == 50


def test_a_bad_checksum_copy_is_not_logged_the_good_one_is(t):
    L, conn = established_with_data(t)
    bad = bytearray(frame(C, S, 40000, SPORT, "PA", L.cs(100), L.ss(0), b"EVIL"))
    bad[-8] ^= 0xFF                                     # a byte of the TCP header's checksum-covered part
    t.feed_frame(bytes(bad), L.now)
    assert t.bad_checksum == 1 and drain(conn) == b""
    L.c("PA", L.cs(100), L.ss(0), b"good")
    assert drain(conn) == b"good"


# --- bounds: what anyone can make the tracker hold ------------------------------------------

def test_records_nobody_answered_are_embryonic_bounded_and_short_lived():
    from ftcp.agent.admission import Limits
    t = Tracker(SERVICES, log_cap=1000, limits=Limits(embryonic=3, embryonic_timeout=10.0))
    syns = [Link(t, cport=100 + i, now=float(i)) for i in range(4)]
    conns = [L.c("S", L.isn_c, 0) for L in syns]
    flagless = Link(t, cport=200, now=4.0).c("A", 12345, 678)      # no SYN, nobody answered
    assert all(t.embryonic(c) for c in conns[2:] + [flagless])
    assert conns[0].key not in t.conns and conns[1].key not in t.conns and t.evicted == 2
    assert t.take_dirty() == [conns[2], conns[3], flagless]       # the evicted ones are not handed out
    real = Link(t, cport=300, now=5.0).handshake()   # its SYN drops the oldest; its handshake makes it stay
    assert not t.embryonic(real) and t.evicted == 3
    assert t.expire(5.0) == conns[:3]                              # handed out once, to forget them
    assert set(t.expire(15.5)) == {conns[3], flagless}             # idle 10 s
    assert set(t.conns) == {real.key}


def test_no_new_record_past_the_bound_when_none_is_embryonic():
    from ftcp.agent.admission import Limits
    t = Tracker(SERVICES, log_cap=1000, limits=Limits(conns=2))
    a, b = Link(t, cport=1).handshake(), Link(t, cport=2).handshake()
    third = Link(t, cport=3)
    assert third.c("S", third.isn_c, 0) is None and set(t.conns) == {a.key, b.key}


def test_out_of_order_segments_are_bounded_per_connection_and_in_all():
    from ftcp.agent.admission import Limits
    t = Tracker(SERVICES, log_cap=1 << 20, limits=Limits(ooo_segments=10, ooo_total=300))
    L = Link(t)
    conn = L.handshake()
    for i in range(10):
        L.data(10 + 2 * i, 1)                      # one-byte segments after a hole
    assert conn.status == "protected" and conn.ooo_bytes == 10
    L.data(40, 1)
    assert conn.status == "unprotected" and "reassembly" in conn.reason and t.ooo_total == 0
    M = Link(t, cport=41000)
    other = M.handshake()
    M.data(1, 200)
    N = Link(t, cport=42000)
    third = N.handshake()
    N.data(1, 150)                                 # 350 bytes held in all: past ooo_total
    assert other.status == "protected" and third.status == "unprotected" and t.ooo_total == 200


def test_past_the_handshake_a_segment_without_ack_or_acking_too_much_is_not_taken(t):
    L, conn = established_with_data(t)
    L.c("P", L.cs(150), 0, b"X" * 1000)                     # no ACK bit: Linux drops it
    L.c("F", L.cs(100), 0)
    L.c("PA", L.cs(100), L.ss(60000), b"Y" * 10)            # acks server bytes never sent
    assert (drain(conn), conn.fin_c, conn.state, t.out_of_window) == (b"", False, "established", 3)
    L.data(100, 300)
    assert drain(conn) == STREAM[100:400] and conn.status == "protected"


def test_a_timestamp_from_ahead_of_the_window_start_is_not_kept(t):
    L = Link(t)
    conn = L.handshake(c_opts=OPTS, s_opts=S_OPTS)
    L.data(0, 10, opts=ts(200, 500))
    L.data(500, 10, opts=ts(0x7FFF0000, 500))               # out of order: its TSval is not the newest
    assert conn.ooo_bytes == 10 and conn.c_tsval == 200


def test_no_client_data_is_taken_before_the_handshake_is_done(t):
    L = Link(t)
    conn = L.c("S", L.isn_c, 0, opts=OPTS)
    for i in range(50):
        L.c("PA", L.cs(100 * i), 0, b"z" * 100)
    L.s("SA", L.isn_s, L.cs(0), opts=S_OPTS)
    L.c("PA", L.cs(0), L.ss(5), b"z" * 100)
    assert conn._pend == [] and conn._ooo is None and conn.state == "syn_received"


def test_a_client_abort_at_the_end_of_what_is_held_out_of_order_is_taken(t):
    L, conn = established_with_data(t)
    L.data(200, 100)                                        # a hole at 100: held
    L.c("R", L.cs(300))                                     # the client's snd_nxt: the SACK edge
    assert conn.state == "closed" and t.ooo_total == 0


def test_new_connections_past_the_bound_are_counted():
    from ftcp.agent.admission import Limits
    t = Tracker(SERVICES, log_cap=1000, limits=Limits(conns=1))
    Link(t, cport=1).handshake()
    third = Link(t, cport=3)
    third.c("S", third.isn_c, 0)
    assert t.refused == 1


def test_a_segment_the_primary_s_ip_or_tcp_would_not_take_is_not_taken():
    mac = bytes.fromhex("000000000010")
    t = Tracker(SERVICES, log_cap=1 << 20)
    t.set_services(SERVICES, {(ip_int(S), SPORT): mac})
    L = Link(t)
    def good(payload):
        return bytes(Ether(dst="00:00:00:00:00:10") / IP(src=C, dst=S) / TCP(
            sport=40000, dport=SPORT, flags="S", seq=L.isn_c, options=OPTS) / payload)
    assert t.feed_frame(bytes(Ether(dst="00:00:00:00:00:99") / IP(src=C, dst=S) / TCP(
        sport=40000, dport=SPORT, flags="S", seq=L.isn_c)), 1.0) is None          # for another host
    bad_ip = bytearray(good(b""))
    bad_ip[14 + 10] ^= 0x01                                                        # IPv4 header checksum
    assert t.feed_frame(bytes(bad_ip), 1.0) is None
    assert (t.other_host, t.bad_checksum, t.conns) == (1, 1, {})
    assert t.other_host_mac == bytes.fromhex("000000000099")     # what the agent's warning names
    assert t.feed_frame(good(b""), 1.0) is not None


def test_a_services_records_past_their_handshake_are_bounded():
    """Past --max-conns-per-service a new connection is unprotected, with the reason;
    records with no handshake seen do not count, and a record that is gone frees its
    place."""
    from ftcp.agent.admission import Limits
    t = Tracker(SERVICES, log_cap=1000, grace=1.0, limits=Limits(conns_per_service=2))
    syns = [Link(t, cport=100 + i).c("S", 1000, 0) for i in range(5)]   # SYN only: embryonic
    a, b = Link(t, cport=1).handshake(), Link(t, cport=2).handshake()
    third = Link(t, cport=3)
    c = third.handshake()
    assert [x.status for x in (a, b, c)] == ["protected", "protected", "unprotected"] and all(syns)
    assert c.reason == "too many connections: service echo has 2 connections already"
    Link(t, cport=1).c("R", Link(t, cport=1).cs(0), 0)                  # a's client resets it
    t.expire(10.0)                                                       # past the grace: a is gone
    assert a.key not in t.conns and Link(t, cport=4).handshake().status == "protected"


def test_a_copy_that_differs_from_a_held_one_further_left_is_a_conflict(t):
    """The held piece that overlaps a new copy may start well before its neighbour."""
    L = Link(t)
    conn = L.handshake()
    L.data(0, 10)
    L.data(20, 40)                                    # held 20..59
    L.data(30, 5)                                     # same bytes inside it: nothing new
    L.c("PA", L.cs(40), L.ss(0), b"#" * 5)           # 40..44 differs from what is held
    assert conn.status == "unprotected" and conn.reason == "conflicting copies of client data at client byte 40"


def test_paws_an_old_timestamp_is_an_old_duplicate(t):
    """Linux drops a segment whose timestamp is older than the newest in-order one
    (PAWS), the handshake's last ACK included: such an ACK makes no connection, and
    such data is never what the primary read."""
    L = Link(t)
    conn = L.c("S", L.isn_c, 0, opts=OPTS, win=64240)              # TSval 100
    L.s("SA", L.isn_s, L.cs(0), opts=S_OPTS, win=65160)
    L.c("A", L.cs(0), L.ss(0), opts=ts(1, 500))                    # older than the SYN's
    assert conn.state == "syn_received" and t.embryonic(conn) and t.out_of_window == 1
    L.c("A", L.cs(0), L.ss(0), opts=ts(101, 500))
    assert conn.state == "established"
    L.c("PA", L.cs(0), L.ss(0), b"EVIL", opts=ts(50, 500))        # PAWS: dropped
    L.c("PA", L.cs(0), L.ss(0), b"GOOD", opts=ts(102, 500))
    assert conn._pend == [b"GOOD"] and conn.status == "protected" and t.out_of_window == 2


def test_without_sack_a_rst_at_the_end_of_held_bytes_is_not_taken(t):
    L = Link(t)
    no_sack = [o for o in OPTS if o[0] != "SAckOK"]
    conn = L.handshake(c_opts=no_sack)
    L.data(0, 10)
    L.data(20, 10)                                    # held 20..29
    L.c("R", L.cs(30), 0)
    assert conn.state == "established" and t.out_of_window == 1


def test_one_client_address_cannot_take_every_place_of_a_service():
    """Past --max-conns-per-client, a client's new connection is unprotected; other
    clients keep theirs, and places free up as connections go."""
    from ftcp.agent.admission import Limits
    t = Tracker(SERVICES, log_cap=1000, grace=1.0, limits=Limits(conns_per_service=10, conns_per_client=2))
    a, b = Link(t, cport=1).handshake(), Link(t, cport=2).handshake()
    c = Link(t, cport=3).handshake()
    other = Link(t, cport=3, client="10.0.0.3").handshake()
    assert [x.status for x in (a, b, c, other)] == ["protected", "protected", "unprotected", "protected"]
    assert c.reason == "too many connections: client 10.0.0.1 has 2 connections to echo already"
    for port in (1, 2):
        Link(t, cport=port).c("R", Link(t, cport=port).cs(0), 0)
    t.expire(10.0)                                    # a and b are gone: their places are free
    assert [Link(t, cport=p).handshake().status for p in (4, 5, 6)] == ["protected", "protected", "unprotected"]

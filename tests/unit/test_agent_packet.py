"""ftcp.agent.packet: frames built with scapy, parsed with struct."""
import random
import struct

import pytest
from scapy.all import ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6
from scapy.layers.inet import IPOption, IPOption_RR

from ftcp.agent.packet import (ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, Segment, checksum_ok, flag_str, ip_int,
                               ip_str, parse_frame)

C, S = "10.0.0.1", "10.0.0.2"
ALL_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 0)), ("NOP", None), ("WScale", 7)]
# untagged frame offsets
IP0, TCP0 = 14, 34


def tcp_frame(flags="A", seq=1000, ack=2000, payload=b"", options=(), src=C, dst=S, sport=40000,
              dport=7000, window=502, ip=None, eth=None):
    e = eth if eth is not None else Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    i = ip if ip is not None else IP(src=src, dst=dst)
    return bytes(e / i / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window,
                             options=list(options)) / payload)


def patched(frame, offset, value, fmt="!B"):
    b = bytearray(frame)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


# --- well-formed ---------------------------------------------------------------------

def test_flag_constants_match_the_wire_bits():
    assert (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR) == (1, 2, 4, 8, 16, 32, 64, 128)
    for name, bit in (("F", FIN), ("S", SYN), ("R", RST), ("P", PSH), ("A", ACK), ("U", URG),
                      ("E", ECE), ("C", CWR)):
        assert parse_frame(tcp_frame(flags=name)).flags == bit
    assert parse_frame(tcp_frame(flags="FSRPAUEC")).flags == 0xFF
    assert flag_str(SYN | ACK) == "SA"
    assert flag_str(0) == "."


def test_data_segment_fields():
    seg = parse_frame(tcp_frame(flags="PA", seq=0xFFFFFFF0, ack=7, payload=b"hello world", window=1234))
    assert isinstance(seg, Segment)
    assert (seg.src_ip, seg.dst_ip) == (ip_int(C), ip_int(S))
    assert (seg.src_port, seg.dst_port) == (40000, 7000)
    assert (seg.seq, seg.ack) == (0xFFFFFFF0, 7)
    assert seg.flags == PSH | ACK
    assert seg.window == 1234
    assert seg.payload == b"hello world"
    assert type(seg.payload) is bytes
    assert (seg.ts_val, seg.ts_ecr, seg.syn_options) == (None, None, None)


def test_syn_without_options():
    seg = parse_frame(tcp_frame(flags="S", seq=5, ack=0))
    assert seg.syn_options == {"mss": None, "wscale": None, "sack_perm": False, "ts": False}
    assert (seg.ts_val, seg.ts_ecr) == (None, None)


def test_syn_with_all_options():
    seg = parse_frame(tcp_frame(flags="S", seq=5, ack=0, options=ALL_OPTS))
    assert seg.syn_options == {"mss": 1460, "wscale": 7, "sack_perm": True, "ts": True}
    assert (seg.ts_val, seg.ts_ecr) == (123456, 0)
    assert seg.payload == b""


def test_synack_with_some_options():
    seg = parse_frame(tcp_frame(flags="SA", options=[("MSS", 1400), ("NOP", None), ("WScale", 14)]))
    assert seg.flags == SYN | ACK
    assert seg.syn_options == {"mss": 1400, "wscale": 14, "sack_perm": False, "ts": False}
    assert seg.ts_val is None


def test_timestamp_fast_path_nop_nop_ts():
    f = tcp_frame(payload=b"x" * 100, options=[("NOP", None), ("NOP", None), ("Timestamp", (0xFFFFFFFF, 42))])
    assert f[TCP0 + 12] >> 4 == 8 and f[TCP0 + 20:TCP0 + 24] == b"\x01\x01\x08\x0a"
    seg = parse_frame(f)
    assert (seg.ts_val, seg.ts_ecr) == (0xFFFFFFFF, 42)
    assert seg.payload == b"x" * 100
    assert seg.syn_options is None


def test_timestamp_found_by_the_option_walk():
    # SACK blocks before the timestamp, as on an ACK during loss recovery
    f = tcp_frame(options=[("SAck", (100, 200, 300, 400)), ("NOP", None), ("NOP", None), ("Timestamp", (7, 8))])
    seg = parse_frame(f)
    assert (seg.ts_val, seg.ts_ecr) == (7, 8)
    # timestamp first, NOPs after: same 32-byte header, not the fast layout
    f = tcp_frame(options=[("Timestamp", (9, 10)), ("NOP", None), ("NOP", None)])
    assert f[TCP0 + 12] >> 4 == 8
    assert (parse_frame(f).ts_val, parse_frame(f).ts_ecr) == (9, 10)


def test_options_other_than_timestamp_ignored_without_syn():
    seg = parse_frame(tcp_frame(flags="A", options=[("MSS", 1460), ("WScale", 3), ("SAck", (1, 2))]))
    assert (seg.ts_val, seg.ts_ecr, seg.syn_options) == (None, None, None)


def test_option_of_wrong_length_for_its_kind_is_skipped():
    # MSS of length 3, a 9-byte "timestamp", a 4-byte window scale: skipped as Linux does,
    # the options after them still parsed
    opts = b"\x02\x03\x05" + b"\x08\x09" + b"\x00" * 7 + b"\x03\x04\x05\x00" + b"\x04\x02" + b"\x01\x01"
    f = tcp_frame(flags="S", options=[])
    b = bytearray(f)
    b[TCP0 + 12] = (20 + len(opts)) // 4 << 4
    b[TCP0 + 20:TCP0 + 20] = opts
    struct.pack_into("!H", b, IP0 + 2, 40 + len(opts))
    seg = parse_frame(bytes(b))
    assert seg.syn_options == {"mss": None, "wscale": None, "sack_perm": True, "ts": False}
    assert seg.ts_val is None


def test_eol_ends_the_option_walk():
    f = tcp_frame(flags="S", options=[("EOL", None), ("NOP", None), ("NOP", None), ("NOP", None),
                                      ("MSS", 1460), ("NOP", None), ("NOP", None), ("NOP", None)])
    assert parse_frame(f).syn_options["mss"] is None


def test_priority_tagged_frames_are_taken_other_vlans_are_not():
    """Linux takes a frame tagged VLAN 0 (a priority tag) as untagged, and drops one
    for a VLAN it has no device for: the primary, on an access port, has none."""
    for outer in (0x8100, 0x88A8):
        f = tcp_frame(flags="PA", payload=b"tagged", eth=Ether(type=outer) / Dot1Q(vlan=0, prio=5),
                      options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
        seg = parse_frame(f)
        assert seg is not None, hex(outer)
        assert seg.payload == b"tagged"
        assert (seg.src_ip, seg.dst_port, seg.ts_val) == (ip_int(C), 7000, 1)
        assert parse_frame(tcp_frame(flags="PA", payload=b"tagged", eth=Ether(type=outer) / Dot1Q(vlan=42))) is None


def test_source_routed_packets_are_not_taken():
    """Linux drops IPv4 packets with a source route option (accept_source_route 0)."""
    for kind in (0x83, 0x89):
        route = bytes([kind, 7, 4]) + bytes([10, 0, 0, 10]) + b"\x00"   # one hop, then end of options
        f = tcp_frame(flags="PA", payload=b"x", ip=IP(src=C, dst=S, options=[IPOption(route)]))
        assert parse_frame(f) is None, hex(kind)
    timestamp_option = bytes([0x44, 8, 5, 0]) + bytes(4)
    assert parse_frame(tcp_frame(flags="PA", payload=b"x", ip=IP(src=C, dst=S,
                                                                   options=[IPOption(timestamp_option)]))) is not None


def test_two_vlan_tags_not_supported():
    f = tcp_frame(eth=Ether() / Dot1Q(vlan=1, type=0x8100) / Dot1Q(vlan=2))
    assert parse_frame(f) is None


def test_ethernet_padding_beyond_ip_total_length_ignored():
    f = tcp_frame(flags="PA", payload=b"ab")
    assert len(f) == 56
    seg = parse_frame(f + b"\x00" * 4 + b"PADDING!")
    assert seg.payload == b"ab"
    seg = parse_frame(tcp_frame(flags="A") + b"\xaa" * 6)
    assert seg.payload == b""
    # the same through the option walk (SYN) and the timestamp fast path
    seg = parse_frame(tcp_frame(flags="S", options=ALL_OPTS) + b"\xaa" * 6)
    assert (seg.payload, seg.syn_options["wscale"]) == (b"", 7)
    seg = parse_frame(tcp_frame(flags="PA", payload=b"cd", options=[("NOP", None), ("NOP", None),
                                                                    ("Timestamp", (1, 2))]) + b"\xaa" * 6)
    assert (seg.payload, seg.ts_val) == (b"cd", 1)


def test_ip_options_honoured():
    f = tcp_frame(flags="PA", payload=b"after ip options",
                  ip=IP(src=C, dst=S, options=[IPOption_RR(routers=["1.2.3.4"])]))
    assert f[IP0] & 0x0F == 7
    seg = parse_frame(f)
    assert seg.payload == b"after ip options"
    assert (seg.src_port, seg.dst_port) == (40000, 7000)


def test_df_is_not_a_fragment():
    seg = parse_frame(tcp_frame(ip=IP(src=C, dst=S, flags="DF"), payload=b"z"))
    assert seg.payload == b"z"


def test_bytearray_and_memoryview_input():
    f = tcp_frame(flags="PA", payload=b"mv", options=[("NOP", None), ("NOP", None), ("Timestamp", (3, 4))])
    for frame in (bytearray(f), memoryview(f)):
        seg = parse_frame(frame)
        assert bytes(seg.payload) == b"mv"
        assert seg.ts_val == 3


def test_ip_helpers():
    assert ip_int("10.0.0.1") == 0x0A000001
    assert ip_str(0x0A000001) == "10.0.0.1"
    assert ip_str(0) == "0.0.0.0"
    assert ip_str(0xFFFFFFFF) == "255.255.255.255"
    assert ip_int("255.255.255.255") == 0xFFFFFFFF
    for bad in ("10.0.0", "10.0.0.256", "1", "::1", "a.b.c.d", ""):
        with pytest.raises(ValueError):
            ip_int(bad)


# --- not ours --------------------------------------------------------------------------

def test_not_ipv4_tcp_returns_none():
    assert parse_frame(bytes(Ether() / ARP())) is None
    assert parse_frame(bytes(Ether() / IPv6() / TCP())) is None
    assert parse_frame(bytes(Ether() / IP() / UDP() / (b"u" * 20))) is None
    assert parse_frame(bytes(Ether() / IP() / ICMP() / (b"i" * 20))) is None


def test_fragments_ignored():
    assert parse_frame(tcp_frame(ip=IP(src=C, dst=S, flags="MF"), payload=b"x" * 8)) is None
    assert parse_frame(tcp_frame(ip=IP(src=C, dst=S, frag=1), payload=b"x" * 8)) is None
    assert parse_frame(tcp_frame(ip=IP(src=C, dst=S, flags="MF+DF", frag=100))) is None
    # the same frame without MF/offset parses: the check is on those bits only
    assert parse_frame(tcp_frame(ip=IP(src=C, dst=S, flags=0, frag=0), payload=b"x" * 8)) is not None


# --- malformed -------------------------------------------------------------------------

def test_every_truncation_is_rejected():
    f = tcp_frame(flags="PA", payload=b"0123456789",
                  options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
    assert parse_frame(f) is not None
    for n in range(len(f)):
        assert parse_frame(f[:n]) is None, n
    vf = tcp_frame(eth=Ether() / Dot1Q(vlan=0))
    for n in range(len(vf)):
        assert parse_frame(vf[:n]) is None, n


def test_ip_version_not_4():
    assert parse_frame(patched(tcp_frame(), IP0, 0x65)) is None


@pytest.mark.parametrize("ihl", [0, 1, 4])
def test_ihl_below_5(ihl):
    assert parse_frame(patched(tcp_frame(), IP0, 0x40 | ihl)) is None


def test_ihl_beyond_total_length():
    # IHL 15 = 60-byte IP header in a 40-byte datagram
    assert parse_frame(patched(tcp_frame(), IP0, 0x4F)) is None


@pytest.mark.parametrize("total", [0, 19, 20, 39])
def test_total_length_below_headers(total):
    assert parse_frame(patched(tcp_frame(), IP0 + 2, total, "!H")) is None


def test_total_length_beyond_frame():
    f = tcp_frame(payload=b"abc")
    assert parse_frame(patched(f, IP0 + 2, 44, "!H")) is None
    # shorter than the frame is fine: the rest is padding
    assert parse_frame(patched(f, IP0 + 2, 42, "!H")).payload == b"ab"


@pytest.mark.parametrize("doff", [0, 1, 4])
def test_data_offset_below_5(doff):
    assert parse_frame(patched(tcp_frame(payload=b"x" * 40), TCP0 + 12, doff << 4)) is None


def test_data_offset_beyond_packet():
    f = tcp_frame(payload=b"x" * 19)  # 20-byte header + 19 bytes: a 40-byte header does not fit
    assert parse_frame(patched(f, TCP0 + 12, 10 << 4)) is None
    # with padding after the datagram it must still not fit: the limit is the IP total length
    assert parse_frame(patched(f, TCP0 + 12, 10 << 4) + b"\x00" * 40) is None
    # 20 bytes of NOPs after the header do fit as options, leaving an empty payload
    seg = parse_frame(patched(tcp_frame(payload=b"\x01" * 20), TCP0 + 12, 10 << 4))
    assert seg is not None and seg.payload == b""


def _with_options(raw: bytes, flags=SYN) -> bytes:
    """A frame whose TCP header carries exactly ``raw`` as options (len multiple of 4)."""
    assert len(raw) % 4 == 0
    b = bytearray(tcp_frame(flags="S"))
    b[TCP0 + 13] = flags
    b[TCP0 + 12] = (20 + len(raw)) // 4 << 4
    b[TCP0 + 20:] = raw
    struct.pack_into("!H", b, IP0 + 2, 40 + len(raw))
    return bytes(b)


@pytest.mark.timeout(10)  # a zero-length option must not loop forever
@pytest.mark.parametrize("flags", [SYN, ACK])
@pytest.mark.parametrize("raw", [
    b"\x02\x08\x05\xb4",                      # MSS claiming 8 bytes in a 4-byte option space
    b"\x01\x01\x01\x08",                      # kind with no room for its length byte
    b"\x01\x01\x08\x0a\x00\x00\x00\x01",      # timestamp cut short by the header end
    b"\x02\x00\x05\xb4",                      # length 0 (would loop forever)
    b"\x02\x01\x05\xb4",                      # length 1
    b"\x01\x01\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x02\x03\x05\x07\x00",  # wscale running 1 past
])
def test_option_lengths_running_past_header(raw, flags):
    assert parse_frame(_with_options(raw, flags)) is None


def test_valid_raw_options_parse():
    seg = parse_frame(_with_options(b"\x02\x04\x05\xb4\x04\x02\x03\x03\x02\x00\x00\x00"))
    assert seg.syn_options == {"mss": 1460, "wscale": 2, "sack_perm": True, "ts": False}


@pytest.mark.timeout(60)
def test_random_bytes_never_raise():
    rnd = random.Random(20240501)
    parsed = 0
    for _ in range(20000):
        n = rnd.randrange(0, 120)
        frame = rnd.randbytes(n)
        if rnd.random() < 0.5 and n >= 14:
            # mostly-plausible headers reach the deeper checks
            b = bytearray(frame)
            b[12:14] = rnd.choice([b"\x08\x00", b"\x81\x00", b"\x88\xa8"])
            if b[12:14] != b"\x08\x00" and n >= 18:
                b[14:18] = bytes([b[14] & 0xF0]) + b"\x00\x08\x00"     # a priority tag (VLAN 0)
            l3 = 14 if b[12:14] == b"\x08\x00" else 18
            if n > l3 + 9:
                b[l3] = 0x40 | rnd.choice([5, 5, 5, 6, rnd.randrange(16)])
                b[l3 + 2:l3 + 4] = struct.pack("!H", rnd.randrange(max(1, n - l3 + 4)))
                b[l3 + 9] = 6
                if rnd.random() < 0.7:
                    b[l3 + 6:l3 + 8] = b"\x00\x00"
            frame = bytes(b)
        seg = parse_frame(frame)
        if seg is not None:
            parsed += 1
            assert isinstance(seg.payload, bytes)
    assert parsed > 50  # the fuzzer did reach the TCP parser


@pytest.mark.timeout(60)
def test_mutated_valid_frames_never_raise_and_stay_consistent():
    rnd = random.Random(7)
    bases = [
        tcp_frame(flags="S", options=ALL_OPTS),
        tcp_frame(flags="PA", payload=b"p" * 30, options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]),
        tcp_frame(flags="A", options=[("SAck", (1, 2, 3, 4)), ("NOP", None), ("NOP", None), ("Timestamp", (5, 6))]),
        tcp_frame(eth=Ether() / Dot1Q(vlan=0), flags="SA", options=ALL_OPTS),
    ]

    def fields(seg):
        return (seg.src_ip, seg.dst_ip, seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window,
                len(seg.payload), seg.ts_val, seg.ts_ecr, seg.syn_options)

    # bytes parse_frame does not read, or only hands on: MACs, IPv4 TOS, id, TTL and
    # checksum, TCP checksum and urgent pointer, the payload. A frame changed only
    # there must parse, to the same header fields.
    inert = []
    for base in bases:
        seg = parse_frame(base)
        assert seg is not None
        l3 = len(base) - len(seg.raw)
        t = l3 + seg.ihl
        inert.append((seg, set(range(12)) | {l3 + 1, l3 + 4, l3 + 5, l3 + 8, l3 + 10, l3 + 11}
                      | set(range(t + 16, t + 20)) | set(range(len(base) - len(seg.payload), len(base)))))
    parsed = must_parse = 0
    for _ in range(20000):
        which = rnd.randrange(len(bases))
        b = bytearray(bases[which])
        touched = {rnd.randrange(len(b)) for _ in range(rnd.randrange(1, 4))}
        for i in touched:
            b[i] = rnd.randrange(256)
        cut = rnd.random() < 0.3
        if cut:
            del b[rnd.randrange(len(b)):]
        seg = parse_frame(bytes(b))
        base_seg, harmless = inert[which]
        if not cut and touched <= harmless:
            must_parse += 1
            assert seg is not None and fields(seg) == fields(base_seg), (bytes(b).hex(), touched)
        if seg is not None:
            parsed += 1
            assert 0 <= seg.seq < 2 ** 32 and 0 <= seg.window < 2 ** 16
            assert (seg.syn_options is not None) == bool(seg.flags & SYN)
            assert (seg.ts_val is None) == (seg.ts_ecr is None)
    # the mutations did reach every check: many frames parse, many do not
    assert must_parse > 2000 and 5000 < parsed < 15000, (must_parse, parsed)


def test_agent_modules_do_not_import_scapy():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, ftcp.agent.packet, ftcp.agent.tracker;"
                          "print(sorted(m for m in sys.modules if m.startswith('scapy')))"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_checksum_ok_accepts_what_scapy_builds_and_refuses_one_flipped_bit():
    for payload in (b"", b"x", b"hello world", bytes(range(256)) * 5 + b"odd"):
        frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.10") / TCP(sport=40000, dport=7000, flags="PA",
                                                                       seq=123, ack=456) / payload)
        assert checksum_ok(parse_frame(frame))
        for flip in (len(frame) - 1, 14 + 20 + 4, 14 + 8):  # a payload byte, a sequence number byte, the TTL
            bad = bytearray(frame)
            bad[flip] ^= 0x01
            assert not checksum_ok(parse_frame(memoryview(bytes(bad))))

"""Ethernet/IPv4/TCP parsing for the capture path: struct on the raw frame, no scapy."""
from __future__ import annotations

import ipaddress
import socket
import struct

# TCP flag bits (RFC 793, RFC 3168), as in byte 13 of the TCP header
FIN = 0x01  # end of data
SYN = 0x02  # synchronize sequence numbers
RST = 0x04  # reset connection
PSH = 0x08  # push
ACK = 0x10  # acknowledgment number valid
URG = 0x20  # urgent pointer valid
ECE = 0x40  # ECN echo (RFC 3168)
CWR = 0x80  # congestion window reduced (RFC 3168)

ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
IPPROTO_TCP = 6

# TCP option kinds
TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_MSS = 2
TCPOPT_WSCALE = 3
TCPOPT_SACK_PERM = 4
TCPOPT_TIMESTAMP = 8

_ETYPE = struct.Struct("!H").unpack_from
# version/IHL, total length, flags/fragment offset, protocol, src, dst
_IPV4 = struct.Struct("!BxHxxHxBxxII").unpack_from
# sport, dport, seq, ack, data offset byte, flags, window
_TCP = struct.Struct("!HHIIBBH").unpack_from
_U16 = struct.Struct("!H").unpack_from
_II = struct.Struct("!II").unpack_from
_III = struct.Struct("!III").unpack_from
# NOP NOP TS(10): the layout Linux puts on every segment once timestamps are on
# (RFC 7323 appendix A), so data segments skip the option loop.
_NOP_NOP_TS = 0x0101080A

# untagged Ethernet + minimal IPv4 + minimal TCP
_MIN_FRAME = 14 + 20 + 20


class Segment:
    """One parsed TCP segment. ``payload`` is a slice of the frame (bytes for bytes input)."""

    __slots__ = ("src_ip", "dst_ip", "src_port", "dst_port", "seq", "ack", "flags", "window",
                 "payload", "ts_val", "ts_ecr", "syn_options", "raw", "ihl", "eth_dst")

    def __init__(self, src_ip, dst_ip, src_port, dst_port, seq, ack, flags, window,
                 payload, ts_val=None, ts_ecr=None, syn_options=None):
        self.src_ip = src_ip
        self.dst_ip = dst_ip
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload = payload
        self.ts_val = ts_val
        self.ts_ecr = ts_ecr
        self.syn_options = syn_options
        self.raw = None          # the IPv4 packet (header, TCP header, payload), for checksum_ok
        self.ihl = 20            # its IPv4 header's length
        self.eth_dst = None      # the frame's destination MAC

    def __repr__(self) -> str:
        return (f"Segment({ip_str(self.src_ip)}:{self.src_port} > {ip_str(self.dst_ip)}:{self.dst_port}"
                f" flags={flag_str(self.flags)} seq={self.seq} ack={self.ack} win={self.window}"
                f" len={len(self.payload)} ts={self.ts_val}/{self.ts_ecr} syn_options={self.syn_options})")


def flag_str(flags: int) -> str:
    return "".join(c for bit, c in ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "A"),
                                    (URG, "U"), (ECE, "E"), (CWR, "C")) if flags & bit) or "."


def _options(frame, i, end, syn):
    """Walk TCP options in frame[i:end]. Returns (ts_val, ts_ecr, syn_options) or None if malformed.

    Options of the wrong length for their kind are skipped, as Linux's tcp_parse_options does;
    a length byte < 2 or one that runs past the header makes the whole segment malformed
    (Linux stops parsing there; we refuse to guess what the rest of the header meant).
    """
    ts_val = ts_ecr = None
    mss = wscale = None
    sack_perm = ts = False
    while i < end:
        kind = frame[i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            return None
        length = frame[i + 1]
        if length < 2 or i + length > end:
            return None
        if kind == TCPOPT_TIMESTAMP:
            if length == 10:
                ts_val, ts_ecr = _II(frame, i + 2)
                ts = True
        elif syn:
            if kind == TCPOPT_MSS:
                if length == 4:
                    mss = _U16(frame, i + 2)[0]
            elif kind == TCPOPT_WSCALE:
                if length == 3:
                    wscale = frame[i + 2]
            elif kind == TCPOPT_SACK_PERM:
                if length == 2:
                    sack_perm = True
        i += length
    if syn:
        return ts_val, ts_ecr, {"mss": mss, "wscale": wscale, "sack_perm": sack_perm, "ts": ts}
    return ts_val, ts_ecr, None


def internet_checksum(data) -> int:
    """The 16-bit ones' complement of the ones' complement sum of the data's 16-bit
    words (RFC 1071): 0 over data that carries a right checksum. The sum is taken as
    one big number modulo 0xFFFF (2^16 = 1 modulo 0xFFFF, so a number is congruent to
    the sum of its 16-bit digits): one C loop instead of a Python one per word."""
    data = bytes(data)
    if len(data) & 1:
        data += b"\0"
    total = int.from_bytes(data, "big") % 0xFFFF
    if total == 0 and data.count(0) != len(data):
        total = 0xFFFF          # ones' complement: a non-zero sum that is a multiple of 0xFFFF is 0xFFFF
    return 0xFFFF - total


def tcp_pseudo_header(src_ip: int, dst_ip: int, length: int) -> bytes:
    return _PSEUDO.pack(src_ip, dst_ip, IPPROTO_TCP, length)


def checksum_ok(seg: Segment) -> bool:
    """Are the IPv4 header checksum and the TCP checksum (RFC 793 pseudo-header +
    segment) right? The ones' complement sum of data that carries a right checksum is
    0xFFFF, i.e. a multiple of 0xFFFF (neither the IP header nor the pseudo-header is
    ever all zeros). A segment built by hand (no ``raw``) is taken as it is."""
    raw = seg.raw
    if raw is None:
        return True
    ihl = seg.ihl
    if int.from_bytes(raw[:ihl], "big") % 0xFFFF:
        return False
    n = len(raw) - ihl
    total = int.from_bytes(raw[ihl:], "big")
    if n & 1:
        total <<= 8
    src, dst = seg.src_ip, seg.dst_ip
    return (total + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + IPPROTO_TCP + n) % 0xFFFF == 0


_PSEUDO = struct.Struct("!IIxBH")


def _source_routed(frame, start: int, end: int) -> bool:
    """Do the IPv4 options carry a source route (LSRR, SSRR)? Linux drops such packets
    (accept_source_route is 0 by default)."""
    i = start
    while i < end:
        kind = frame[i]
        if kind == 0:               # end of options
            return False
        if kind == 1:               # no-op
            i += 1
            continue
        if kind in (0x83, 0x89):
            return True
        if i + 1 >= end or frame[i + 1] < 2:
            return False            # malformed: the checksum or the kernel will have its say
        i += frame[i + 1]
    return False


def parse_frame(frame) -> Segment | None:
    n = len(frame)
    if n < _MIN_FRAME:
        return None
    etype = _ETYPE(frame, 12)[0]
    l3 = 14
    if etype == ETH_P_8021Q or etype == ETH_P_8021AD:
        # Linux takes a tagged frame as its own only for VLAN 0 (a priority tag) unless a
        # VLAN device exists for it; the primary has none (it is on an access port)
        if n < _MIN_FRAME + 4 or _ETYPE(frame, 14)[0] & 0x0FFF:
            return None
        etype = _ETYPE(frame, 16)[0]
        l3 = 18
    if etype != ETH_P_IP:
        return None
    vihl, total, frag, proto, src, dst = _IPV4(frame, l3)
    if vihl >> 4 != 4 or proto != IPPROTO_TCP:
        return None
    ihl = (vihl & 0x0F) << 2
    # total must cover the IP header and a minimal TCP header; bytes beyond it are
    # Ethernet padding (frames are padded to 60 bytes on the wire).
    if ihl < 20 or total < ihl + 20 or l3 + total > n:
        return None
    # MF or a fragment offset: only a reassembled datagram has a whole TCP segment.
    if frag & 0x3FFF:
        return None
    if ihl > 20 and _source_routed(frame, l3 + 20, l3 + ihl):
        return None
    t = l3 + ihl
    end = l3 + total
    sport, dport, seq, ack, off, flags, window = _TCP(frame, t)
    doff = (off >> 4) << 2
    if doff < 20 or t + doff > end:
        return None
    if doff == 20:
        if flags & SYN:
            seg = Segment(src, dst, sport, dport, seq, ack, flags, window, frame[t + 20:end], None, None,
                          {"mss": None, "wscale": None, "sack_perm": False, "ts": False})
        else:
            seg = Segment(src, dst, sport, dport, seq, ack, flags, window, frame[t + 20:end])
    elif doff == 32 and not flags & SYN and _III(frame, t + 20)[0] == _NOP_NOP_TS:
        _, ts_val, ts_ecr = _III(frame, t + 20)
        seg = Segment(src, dst, sport, dport, seq, ack, flags, window, frame[t + 32:end], ts_val, ts_ecr)
    else:
        opts = _options(frame, t + 20, t + doff, flags & SYN)
        if opts is None:
            return None
        seg = Segment(src, dst, sport, dport, seq, ack, flags, window, frame[t + doff:end], *opts)
    seg.raw = frame[l3:end]
    seg.ihl = ihl
    seg.eth_dst = frame[0:6]
    return seg


def is_ipv4_tcp(frame) -> bool:
    """Does the frame say it carries IPv4/TCP (one VLAN tag allowed)? For telling a
    broken segment from a frame that is not TCP at all, after parse_frame refused it."""
    if len(frame) < 14:
        return False
    etype, l3 = _ETYPE(frame, 12)[0], 14
    if etype in (ETH_P_8021Q, ETH_P_8021AD) and len(frame) >= 18:
        etype, l3 = _ETYPE(frame, 16)[0], 18
    return etype == ETH_P_IP and len(frame) > l3 + 9 and frame[l3 + 9] == IPPROTO_TCP


def ip_str(ip: int) -> str:
    """Dotted quad of a 32-bit IPv4 address."""
    return socket.inet_ntoa(ip.to_bytes(4, "big"))


def ip_int(ip: str) -> int:
    """32-bit int of a dotted-quad IPv4 address (strict: ValueError on anything else)."""
    return int(ipaddress.IPv4Address(ip))

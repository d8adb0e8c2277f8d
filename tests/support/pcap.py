"""Read a pcap that tcpdump may still be writing, and rebuild TCP streams from it.

Test helper only: scapy decodes, which is fine for a few MB after the fact.
"""
import hashlib
import struct

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether


def frames(path):
    """Raw frames of a pcap file; stops quietly at a record still being written."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(endian + "IIII", data, off)
        if off + 16 + incl > len(data):
            return
        yield data[off + 16: off + 16 + incl]
        off += 16 + incl


def tcp_segments(path):
    for raw in frames(path):
        pkt = Ether(raw)
        if IP in pkt and TCP in pkt:
            yield pkt[IP], pkt[TCP]


class Stream:
    """One direction of a TCP connection: payload reassembled by sequence number."""

    def __init__(self):
        self.isn = None
        self.chunks = {}
        self.fin_seq = None
        self.acked_fin = False

    def add(self, tcp):
        flags = int(tcp.flags)
        if flags & 0x02:  # SYN
            self.isn = tcp.seq
        payload = bytes(tcp.payload)
        if payload and self.isn is not None:
            self.chunks.setdefault((tcp.seq - self.isn - 1) % 2**32, payload)
        if flags & 0x01:  # FIN
            self.fin_seq = (tcp.seq + len(payload)) % 2**32

    def data(self):
        out = bytearray()
        for off in sorted(self.chunks):
            chunk = self.chunks[off]
            if off > len(out):
                raise AssertionError(f"hole in captured stream at offset {len(out)} (next chunk at {off})")
            out += chunk[len(out) - off:]
        return bytes(out)

    def sha256(self):
        return hashlib.sha256(self.data()).hexdigest()


def connection(path, client, server):
    """(client->server Stream, server->client Stream) for a 4-tuple."""
    c2s, s2c = Stream(), Stream()
    for ip, tcp in tcp_segments(path):
        here = ((ip.src, tcp.sport), (ip.dst, tcp.dport))
        if here == (client, server):
            c2s.add(tcp)
            if s2c.fin_seq is not None and tcp.ack == (s2c.fin_seq + 1) % 2**32:
                s2c.acked_fin = True
        elif here == (server, client):
            s2c.add(tcp)
            if c2s.fin_seq is not None and tcp.ack == (c2s.fin_seq + 1) % 2**32:
                c2s.acked_fin = True
    return c2s, s2c

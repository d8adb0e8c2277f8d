"""The ACKs a rebuilt socket cannot send by itself, so the client resends at once.

Leaving repair mode makes the kernel send a window probe, a segment just *below* the
client's window (seq = snd_una - 1). The client answers it, which tells the rebuilt
socket what the client has, but it drops the probe without reading its ACK field
(RFC 793: an unacceptable segment is answered, not processed). So the client never
learns what the backup holds: an uploading client whose bytes the mirror showed
beyond the primary's last ACK waits for its retransmission timer (>= 200 ms; the
upload stalls without these ACKs are in docs/benchmarks.md).

``ack_segment`` builds what the socket would send if it had something to
acknowledge: seq = its snd_nxt, ack = its rcv_nxt, its window and timestamp.
``AckSender`` sends it as a short train: the first ACK moves the client's snd_una up
to what the backup has, which opens its congestion window, so it sends again and
SACK recovery (RACK) resends the rest within a round trip; the duplicates behind it
make a client without SACK fast-retransmit (three duplicate ACKs). A client with
SACK ignores the duplicates (Linux counts only SACKed segments towards fast
retransmit). The frames leave through the backup's data iface like the socket's
own, so the switch's redirect gives them the service's address.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ftcp.agent.packet import internet_checksum, tcp_pseudo_header

TCP_ACK = 0x10
DUPLICATES = 3


@dataclass(frozen=True)
class AckNumbers:
    """What the rebuilt socket would put in an ACK now (read in repair mode)."""
    snd_nxt: int
    rcv_nxt: int
    window: int         # the field's value: the receive window already shifted by our scale
    tsval: int          # our timestamp now (unused when timestamps are off)
    tsecr: int          # the client's latest timestamp we know of


def ack_segment(local: tuple, remote: tuple, n: AckNumbers, timestamps: bool) -> bytes:
    """An IPv4 packet (header included) carrying a pure ACK from local to remote."""
    options = struct.pack("!BBBBII", 1, 1, 8, 10, n.tsval, n.tsecr) if timestamps else b""
    src, dst = socket.inet_aton(local[0]), socket.inet_aton(remote[0])
    offset = (20 + len(options)) // 4
    header = struct.pack("!HHIIBBHHH", local[1], remote[1], n.snd_nxt, n.rcv_nxt, offset << 4, TCP_ACK,
                         min(n.window, 0xFFFF), 0, 0) + options
    pseudo = tcp_pseudo_header(int.from_bytes(src, "big"), int.from_bytes(dst, "big"), len(header))
    tcp = header[:16] + struct.pack("!H", internet_checksum(pseudo + header)) + header[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, socket.IPPROTO_TCP, 0, src, dst)
    return ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:] + tcp


class AckSender:
    """Sends prebuilt IPv4 packets through a send-only raw socket (IPPROTO_RAW never
    receives, so it costs nothing while idle). Opened on first use."""

    def __init__(self, duplicates: int = DUPLICATES):
        self.duplicates = duplicates
        self._sock = None

    def send(self, packet: bytes, dst_ip: str) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for _ in range(1 + self.duplicates):
            self._sock.sendto(packet, (dst_ip, 0))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

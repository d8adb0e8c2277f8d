"""Frames the controller builds (probes, ARP answers) and parses (packet-ins).

Built and parsed with ryu.lib.packet; parsing never raises on junk, since anyone on the
client side can send any frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ryu.lib.packet import arp, ether_types, ethernet, in_proto, ipv4, packet, tcp

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


def tcp_frame(eth_src, eth_dst, ip_src, ip_dst, sport, dport, seq, ack, bits) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=eth_dst, src=eth_src, ethertype=ether_types.ETH_TYPE_IP))
    pkt.add_protocol(ipv4.ipv4(src=ip_src, dst=ip_dst, proto=in_proto.IPPROTO_TCP, ttl=64))
    pkt.add_protocol(tcp.tcp(src_port=sport, dst_port=dport, seq=seq, ack=ack, bits=bits, window_size=1024))
    pkt.serialize()
    return bytes(pkt.data)


def arp_reply_frame(request: "Frame", mac: str) -> bytes:
    """The answer to an ARP request (a Frame of kind "arp") for an address we own."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=request.src_mac, src=mac, ethertype=ether_types.ETH_TYPE_ARP))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=mac, src_ip=request.dst,
                             dst_mac=request.src_mac, dst_ip=request.src))
    pkt.serialize()
    return bytes(pkt.data)


@dataclass(frozen=True)
class Frame:
    """What the controller needs of a packet-in: an ARP request or a TCP segment."""
    kind: str                 # "arp" (requests only) or "tcp"
    src: str                  # sender IPv4 address
    dst: str                  # target IPv4 address
    src_mac: str = ""
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0


def parse_frame(data: bytes) -> Optional[Frame]:
    """An ARP request or an IPv4/TCP segment, else None (never raises on junk)."""
    try:
        pkt = packet.Packet(data)
    except Exception:   # ryu's parsers raise anything on truncated input
        return None
    req = pkt.get_protocol(arp.arp)
    if req is not None:
        if req.opcode != arp.ARP_REQUEST:
            return None
        return Frame("arp", req.src_ip, req.dst_ip, src_mac=req.src_mac)
    ip, seg = pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(tcp.tcp)
    if ip is None or seg is None:
        return None
    return Frame("tcp", ip.src, ip.dst, sport=seg.src_port, dport=seg.dst_port, seq=seg.seq, ack=seg.ack,
                 flags=seg.bits)

"""Forged TCP segments from a lab host, for the hostile-input tests (run as root in
the attacker's namespace):

    python -m tests.support.forge --src IP:PORT --dst IP:PORT --flags R --count 1000 \\
        [--seq N | --random-seq] [--ack N | --random-ack] [--sports LO-HI] [--dports LO-HI] [--payload TEXT] \\
        [--bad-checksum]

Each segment is a whole IPv4 packet in an Ethernet frame sent on ``--iface`` (an
AF_PACKET socket: no routing, no ARP), so its source address is whatever ``--src``
says; the frame goes to ``--dst-mac`` (default: broadcast, which the switch floods
unless a flow takes it). ``--sports LO-HI`` sends one segment per
source port in the range, ``--dports LO-HI`` one per destination port (with both, one
per pair; ``--count`` times over). Prints how many it sent.
"""
from __future__ import annotations

import argparse
import random
import socket
import struct

from ftcp.agent.packet import internet_checksum, ip_int, tcp_pseudo_header

FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}


def segment(src, dst, sport, dport, seq, ack, flags, payload=b"", bad_checksum=False) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 1024, 0, 0)
    check = internet_checksum(tcp_pseudo_header(ip_int(src), ip_int(dst), 20 + len(payload)) + header + payload)
    if bad_checksum:
        check ^= 0x5A5A
    tcp = header[:16] + struct.pack("!H", check) + header[18:] + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, socket.IPPROTO_TCP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:] + tcp


def address(text: str) -> tuple:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=address, required=True)
    ap.add_argument("--dst", type=address, required=True)
    ap.add_argument("--flags", default="A", help="letters of F S R P A")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--seq", type=int, default=0)
    ap.add_argument("--random-seq", action="store_true")
    ap.add_argument("--ack", type=int, default=0)
    ap.add_argument("--random-ack", action="store_true")
    ap.add_argument("--sports", help="LO-HI: one segment from each of these source ports")
    ap.add_argument("--dports", help="LO-HI: one segment to each of these destination ports")
    ap.add_argument("--payload", default="")
    ap.add_argument("--bad-checksum", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--iface", required=True, help="the attacker's interface, e.g. c2-eth0")
    ap.add_argument("--dst-mac", default="ff:ff:ff:ff:ff:ff")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    flags = sum(FLAGS[c] for c in args.flags.upper())
    (src, sport), (dst, dport) = args.src, args.dst
    def ports(given, default):
        return range(*(lambda lo, hi: (int(lo), int(hi) + 1))(*given.split("-"))) if given else [default]
    sports, dports = ports(args.sports, sport), ports(args.dports, dport)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))
    with open(f"/sys/class/net/{args.iface}/address") as f:
        own_mac = bytes.fromhex(f.read().strip().replace(":", ""))
    eth = bytes.fromhex(args.dst_mac.replace(":", "")) + own_mac + b"\x08\x00"
    sent = 0
    for _ in range(args.count):
        for one_sport in sports:
            for one_dport in dports:
                seq = rng.getrandbits(32) if args.random_seq else args.seq
                ack = rng.getrandbits(32) if args.random_ack else args.ack
                sock.send(eth + segment(src, dst, one_sport, one_dport, seq, ack, flags, args.payload.encode(),
                                        args.bad_checksum))
                sent += 1
    print(sent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

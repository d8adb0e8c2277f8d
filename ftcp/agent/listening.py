"""Is a server still listening on this host? Read from the kernel (sock_diag, else the
socket tables /proc/net/tcp and tcp6) of the agent's network namespace, so asking makes
no connection the server would see.

The splicer asks it before it passes a replica's end of stream on to a taken-over
client: a server program that closed one connection still listens; one that died
closed its listener with its connections, and its clients get a RST, never a FIN that
would tell them they have everything.

Which listener serves an address: one bound to that address (an IPv6 socket bound to
its v4-mapped form, ``::ffff:a.b.c.d``, serves the IPv4 address); ``0.0.0.0`` serves
every IPv4 address, ``::`` every IPv6 one, and every IPv4 one too only if the socket is
dual-stack (not IPV6_V6ONLY). sock_diag says whether it is (INET_DIAG_SKV6ONLY); the
/proc tables do not (and /proc/sys/net/ipv6/bindv6only is only the default, which a
socket may override), so read from them a ``::`` listener never counts for an IPv4
server: unknown is taken as not listening, which resets the client rather than tell it
it has everything.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Iterable, NamedTuple, Optional

LISTEN = "0A"
TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
TCP_LISTEN = 10

# sock_diag (linux/sock_diag.h, linux/inet_diag.h)
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_SKV6ONLY = 11
_NLMSGHDR = struct.Struct("=IHHII")            # len, type, flags, seq, pid
_REQ = struct.Struct("=BBBBI48x")              # inet_diag_req_v2: family, protocol, ext, pad, states, id
_MSG_HEAD = struct.Struct("!BBBBH16x")         # inet_diag_msg: family, state, timer, retrans, id.sport, ...
_MSG_LEN = 72                                  # sizeof(struct inet_diag_msg)
_RTA = struct.Struct("=HH")                    # rtattr: len, type


class Listener(NamedTuple):
    address: ipaddress._BaseAddress
    port: int
    v6only: Optional[bool]     # an IPv6 socket's IPV6_V6ONLY; None: not known (or IPv4)


def _address(hex_address: str) -> ipaddress._BaseAddress:
    """A /proc/net/tcp address field's IP ("0100007F" -> 127.0.0.1): the kernel
    writes each 32-bit word in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def parse_table(lines: Iterable[str]) -> set:
    """The Listeners in the lines of a /proc/net/tcp or tcp6 table (V6ONLY not known)."""
    out = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[3] != LISTEN or ":" not in fields[1]:
            continue
        address, port = fields[1].rsplit(":", 1)
        try:
            out.add(Listener(_address(address), int(port, 16), None))
        except ValueError:
            continue
    return out


def read_tables(tables: Iterable[str] = TABLES) -> set:
    found = set()
    for path in tables:
        try:
            with open(path) as table:
                found |= parse_table(table)
        except OSError:
            continue
    return found


def _diag_dump(sock: socket.socket, family: int, seq: int) -> list:
    request = _REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
    sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP,
                             seq, 0) + request)
    out = []
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise OSError("sock_diag: no answer")
        off = 0
        while off + _NLMSGHDR.size <= len(data):
            length, kind, _flags, got_seq, _pid = _NLMSGHDR.unpack_from(data, off)
            if length < _NLMSGHDR.size or off + length > len(data):
                raise OSError("sock_diag: a truncated message")
            body = data[off + _NLMSGHDR.size:off + length]
            off += (length + 3) & ~3
            if got_seq != seq:
                continue
            if kind == NLMSG_DONE:
                return out
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
                raise OSError(code, f"sock_diag: error {code}")
            if kind != SOCK_DIAG_BY_FAMILY or len(body) < _MSG_LEN:
                continue
            got_family, state, _timer, _retrans, port = _MSG_HEAD.unpack_from(body)
            if state != TCP_LISTEN or got_family != family:
                continue
            src = body[8:12] if family == socket.AF_INET else body[8:24]
            v6only = None
            a = _MSG_LEN
            while a + _RTA.size <= len(body):
                alen, atype = _RTA.unpack_from(body, a)
                if alen < _RTA.size:
                    break
                if atype == INET_DIAG_SKV6ONLY and alen > _RTA.size:
                    v6only = bool(body[a + _RTA.size])
                a += (alen + 3) & ~3
            out.append(Listener(ipaddress.ip_address(src), port,
                                v6only if family == socket.AF_INET6 else None))


def diag_listeners() -> set:
    """Every listening TCP socket, with its V6ONLY, from sock_diag (raises OSError)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(2.0)
        return set(_diag_dump(sock, socket.AF_INET, 1)) | set(_diag_dump(sock, socket.AF_INET6, 2))


def listeners() -> set:
    """Every listening TCP socket of this network namespace (sock_diag; the /proc
    tables, with V6ONLY unknown, if it cannot be asked)."""
    try:
        return diag_listeners()
    except (OSError, ValueError):
        return read_tables()


def _ip(address) -> Optional[ipaddress._BaseAddress]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped is not None else ip


def serves(listener: Listener, ip: ipaddress._BaseAddress) -> bool:
    """Whether ``listener`` accepts connections to ``ip`` (an IPv4 address is never
    given in v4-mapped form)."""
    bound = listener.address
    if bound.version == 6 and bound.ipv4_mapped is not None:
        bound = bound.ipv4_mapped     # a v4-mapped bind is an IPv4 bind (never V6ONLY: the kernel refuses it)
    if bound == ip:
        return True
    if not bound.is_unspecified:
        return False
    if bound.version == ip.version:
        return True
    return bound.version == 6 and listener.v6only is False    # "::" serves IPv4 only when dual-stack


def listens(found: Iterable[Listener], address, port: int) -> bool:
    """True if one of ``found`` (listeners()) serves ``port`` at ``address``."""
    ip = _ip(address)
    return ip is not None and any(entry.port == port and serves(entry, ip) for entry in found)


def is_listening(address, port: int) -> bool:
    """True if a socket on this host listens for connections to ``address``:``port``."""
    return listens(listeners(), address, port)


def server_alive(address: Optional[tuple], found: Optional[Iterable[Listener]] = None) -> bool:
    """Whether the server at a replica's (address, port) still listens. None (not
    known: the replica is not an Internet socket, or it was not connected any more when
    asked) is not alive: its client gets a RST."""
    if address is None:
        return False
    return listens(listeners() if found is None else found, address[0], address[1])


def peer(sock) -> Optional[tuple]:
    """The (address, port) a connected Internet socket talks to, else None."""
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        return tuple(sock.getpeername()[:2])
    except OSError:
        return None

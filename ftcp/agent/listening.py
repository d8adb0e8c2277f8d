"""Is a server still listening on this host? Read from the kernel's socket tables
(/proc/net/tcp and tcp6 of the agent's network namespace), so asking makes no
connection the server would see.

The splicer asks it before it passes a replica's end of stream on to a taken-over
client: a server program that closed one connection still listens; one that died
closed its listener with its connections, and its clients get a RST, never a FIN that
would tell them they have everything.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Iterable, Optional

LISTEN = "0A"
TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def _address(hex_address: str) -> str:
    """A /proc/net/tcp address field's IP ("0100007F" -> "127.0.0.1"): the kernel
    writes each 32-bit word in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listeners(lines: Iterable[str]) -> set:
    """(address, port) of every listening socket in the lines of a /proc/net/tcp table."""
    out = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[3] != LISTEN or ":" not in fields[1]:
            continue
        address, port = fields[1].rsplit(":", 1)
        try:
            out.add((_address(address), int(port, 16)))
        except ValueError:
            continue
    return out


def is_listening(address: str, port: int, tables: Iterable[str] = TABLES) -> bool:
    """True if a socket listens on ``port`` at ``address`` or at the wildcard."""
    found = set()
    for path in tables:
        try:
            with open(path) as table:
                found |= listeners(table)
        except OSError:
            continue
    wildcards = {"0.0.0.0", "::"}
    return any(p == port and (a == address or a in wildcards or a == f"::ffff:{address}") for a, p in found)


def server_alive(address: Optional[tuple]) -> bool:
    """Whether the server at a replica's peer address still listens (None: not an
    Internet socket, which only a test's socketpair is: taken as alive)."""
    if address is None:
        return True
    return is_listening(address[0], address[1])


def peer(sock: socket.socket) -> Optional[tuple]:
    """The (address, port) a connected Internet socket talks to, else None."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        return sock.getpeername()[:2]
    except OSError:
        return None

"""Review finding 4: the listener table is misread: an IPv6-only wildcard counts for an IPv4 server, a v4-mapped bind is never seen.

The test states what should hold; it fails on the code under review."""
import socket

import pytest

from ftcp.agent import listening


@pytest.fixture
def listener():
    s = socket.create_server(("127.0.0.1", 0))
    yield s
    s.close()


def test_an_ipv6_only_wildcard_listener_is_not_taken_for_an_ipv4_server():
    """is_listening counts "::" as a wildcard for every address, IPv4 included. A socket
    listening on [::]:PORT with IPV6_V6ONLY accepts no IPv4 connection, and binds next to
    an IPv4 server on the same port without conflict -- any local user can open one on an
    unprivileged port. Once the IPv4 server is gone, its taken-over clients get a FIN
    (as if the server had closed them) instead of a RST."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    other = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    other.bind(("::", port))
    other.listen()
    try:
        server.close()                    # the replica's server dies
        probe = socket.socket()
        assert probe.connect_ex(("127.0.0.1", port)) != 0   # nobody serves IPv4 there
        probe.close()
        assert not listening.is_listening("127.0.0.1", port)
    finally:
        other.close()


def test_a_server_bound_to_a_v4_mapped_address_is_seen_listening():
    """A server on an IPv6 socket bound to ::ffff:127.0.0.1 (what Java and other
    dual-stack runtimes do for a server bound to one IPv4 address) accepts IPv4
    connections to 127.0.0.1. /proc/net/tcp6 shows it; listening._address formats it
    with ipaddress, which on Python 3.11 writes '::ffff:7f00:1', never the
    '::ffff:127.0.0.1' is_listening compares with. So every normal close of such a
    server reaches its taken-over clients as a RST ("no longer listens")."""
    server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::ffff:127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        c = socket.create_connection(("127.0.0.1", port))   # it serves IPv4 clients
        c.close()
        assert listening.is_listening("127.0.0.1", port)
    finally:
        server.close()

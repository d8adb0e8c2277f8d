"""ftcp.agent.listening: whether a server still listens on this host, read from the
kernel (sock_diag, else /proc/net/tcp{,6}). A wrong yes turns a dead server's end into a
FIN (the client is told it has everything); so what cannot be told is a no."""
import ipaddress
import socket

import pytest

from ftcp.agent import listening
from ftcp.agent.listening import Listener


def ip(text):
    return ipaddress.ip_address(text)


def v6_listener(address, v6only):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    s.bind((address, 0))
    s.listen()
    return s


def test_listeners_are_read_from_the_kernels_table():
    lines = ["  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
             "   0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0",
             "   1: 0100007F:1B59 0200000A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0",
             "   2: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0 0 0 0 0 3",
             "   3: 0000000000000000FFFF00000100007F:0051 00000000000000000000000000000000:0000 0A 0 0 0 0 0 4",
             "   4: garbage"]
    assert listening.parse_table(lines) == {Listener(ip("127.0.0.1"), 7000, None), Listener(ip("::"), 80, None),
                                            Listener(ip("::ffff:127.0.0.1"), 81, None)}


def test_a_listener_is_seen_while_it_listens_and_not_after():
    srv = socket.create_server(("127.0.0.1", 0))
    address, port = srv.getsockname()
    assert listening.is_listening(address, port)
    srv.close()
    assert not listening.is_listening(address, port)


def test_sock_diag_says_which_ipv6_listeners_are_v6only():
    only, dual = v6_listener("::", True), v6_listener("::", False)
    try:
        found = listening.diag_listeners()
        assert Listener(ip("::"), only.getsockname()[1], True) in found
        assert Listener(ip("::"), dual.getsockname()[1], False) in found
    finally:
        only.close()
        dual.close()


def test_an_ipv6_only_wildcard_listener_is_not_taken_for_an_ipv4_server():
    """A socket listening on [::]:PORT with IPV6_V6ONLY accepts no IPv4 connection and
    binds next to an IPv4 server on the same port without conflict -- any local user can
    open one on an unprivileged port. Once the IPv4 server is gone it must not make the
    server look alive (its taken-over clients would get a FIN instead of a RST)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    other = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    other.bind(("::", port))
    other.listen()
    try:
        assert listening.is_listening("127.0.0.1", port)
        server.close()                    # the replica's server dies
        probe = socket.socket()
        assert probe.connect_ex(("127.0.0.1", port)) != 0   # nobody serves IPv4 there
        probe.close()
        assert not listening.is_listening("127.0.0.1", port)
        assert listening.is_listening("::1", port)          # it does serve IPv6
    finally:
        other.close()


def test_a_dual_stack_wildcard_listener_serves_ipv4():
    server = v6_listener("::", False)
    port = server.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port)).close()
        assert listening.is_listening("127.0.0.1", port)
        assert listening.is_listening("::ffff:127.0.0.1", port)
    finally:
        server.close()


def test_a_server_bound_to_a_v4_mapped_address_is_seen_listening():
    """A server on an IPv6 socket bound to ::ffff:127.0.0.1 (what Java and other
    dual-stack runtimes do for a server bound to one IPv4 address) accepts IPv4
    connections to 127.0.0.1 (ipaddress writes it '::ffff:7f00:1': addresses are
    compared as addresses, not as text)."""
    server = v6_listener("::ffff:127.0.0.1", False)
    port = server.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port)).close()   # it serves IPv4 clients
        assert listening.is_listening("127.0.0.1", port)
        assert not listening.is_listening("127.0.0.2", port)
    finally:
        server.close()


@pytest.mark.parametrize("entry, address, serves", [
    (Listener(ip("0.0.0.0"), 80, None), "10.0.0.20", True),
    (Listener(ip("0.0.0.0"), 80, None), "::1", False),
    (Listener(ip("10.0.0.20"), 80, None), "10.0.0.20", True),
    (Listener(ip("10.0.0.20"), 80, None), "10.0.0.21", False),
    (Listener(ip("::ffff:10.0.0.20"), 80, None), "10.0.0.20", True),
    (Listener(ip("::ffff:10.0.0.20"), 80, None), "::ffff:10.0.0.20", True),
    (Listener(ip("::ffff:0.0.0.0"), 80, None), "10.0.0.20", True),
    (Listener(ip("::"), 80, False), "10.0.0.20", True),
    (Listener(ip("::"), 80, True), "10.0.0.20", False),
    (Listener(ip("::"), 80, None), "10.0.0.20", False),     # from /proc: V6ONLY not known -> not counted
    (Listener(ip("::"), 80, True), "fd00::20", True),
    (Listener(ip("::"), 81, False), "10.0.0.20", False),
    (Listener(ip("fd00::20"), 80, True), "fd00::20", True),
])
def test_which_listener_serves_an_address(entry, address, serves):
    assert listening.listens({entry}, address, 80) is serves


def test_read_from_proc_an_ipv6_wildcard_never_counts_for_ipv4(monkeypatch):
    """Without sock_diag the tables cannot say whether [::] is V6ONLY: taken as not."""
    server = v6_listener("::", False)
    port = server.getsockname()[1]

    def no_diag():
        raise OSError("no sock_diag here")
    monkeypatch.setattr(listening, "diag_listeners", no_diag)
    try:
        assert Listener(ip("::"), port, None) in listening.listeners()
        assert not listening.is_listening("127.0.0.1", port)
        assert listening.is_listening("::1", port)
    finally:
        server.close()

"""ftcp.agent.acks: the ACK train a rebuilt socket sends at go, and Session.kick's use of it.

Frames are checked with scapy (every field, both checksums recomputed); AckSender is
checked with the real kernel: a raw IPPROTO_TCP socket sees the copies on loopback.
"""
import socket

import pytest
from scapy.layers.inet import IP, TCP

from ftcp.agent import repair
from ftcp.agent.acks import AckNumbers, AckSender, ack_segment
from ftcp.agent.repair import repair_params
from ftcp.agent.takeover import Session
from tests.support.wire import STORED_CONN

LOCAL, REMOTE = ("10.0.0.20", 7000), ("10.0.0.1", 43210)


def parsed(frame: bytes):
    pkt = IP(frame)
    fresh = pkt.copy()
    del fresh[IP].chksum, fresh[TCP].chksum
    return pkt, IP(bytes(fresh))


def test_ack_with_timestamps_has_every_field_and_valid_checksums():
    numbers = AckNumbers(snd_nxt=0xFFFFFFF0, rcv_nxt=5, window=1234, tsval=0xFEDCBA98, tsecr=777)
    pkt, rebuilt = parsed(ack_segment(LOCAL, REMOTE, numbers, timestamps=True))
    assert (pkt.src, pkt.dst, pkt.proto, pkt.ttl, pkt.len) == ("10.0.0.20", "10.0.0.1", 6, 64, 52)
    assert pkt.flags == "DF"
    tcp = pkt[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.window) == (7000, 43210, 0xFFFFFFF0, 5, 1234)
    assert tcp.flags == "A" and tcp.dataofs == 8 and not bytes(tcp.payload)
    assert dict(tcp.options)["Timestamp"] == (0xFEDCBA98, 777)
    assert (pkt.chksum, tcp.chksum) == (rebuilt.chksum, rebuilt[TCP].chksum)


def test_ack_without_timestamps_has_no_options_and_a_capped_window():
    pkt, rebuilt = parsed(ack_segment(LOCAL, REMOTE, AckNumbers(1, 2, 1 << 20, 0, 0), timestamps=False))
    assert pkt[TCP].dataofs == 5 and pkt[TCP].options == [] and pkt.len == 40
    assert pkt[TCP].window == 0xFFFF
    assert pkt[TCP].chksum == rebuilt[TCP].chksum


def test_sender_puts_one_ack_and_its_duplicates_on_the_wire():
    sniff = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    sniff.settimeout(2)
    sender = AckSender(duplicates=3)
    frame = ack_segment(("127.0.0.1", 1), ("127.0.0.1", 9), AckNumbers(11, 22, 33, 44, 55), timestamps=True)
    try:
        sender.send(frame, "127.0.0.1")
        seen = 0
        while seen < 4:
            data = sniff.recv(2048)
            if data == frame:
                seen += 1
    finally:
        sender.close()
        sniff.close()
    assert seen == 4


class Recorder:
    def __init__(self):
        self.sent = []

    def send(self, packet, dst_ip):
        self.sent.append((IP(packet), dst_ip))


STATE = STORED_CONN


def test_kick_acks_what_the_socket_has_with_our_scale_and_the_clients_last_timestamp(monkeypatch):
    params = repair_params(STATE, "10.0.0.20", logged=300)
    monkeypatch.setattr(repair, "window_probe", lambda sock: (251, 401, 512 * 600, 5000))
    monkeypatch.setattr(repair, "released", lambda sock: None)
    session = Session("c", params, 50, replica=None)
    session.client = object()
    out = Recorder()
    assert session.kick(out)
    (pkt, dst), = out.sent
    assert dst == "10.0.0.1"
    assert (pkt.src, pkt[TCP].sport, pkt[TCP].dport) == ("10.0.0.20", 7000, 43210)
    assert (pkt[TCP].seq, pkt[TCP].ack, pkt[TCP].window) == (251, 401, 600)
    assert dict(pkt[TCP].options)["Timestamp"] == (5000, 424242)


def test_kick_survives_a_socket_the_kernel_refuses(monkeypatch, caplog):
    def refuse(sock):
        raise OSError(1, "Operation not permitted")
    monkeypatch.setattr(repair, "window_probe", refuse)
    monkeypatch.setattr(repair, "released", lambda sock: None)
    session = Session("c", repair_params(STATE, "10.0.0.20", logged=0), 50, replica=None)
    out = Recorder()
    assert not session.kick(out)
    assert out.sent == [] and "kick failed" in caplog.text


@pytest.mark.parametrize("last", [999, 1000, 0xFFFFFFFE, 0xFFFFFFFF])
def test_rebuilt_socket_keeps_millisecond_timestamps_above_the_primarys(last):
    """The kernel's low bit of TCP_TIMESTAMP says microseconds (Linux >= 6.7): an odd
    first TSval would switch the socket to them. Read back, the bit must be clear."""
    tsval = repair.next_tsval(last)
    assert tsval % 2 == 0 and 0 < (tsval - last) & repair.MASK <= 2
    listener = socket.create_server(("127.0.0.1", 0))
    state = dict(STATE, s_tsval=str(last), client_ip="127.0.0.1", client_port=str(listener.getsockname()[1]))
    params = repair_params(state, "127.0.0.1", logged=0)
    sock = repair.repaired_socket(type(params)(**{**params.__dict__, "local": ("127.0.0.1", 0)}))
    try:
        assert sock.getsockopt(socket.SOL_TCP, repair.TCP_TIMESTAMP) & 1 == 0
        # until go it closes with a RST (an abort, or the agent dying), after go normally
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == repair.LINGER_RST
        repair.released(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == repair.LINGER_NORMAL
    finally:
        sock.close()
        listener.close()


@pytest.mark.parametrize("ts_ok, expected", [("1", 424242), ("0", 0)])
def test_params_carry_the_clients_timestamp_only_with_timestamps(ts_ok, expected):
    assert repair_params(dict(STATE, ts_ok=ts_ok), "10.0.0.20", logged=0).ts_recent == expected


def test_window_probe_reads_the_numbers_of_a_real_repaired_socket():
    """The kernel's own answer: a socket rebuilt on loopback (repair mode sends no SYN)
    with 10 unacknowledged bytes reports snd_nxt past them, our rcv_nxt, our window
    and a TSval that did not go back."""
    listener = socket.create_server(("127.0.0.1", 0))
    params = repair_params(dict(STATE, client_ip="127.0.0.1", client_port=str(listener.getsockname()[1])),
                           "127.0.0.1", logged=300)
    params = type(params)(**{**params.__dict__, "local": ("127.0.0.1", 0)})
    sock = repair.repaired_socket(params, b"0123456789")
    try:
        snd_nxt, rcv_nxt, rcv_wnd, tsval = repair.window_probe(sock)
    finally:
        sock.close()
        listener.close()
    assert (snd_nxt, rcv_nxt) == ((params.snd_nxt + 10) & repair.MASK, params.rcv_nxt)
    assert rcv_wnd > 0 and (tsval - params.tsval) & repair.MASK < 1 << 31

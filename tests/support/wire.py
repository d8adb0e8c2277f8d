"""A client<->service TCP connection on the mirror, as frames for the real Tracker
(the tracker, restore and coordinator tests), and a connection as Redis stores it."""
import hashlib

from scapy.all import IP, TCP, Ether

from ftcp.agent.packet import ip_int
from ftcp.agent.seqspace import MASK

C, S = "10.0.0.1", "10.0.0.2"
SPORT = 7000
SERVICES = {(ip_int(S), SPORT): "echo"}
OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (100, 0)), ("NOP", None), ("WScale", 7)]
S_OPTS = [("MSS", 1400), ("SAckOK", b""), ("Timestamp", (500, 100)), ("NOP", None), ("WScale", 9)]
# deterministic, non-repeating-looking content so misplaced bytes show up
STREAM = hashlib.shake_256(b"ftcp").digest(1 << 16)
SRV_STREAM = hashlib.shake_256(b"server").digest(1 << 16)


def frame(src, dst, sport, dport, flags, seq, ack, payload=b"", opts=(), win=502):
    return bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq & MASK,
                                                      ack=ack & MASK, window=win, options=list(opts)) / payload)


def ts(val, ecr):
    return [("NOP", None), ("NOP", None), ("Timestamp", (val & MASK, ecr & MASK))]


class Link:
    """One client<->service connection on the wire: builds frames, feeds the tracker."""

    def __init__(self, tracker, isn_c=1000, isn_s=5000, cport=40000, client=C, now=1.0):
        self.t, self.isn_c, self.isn_s, self.cport, self.client, self.now = tracker, isn_c, isn_s, cport, client, now
        self.key = (ip_int(client), cport, ip_int(S), SPORT)

    def cs(self, off):  # client seq of client-stream offset
        return (self.isn_c + 1 + off) & MASK

    def ss(self, off):  # server seq of server-stream offset
        return (self.isn_s + 1 + off) & MASK

    def c(self, flags, seq, ack=0, payload=b"", opts=(), win=502, now=None):
        return self.t.feed_frame(frame(self.client, S, self.cport, SPORT, flags, seq, ack, payload, opts, win),
                                 self.now if now is None else now)

    def s(self, flags, seq, ack=0, payload=b"", opts=(), win=502, now=None):
        return self.t.feed_frame(frame(S, self.client, SPORT, self.cport, flags, seq, ack, payload, opts, win),
                                 self.now if now is None else now)

    def handshake(self, c_opts=OPTS, s_opts=S_OPTS):
        conn = self.c("S", self.isn_c, 0, opts=c_opts, win=64240)
        assert conn.state == "syn_sent"
        assert self.s("SA", self.isn_s, self.cs(0), opts=s_opts, win=65160) is conn
        assert conn.state == "syn_received"
        assert self.c("A", self.cs(0), self.ss(0)) is conn
        assert conn.state == "established"
        return conn

    # client data at stream offset `off`, acking server offset `sack`
    def data(self, off, n, sack=0, flags="PA", **kw):
        return self.c(flags, self.cs(off), self.ss(sack), STREAM[off:off + n], **kw)

    def sdata(self, off, n, cack, flags="PA", **kw):
        return self.s(flags, self.ss(off), self.cs(cack), SRV_STREAM[off:off + n], **kw)

    def sack(self, cack, soff=0, **kw):  # server ACK of client offset
        return self.s("A", self.ss(soff), self.cs(cack), **kw)

    def cack(self, sack, coff=0, **kw):  # client ACK of server offset
        return self.c("A", self.cs(coff), self.ss(sack), **kw)


# A connection's hash as the agent stores it (strings, as Redis gives them back).
STORED_CONN = {"isn_c": "100", "isn_s": "200", "server_port": "7000", "client_ip": "10.0.0.1", "client_port": "43210",
               "s2c_acked": "50", "mss_c": "1460", "wscale_c": "7", "wscale_s": "9", "sack_ok": "1", "ts_ok": "1",
               "s_tsval": "1000", "c_tsval": "424242", "c_win_scaled": "65536", "s_win_scaled": "131072"}

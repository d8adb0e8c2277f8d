"""A backup agent without capture, for the REST and Store tests: the test service,
and connection records written the way the backup agent writes them (frames fed to
the real Tracker, stored by the real LogWriter through the Store under test), so the
API reads what it will read in the lab."""
from scapy.all import IP, TCP, Ether

from ftcp.agent.packet import ip_int
from ftcp.agent.seqspace import MASK
from ftcp.agent.tracker import Tracker
from ftcp.agent.writer import LogWriter

SVC_IP, SVC_PORT = "10.0.0.10", 7000
SERVICE = {
    "name": "web", "address": SVC_IP, "port": SVC_PORT, "primary": {"port": 3, "mac": "00:00:00:00:00:10"},
    "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": 4, "mirror_port": 5, "mac": "00:00:00:00:00:20"}],
}
OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (100, 0)), ("NOP", None), ("WScale", 7)]


def conn_id(client_ip: str, client_port: int) -> str:
    return f"{client_ip}:{client_port}-{SVC_IP}:{SVC_PORT}"


class FakeAgent:
    """A backup agent without capture: makes connections and writes them to Redis."""

    def __init__(self, store, name: str = "b1"):
        self.name = name   # the backup it plays: its records are in this namespace
        self.tracker = Tracker({(ip_int(SVC_IP), SVC_PORT): "web"}, log_cap=None)
        self.writer = LogWriter(store, self.tracker, agent_name=name)

    def _send(self, src, dst, sport, dport, flags, seq, ack, now, payload=b"", opts=()):
        frame = bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq & MASK,
                                                           ack=ack & MASK, window=502, options=opts) / payload)
        return self.tracker.feed_frame(frame, now)

    def connect(self, client_ip: str, client_port: int, data: bytes = b"", now: float = 1.0,
                with_syn: bool = True) -> str:
        """A connection that sent ``data``; without its SYN it is unprotected (the
        agent started after it), as in the lab."""
        isn_c, isn_s = 1000, 5000
        up = (client_ip, SVC_IP, client_port, SVC_PORT)
        down = (SVC_IP, client_ip, SVC_PORT, client_port)
        if with_syn:
            self._send(*up, "S", isn_c, 0, now, opts=OPTS)
            self._send(*down, "SA", isn_s, isn_c + 1, now, opts=OPTS)
            self._send(*up, "A", isn_c + 1, isn_s + 1, now)
        if data:
            self._send(*up, "PA", isn_c + 1, isn_s + 1, now, payload=data)
            self._send(*down, "A", isn_s + 1, isn_c + 1 + len(data), now)
        return conn_id(client_ip, client_port)

    def flush(self, now: float, heartbeat: dict = None) -> None:
        self.writer.collect(now, heartbeat)
        assert self.writer.flush(), "the fake agent could not write to Redis"


def heartbeat(now: float, **fields) -> dict:
    """An agent heartbeat as ftcp/agent/main.py sends it."""
    beat = {"pid": 4242, "iface": "b1-eth1", "started": f"{now - 10:.6f}", "heartbeat": f"{now:.6f}",
            "packets": 10, "ignored": 0, "malformed": 0, "kernel_received": 10, "kernel_drops": 0, "conns": 1,
            "services": "web"}
    beat.update(fields)
    return beat

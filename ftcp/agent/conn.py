"""One tracked connection: its record, what it is written to Redis as and rebuilt from.

``Conn`` holds both what is stored (``to_state``, the ``ftcp:conn:<id>`` hash, and
``from_state``, its inverse after a restart) and the tracker's working fields (the
underscored slots), which the tracker's modules (tracker, reassembly, segment_checks,
admission) read and write on every segment; the stored values are derived from those.
"""
from __future__ import annotations

from ftcp.common.statuses import ConnState, ConnStatus
from ftcp.agent.packet import ip_int, ip_str
from ftcp.agent.seqspace import MASK

# The words themselves are in ftcp/common/statuses.py; short names for the per-packet path,
# which compares them with `is` (only the tracker's modules assign them).
SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSING, CLOSED = (
    ConnState.SYN_SENT, ConnState.SYN_RECEIVED, ConnState.ESTABLISHED, ConnState.CLOSING, ConnState.CLOSED)
PROTECTED, UNPROTECTED = ConnStatus.PROTECTED, ConnStatus.UNPROTECTED

# RFC 1122 4.2.2.6 (Linux TCP_MSS_DEFAULT): the MSS a peer gets when its SYN has no MSS option.
DEFAULT_MSS = 536
# RFC 7323 2.3: a shift above 14 is used as 14.
MAX_WSCALE = 14


class Conn:
    """One client<->service connection as seen on the mirror.

    wscale_c is the shift the client applies to the windows it advertises (so c_win_scaled =
    c_win << wscale_c); wscale_s likewise for the server. Both are 0 unless both SYNs carried
    the option. mss_c is what the client announced (the largest segment the server may send it).
    """

    __slots__ = (
        "key", "id", "service", "client_ip", "client_port", "server_ip", "server_port",
        "state", "status", "reason", "isn_c", "isn_s", "c_opts", "s_opts",
        "mss_c", "mss_s", "wscale_c", "wscale_s", "sack_ok", "ts_ok",
        "c2s_logged", "c_ack", "s_ack",
        "c_win", "c_win_scaled", "s_win", "s_win_scaled",
        "c_tsval", "c_tsecr", "s_tsval", "s_tsecr",
        "fin_c", "fin_c_seq", "fin_s", "fin_s_seq", "rst",
        "first_seen", "last_seen", "closed_at",
        # bytes of the primary's output its hot replica produced differently (aligned divergence)
        "divergent",
        # the backup's replica for it: "hot", "cold" (a takeover replays the log), "failed: why", "" not yet
        "replica",
        # seq of client/server offset 0 (ISN + 1); None until known
        "_cb", "_sb",
        # client bytes received contiguously (== c2s_logged while protected and under the cap)
        "_c_rcv",
        # highest server offset seen sent
        "_s_hi",
        # offset of each FIN, -1 until seen
        "_c_fin", "_s_fin",
        # highest offset acked by the client (server stream) / by the server (client stream);
        # -1 = nothing acked, 0 = the SYN acked
        "_c_ack_off", "_s_ack_off",
        # contiguous client bytes not yet taken; held out-of-order segments {offset: bytes}
        # and their offsets in order
        "_pend", "_ooo", "_ooo_bytes", "_ooo_offs",
        # the largest window the client advertised (how old an ACK may be, as Linux's max_window)
        "_c_max_win",
        # rebuilt from Redis by a restarted agent, not yet seen to continue where it was
        "restored",
        # counted against its service's bound (Limits.conns_per_service)
        "_counted",
    )

    def __init__(self, key, service, now, status=PROTECTED, reason=""):
        cip, cport, sip, sport = key
        self.key = key
        self.id = f"{ip_str(cip)}:{cport}-{ip_str(sip)}:{sport}"
        self.service = service
        self.client_ip = cip
        self.client_port = cport
        self.server_ip = sip
        self.server_port = sport
        self.state = ESTABLISHED
        self.status = status
        self.reason = reason
        self.isn_c = self.isn_s = None
        self.c_opts = self.s_opts = None
        self.mss_c = self.mss_s = DEFAULT_MSS
        self.wscale_c = self.wscale_s = 0
        self.sack_ok = self.ts_ok = False
        self.c2s_logged = 0
        self.c_ack = self.s_ack = None
        self.c_win = self.c_win_scaled = self.s_win = self.s_win_scaled = None
        self.c_tsval = self.c_tsecr = self.s_tsval = self.s_tsecr = None
        self.fin_c = self.fin_s = False
        self.fin_c_seq = self.fin_s_seq = None
        self.rst = False
        self.first_seen = self.last_seen = now
        self.closed_at = None
        self.divergent = 0
        self.replica = ""
        self._cb = self._sb = None
        self._c_rcv = self._s_hi = 0
        self._c_fin = self._s_fin = -1
        self._c_ack_off = self._s_ack_off = -1
        self._pend = []
        self._ooo = None
        self._ooo_bytes = 0
        self._ooo_offs = None
        self._c_max_win = 0
        self.restored = False
        self._counted = False

    @classmethod
    def from_state(cls, state: dict, now: float) -> "Conn":
        """An established connection as a previous run of the agent stored it
        (decoded ``ftcp:conn:<id>``), its log ``c2s_stored`` bytes long."""
        key = (ip_int(state["client_ip"]), state["client_port"], ip_int(state["server_ip"]), state["server_port"])
        c = cls(key, state["service"], now)
        for name in ("isn_c", "isn_s", "c_opts", "s_opts", "mss_c", "mss_s", "wscale_c", "wscale_s", "sack_ok",
                     "ts_ok", "c_ack", "s_ack", "c_win", "c_win_scaled", "s_win", "s_win_scaled", "c_tsval",
                     "c_tsecr", "s_tsval", "s_tsecr", "first_seen"):
            if state.get(name) is not None:
                setattr(c, name, state[name])
        c._cb, c._sb = (c.isn_c + 1) & MASK, (c.isn_s + 1) & MASK
        c.c2s_logged = c._c_rcv = state["c2s_stored"]
        c._s_hi = state["s2c_sent"]
        c.divergent = state.get("divergent_bytes") or 0
        c._c_ack_off, c._s_ack_off = state["s2c_acked"], state["c2s_acked"]
        c.restored = True
        return c

    def __repr__(self) -> str:
        return f"Conn({self.id} {self.state} {self.status}{' ' + self.reason if self.reason else ''})"

    # --- derived views ----------------------------------------------------------
    @property
    def c2s_next(self):
        """rcv_nxt of the primary: the client seq it expects next (the FIN counts once reached)."""
        if self._cb is None:
            return None
        n = self._c_rcv + (1 if self._c_fin >= 0 and self._c_rcv >= self._c_fin else 0)
        return (self._cb + n) & MASK

    @property
    def c2s_acked(self) -> int:
        """Client bytes the server has acknowledged."""
        n = self._s_ack_off
        if self._c_fin >= 0 and n > self._c_fin:
            n = self._c_fin
        return max(n, 0)

    @property
    def s2c_sent(self) -> int:
        """Server payload bytes seen sent (highest offset)."""
        return self._s_hi

    @property
    def s2c_next(self):
        """snd_nxt of the primary as a 32-bit seq (the FIN counts once seen)."""
        if self._sb is None:
            return None
        n = self._s_hi
        if self._s_fin >= 0 and self._s_fin + 1 > n:
            n = self._s_fin + 1
        return (self._sb + n) & MASK

    @property
    def s2c_acked(self) -> int:
        """Server bytes the client has acknowledged (what the client has received)."""
        n = self._c_ack_off
        if self._s_fin >= 0 and n > self._s_fin:
            n = self._s_fin
        return max(n, 0)

    @property
    def ooo_bytes(self) -> int:
        return self._ooo_bytes

    def take_c2s(self) -> bytes:
        """The contiguous client bytes delivered since the last call, in order, each exactly once."""
        pend = self._pend
        if not pend:
            return b""
        self._pend = []
        return b"".join(pend)

    def to_state(self) -> dict:
        """Everything above as plain JSON-able values (the Redis hash of the connection)."""
        return {
            "id": self.id,
            "service": self.service,
            "client_ip": ip_str(self.client_ip),
            "client_port": self.client_port,
            "server_ip": ip_str(self.server_ip),
            "server_port": self.server_port,
            "state": self.state,
            "status": self.status,
            "reason": self.reason,
            "isn_c": self.isn_c,
            "isn_s": self.isn_s,
            "c_opts": dict(self.c_opts) if self.c_opts is not None else None,
            "s_opts": dict(self.s_opts) if self.s_opts is not None else None,
            "mss_c": self.mss_c,
            "mss_s": self.mss_s,
            "wscale_c": self.wscale_c,
            "wscale_s": self.wscale_s,
            "sack_ok": self.sack_ok,
            "ts_ok": self.ts_ok,
            "c2s_logged": self.c2s_logged,
            "c2s_next": self.c2s_next,
            "c2s_acked": self.c2s_acked,
            "s_ack": self.s_ack,
            "s2c_sent": self.s2c_sent,
            "s2c_next": self.s2c_next,
            "s2c_acked": self.s2c_acked,
            "c_ack": self.c_ack,
            "c_win": self.c_win,
            "c_win_scaled": self.c_win_scaled,
            "s_win": self.s_win,
            "s_win_scaled": self.s_win_scaled,
            "c_tsval": self.c_tsval,
            "c_tsecr": self.c_tsecr,
            "s_tsval": self.s_tsval,
            "s_tsecr": self.s_tsecr,
            "fin_c": self.fin_c,
            "fin_c_seq": self.fin_c_seq,
            "fin_s": self.fin_s,
            "fin_s_seq": self.fin_s_seq,
            "rst": self.rst,
            "ooo_bytes": self._ooo_bytes,
            "divergent_bytes": self.divergent,
            "replica": self.replica,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "closed_at": self.closed_at,
            "restored": self.restored,
        }

    def negotiate(self) -> None:
        """What both SYNs' options make of the connection (nothing until both are seen)."""
        c, s = self.c_opts, self.s_opts
        if c is None or s is None:
            return
        self.mss_c = c["mss"] if c["mss"] is not None else DEFAULT_MSS
        self.mss_s = s["mss"] if s["mss"] is not None else DEFAULT_MSS
        # RFC 7323 2.2: scaling is on only if both SYNs carried the option, else both shifts are 0.
        if c["wscale"] is not None and s["wscale"] is not None:
            self.wscale_c = min(c["wscale"], MAX_WSCALE)
            self.wscale_s = min(s["wscale"], MAX_WSCALE)
        else:
            self.wscale_c = self.wscale_s = 0
        self.sack_ok = bool(c["sack_perm"] and s["sack_perm"])
        self.ts_ok = bool(c["ts"] and s["ts"])

"""The per-connection TCP state machine of the mirrored traffic (pure logic, clock passed in).

This module is long because it is one state machine, whose both directions share every
field.

``Tracker`` follows both directions of every connection to a tracked service: the
handshake and its options, sequence and acknowledgement numbers, windows, timestamps,
FINs and RSTs, what each side has sent and the other acknowledged, and a restarted
agent's rebuilt records until they are seen to continue. Client bytes go to the log in
order (the common case inline here, the rest in ftcp/agent/reassembly.py); a client
segment is taken only if the primary's kernel would take it
(ftcp/agent/segment_checks.py); the bounds are ftcp/agent/admission.py's.
"""
from __future__ import annotations

from typing import Optional

from ftcp.common.statuses import Reason
from ftcp.agent.admission import Admission, Limits
from ftcp.agent.conn import CLOSED, CLOSING, ESTABLISHED, PROTECTED, SYN_RECEIVED, SYN_SENT, UNPROTECTED, Conn
from ftcp.agent.packet import ACK, FIN, RST, SYN, is_ipv4_tcp, parse_frame
from ftcp.agent.reassembly import Reassembly
from ftcp.agent.segment_checks import BAD_CHECKSUM, OTHER_HOST, check_client_segment
from ftcp.agent.seqspace import HALF, MASK, seq_diff


class Tracker:
    """Feeds segments into connections. ``services``: {(server_ip_int, server_port): name}."""

    def __init__(self, services, log_cap, grace: float = 30.0, max_ooo: int = None,
                 half_closed_timeout: float = 120.0, limits: Optional[Limits] = None):
        limits = limits if limits is not None else Limits()
        self.set_services(services)
        # A connection half-way through its handshake or its close that goes quiet this
        # long is taken as closed (its last ACK or RST was never seen); an established
        # one never is: an idle connection may resume at any time.
        self.half_closed_timeout = half_closed_timeout
        self._next_idle_check = 0.0
        self.log_cap = log_cap
        self.grace = grace
        if max_ooo is not None:
            limits = Limits(**{**limits.__dict__, "ooo_bytes": max_ooo})
        self.limits = limits
        self.max_ooo = limits.ooo_bytes
        self.conns = {}
        self._dirty = {}
        self._closed = {}
        self._admission = Admission(limits, unprotect=self.mark_unprotected, drop=self._unlist)
        self._reassembly = Reassembly(log_cap, unprotect=self.mark_unprotected,
                                      check_held=self._admission.check_held)
        self._cap = self._reassembly.cap   # the in-order path in _client checks it too
        self.packets = 0
        self.ignored = 0
        self.malformed = 0
        self.other = 0        # frames that are not IPv4/TCP (ARP, IPv6, ...): not ours, not broken
        # client segments the primary's kernel would not accept either: never tracked
        self.bad_checksum = 0
        self.out_of_window = 0
        self.other_host = 0   # addressed to another MAC than the primary's
        self.other_host_mac = None
        # Called with (conn, server stream offset, payload) for every server segment
        # with data of a protected connection (the hot standby's divergence check).
        self.s2c_hook = None

    @property
    def ooo_total(self) -> int:
        """Out-of-order client bytes held over every connection."""
        return self._reassembly.ooo_total

    @property
    def refused(self) -> int:
        """New connections not tracked: ``Limits.conns`` records already."""
        return self._admission.refused

    @property
    def evicted(self) -> int:
        """Records with no handshake seen dropped (for newer ones, or idle)."""
        return self._admission.evicted

    def set_services(self, services, macs=None) -> None:
        """The services to track from now on (connections already tracked stay);
        ``macs``: {(server_ip_int, port): the primary's MAC as 6 bytes}, where known."""
        self.services = dict(services)
        self._macs = {(ip << 16) | port: mac for (ip, port), mac in (macs or {}).items()}
        # int keys hash faster than tuples on the per-packet lookup
        self._svc = {(ip << 16) | port: name for (ip, port), name in self.services.items()}

    # --- per packet -----------------------------------------------------------------
    def feed_frame(self, frame, now: float):
        """parse_frame + feed; frames that are not IPv4/TCP count as ``other``, broken
        IPv4/TCP ones as ``malformed``."""
        seg = parse_frame(frame)
        if seg is None:
            if is_ipv4_tcp(frame):
                self.malformed += 1
            else:
                self.other += 1
            return None
        return self.feed(seg, now)

    def feed(self, seg, now: float):
        """Account one segment; returns its Conn, or None if ignored."""
        self.packets += 1
        svc = self._svc
        name = svc.get((seg.dst_ip << 16) | seg.dst_port)
        if name is not None:
            key = (seg.src_ip, seg.src_port, seg.dst_ip, seg.dst_port)
            from_client = True
        else:
            name = svc.get((seg.src_ip << 16) | seg.src_port)
            if name is None:
                self.ignored += 1
                return None
            key = (seg.dst_ip, seg.dst_port, seg.src_ip, seg.src_port)
            from_client = False
        flags = seg.flags
        conn = self.conns.get(key)
        if conn is None or (flags & SYN and from_client and not flags & ACK and seg.seq != conn.isn_c
                            and self._is_new_syn(conn)):
            conn = self._open(key, name, seg, from_client, now)
            if conn is None:
                self.ignored += 1
            return conn
        conn.last_seen = now
        self._dirty[key] = conn
        if conn.state is CLOSED:
            # TIME_WAIT leftovers: nothing left to protect or track
            return conn
        if conn.restored:
            self._verify(conn, seg, from_client)
        if from_client:
            self._client(conn, seg, flags, now)
        else:
            self._server(conn, seg, flags, now)
        return conn

    def adopt(self, conn: Conn) -> bool:
        """Track a connection rebuilt from Redis (Conn.from_state) after a restart. It
        stays protected only if it continues where it was stored: its first segment
        from either side must carry exactly the stored next sequence and
        acknowledgement numbers (``_verify``); until then a takeover refuses it."""
        if conn.service not in self.services.values() or conn.key in self.conns:
            return False
        self.conns[conn.key] = conn
        self._admission.admit(conn)
        if conn._s_ack_off > conn._c_rcv:
            self.mark_unprotected(conn, Reason.CAPTURE_GAP.because(
                f"the agent restarted; the server had acknowledged {conn._s_ack_off - conn._c_rcv} client bytes "
                "the log lacks"))
        return True

    def _verify(self, c: Conn, seg, from_client: bool) -> None:
        """Did the connection move while the agent was away? A sequence or an
        acknowledgement beyond what was stored means bytes nobody logged or compared;
        exactly the stored numbers mean it did not; lower ones (retransmissions) tell
        nothing yet."""
        mine, theirs = (c.c2s_next, c.s2c_next) if from_client else (c.s2c_next, c.c2s_next)
        ahead = [seq_diff(seg.seq, mine)] + ([seq_diff(seg.ack, theirs)] if seg.flags & ACK else [])
        if any(d > 0 for d in ahead):
            c.restored = False
            self.mark_unprotected(c, Reason.CAPTURE_GAP.because("the connection moved while the agent was down"))
        elif all(d == 0 for d in ahead):
            c.restored = False
            self._dirty[c.key] = c

    @staticmethod
    def _is_new_syn(conn) -> bool:
        # A client SYN with another ISN means the client considers the tuple free: after a
        # close (TIME_WAIT reuse), or a retried handshake. On an established connection the
        # server answers it with a challenge ACK (RFC 5961 4.2) and the connection carries
        # on, so it is ignored there -- unless we never saw that connection's SYN (it may be
        # a leftover created from a stray segment).
        return conn.state is CLOSED or conn.state is SYN_SENT or conn.state is SYN_RECEIVED \
            or conn.isn_c is None or conn.restored

    def _open(self, key, name, seg, from_client, now):
        flags = seg.flags
        if from_client:
            verdict = check_client_segment(None, seg, flags, self._macs)
            if verdict:
                self._refuse(seg, verdict)
                return None
        if from_client and flags & SYN and not flags & ACK:
            conn = Conn(key, name, now)
            conn.state = SYN_SENT
            conn.isn_c = seg.seq
            conn._cb = (seg.seq + 1) & MASK
            conn.c_opts = seg.syn_options
            # RFC 7323 2.2: the window of a SYN is never scaled
            conn.c_win = conn.c_win_scaled = seg.window
            conn.c_tsval, conn.c_tsecr = seg.ts_val, seg.ts_ecr
        elif flags & RST:
            # a reset for a tuple we do not know (e.g. after expiry): nothing to track
            return None
        else:
            conn = Conn(key, name, now, UNPROTECTED, Reason.NO_SYN.text)
            if from_client:
                conn._cb = seg.seq
                if flags & ACK:
                    conn._sb = seg.ack
            elif flags & SYN and flags & ACK:
                # SYN-ACK whose SYN we missed: both ISNs are known, the client's options are not
                conn.state = SYN_SENT
                conn.isn_c = (seg.ack - 1) & MASK
                conn._cb = seg.ack
            else:
                conn._sb = (seg.seq + 1) & MASK if flags & SYN else seg.seq
                if flags & ACK:
                    conn._cb = seg.ack
        old = self.conns.get(key)
        if old is not None:
            self._admission.replaced(old)
            self._closed.pop(key, None)
            if self._dirty.get(key) is old:
                del self._dirty[key]
        elif not self._admission.make_room(len(self.conns)):
            return None
        self.conns[key] = conn
        self._dirty[key] = conn
        if conn.state is SYN_SENT or (from_client and conn.status is UNPROTECTED):
            # no handshake seen: anyone can make these, so they are bounded, short-lived,
            # and never written to Redis or given a replica (ftcp/agent/writer.py)
            self._admission.add_embryonic(conn, old)
        else:
            self._admission.admit(conn)
        if not from_client:
            self._server(conn, seg, flags, now)
        elif conn.state is not SYN_SENT:
            self._client(conn, seg, flags, now)
        elif seg.payload:
            # TCP Fast Open: data in the SYN starts at offset 0
            self._reassembly.add(conn, 0, seg.payload, len(seg.payload))
        return conn

    def _client(self, c, seg, flags, now):
        if flags & SYN:
            # retransmitted SYN (same ISN), or one the server answers with a challenge ACK
            return
        # Anyone on the clients' side can send any segment with this connection's
        # addresses. Take it only as the primary's kernel would (RFC 793, 5961), or
        # the log and the state would hold what the primary never accepted.
        verdict = check_client_segment(c, seg, flags, self._macs)
        if verdict:
            self._refuse(seg, verdict)
            return
        cb = c._cb
        if flags & RST:
            self._close(c, now, rst=True)
            return
        w = seg.window
        c.c_win = w
        c.c_win_scaled = w << c.wscale_c
        if c.c_win_scaled > c._c_max_win:
            c._c_max_win = c.c_win_scaled
        tv = seg.ts_val
        if tv is not None and (c.c_tsval is None or ((tv - c.c_tsval) & MASK) < HALF) and \
                (cb is None or ((seg.seq - cb - c._c_rcv + HALF) & MASK) - HALF <= 0):
            # keep the newest TSval of a segment that starts at or before the next
            # expected byte (Linux's tcp_replace_ts_recent): a takeover must continue
            # above it (PAWS, RFC 7323 5), and one forged ahead would make the rebuilt
            # socket drop every real segment
            c.c_tsval = tv
            c.c_tsecr = seg.ts_ecr
        if flags & ACK:
            sb = c._sb
            if sb is not None:
                ack = seg.ack
                hi = c._c_ack_off
                off = hi + ((ack - sb - hi + HALF) & MASK) - HALF
                if off > hi:
                    c._c_ack_off = off
                    c.c_ack = ack
                if c.state is not ESTABLISHED:
                    if c.state is SYN_RECEIVED:
                        if off >= 0:
                            c.state = ESTABLISHED
                            self._admission.promote(c)
                    elif c.state is CLOSING:
                        self._check_closed(c, now)
        payload = seg.payload
        if (payload or flags & FIN) and (c.state is SYN_SENT or c.state is SYN_RECEIVED):
            return   # no data before the handshake is done (a SYN's own data is taken in _open)
        if payload or flags & FIN:
            cb = c._cb
            if cb is None:
                c._cb = cb = seg.seq
            rcv = c._c_rcv
            off = rcv + ((seg.seq - cb - rcv + HALF) & MASK) - HALF
            n = len(payload)
            if n and c.status is PROTECTED:
                end = off + n
                if off == rcv and end <= self._cap and not c._ooo:
                    # in order: the common case
                    # a copy: the payload is a view into the capture ring, whose block
                    # the kernel refills once handed back (before collect takes _pend)
                    c._pend.append(bytes(payload))
                    c._c_rcv = c.c2s_logged = end
                else:
                    self._reassembly.add(c, off, payload, n)
            elif n:
                # unprotected: follow the client's progress, keep no bytes
                if off + n > rcv and off <= rcv:
                    c._c_rcv = off + n
            if flags & FIN and not c.fin_c:
                c.fin_c = True
                c.fin_c_seq = (seg.seq + n) & MASK
                c._c_fin = off + n
                if c.state is not CLOSING:
                    c.state = CLOSING

    def _refuse(self, seg, verdict) -> None:
        """Count a client segment the primary's kernel would drop (check_client_segment)."""
        if verdict == BAD_CHECKSUM:
            self.bad_checksum += 1
        elif verdict == OTHER_HOST:
            self.other_host += 1
            self.other_host_mac = bytes(seg.eth_dst)   # for the agent's warning: a wrong primary.mac shows here
        else:
            self.out_of_window += 1

    def _server(self, c, seg, flags, now):
        if flags & SYN:
            if flags & ACK and c.isn_s is None and c.state is SYN_SENT:
                c.isn_s = seg.seq
                c._sb = (seg.seq + 1) & MASK
                c.s_opts = seg.syn_options
                c.negotiate()
                c.s_win = c.s_win_scaled = seg.window  # SYN windows are unscaled
                c.s_tsval, c.s_tsecr = seg.ts_val, seg.ts_ecr
                c.state = SYN_RECEIVED
                cb = c._cb
                c._s_ack_off = ((seg.ack - cb + HALF) & MASK) - HALF
                c.s_ack = seg.ack
            # else a retransmitted SYN-ACK: the first one already told us everything
            return
        if flags & RST:
            self._close(c, now, rst=True)
            return
        if c.isn_c is None:
            # the primary talks on it (its port is the only way in for its segments): a
            # connection that predates the agent, no longer a record anyone could forge
            self._admission.promote(c)
        w = seg.window
        c.s_win = w
        c.s_win_scaled = w << c.wscale_s
        tv = seg.ts_val
        if tv is not None and (c.s_tsval is None or ((tv - c.s_tsval) & MASK) < HALF):
            c.s_tsval = tv
            c.s_tsecr = seg.ts_ecr
        if flags & ACK:
            cb = c._cb
            if cb is not None:
                ack = seg.ack
                hi = c._s_ack_off
                off = hi + ((ack - cb - hi + HALF) & MASK) - HALF
                if off > hi:
                    c._s_ack_off = off
                    c.s_ack = ack
                    rcv = c._c_rcv
                    if off > rcv:
                        lim = rcv + 1 if c._c_fin >= 0 and rcv >= c._c_fin else rcv
                        if off > lim:
                            # The server has client bytes we do not: the mirror dropped
                            # a segment, so the log can never be completed.
                            if c.status is PROTECTED:
                                self.mark_unprotected(
                                    c, Reason.CAPTURE_GAP.because(f"server acked {off - lim} bytes not seen"))
                            c._c_rcv = off if c._c_fin < 0 else min(off, c._c_fin)
                    if c.state is CLOSING:
                        self._check_closed(c, now)
        payload = seg.payload
        if payload or flags & FIN:
            sb = c._sb
            if sb is None:
                c._sb = sb = seg.seq
            hi = c._s_hi
            off = hi + ((seg.seq - sb - hi + HALF) & MASK) - HALF
            end = off + len(payload)
            if end > hi:
                c._s_hi = end
            if payload and self.s2c_hook is not None and c.status is PROTECTED:
                self.s2c_hook(c, off, payload)
            if flags & FIN and not c.fin_s:
                c.fin_s = True
                c.fin_s_seq = (seg.seq + len(payload)) & MASK
                c._s_fin = end
                if c.state is not CLOSING:
                    c.state = CLOSING

    # --- state ----------------------------------------------------------------------
    def _check_closed(self, c, now):
        if c.fin_c and c.fin_s and c._s_ack_off > c._c_fin and c._c_ack_off > c._s_fin:
            self._close(c, now)

    def _close(self, c, now, rst=False):
        c.state = CLOSED
        c.closed_at = now
        if rst:
            c.rst = True
        self._reassembly.drop_held(c)
        self._admission.forget(c)
        self._closed[c.key] = c

    def _unlist(self, c):
        """Take a record out of the tables now (an embryonic one the bounds evict:
        never written anywhere, it just goes)."""
        key = c.key
        if self.conns.get(key) is c:
            del self.conns[key]
        self._closed.pop(key, None)
        if self._dirty.get(key) is c:
            del self._dirty[key]
        self._reassembly.drop_held(c)

    def embryonic(self, conn) -> bool:
        """No handshake seen for it (yet): not written, not replicated."""
        return self._admission.embryonic(conn)

    def mark_unprotected(self, conn, reason: str) -> None:
        """Unprotected for good; the first reason is kept. Held out-of-order bytes are dropped,
        contiguous bytes already delivered stay available to take_c2s."""
        if conn.status is not PROTECTED:
            return
        conn.status = UNPROTECTED
        conn.reason = reason
        self._reassembly.drop_held(conn)
        if self.conns.get(conn.key) is conn:
            self._dirty[conn.key] = conn

    def take_dirty(self) -> list:
        """Connections changed since the last call, each once."""
        if not self._dirty:
            return []
        dirty = list(self._dirty.values())
        self._dirty = {}
        return dirty

    def expire(self, now: float) -> list:
        """Remove and return connections closed more than ``grace`` seconds ago, and
        embryonic ones dropped (idle ``embryonic_timeout``, or for newer ones)."""
        if now >= self._next_idle_check:
            self._next_idle_check = now + 1.0   # a scan of every connection: once a second
            self._admission.evict_idle(now)
            limit = now - self.half_closed_timeout
            for c in self.conns.values():
                # closing or opening, or rebuilt after a restart and never seen since:
                # its end may have gone unseen
                if (c.state is not ESTABLISHED or c.restored) and c.state is not CLOSED and c.last_seen < limit:
                    self._close(c, now)
                    self._dirty[c.key] = c
        gone = [c for c in self._closed.values() if now - c.closed_at > self.grace]
        for c in gone:
            key = c.key
            del self._closed[key]
            del self.conns[key]
            self._admission.release(c)
            if self._dirty.get(key) is c:
                del self._dirty[key]
        gone += self._admission.take_evicted()   # already out of every table
        return gone

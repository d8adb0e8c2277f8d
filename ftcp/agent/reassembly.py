"""Exact client->server stream reassembly: each connection's client bytes delivered into
its log in order, each exactly once, as the primary's kernel delivers them.

Bytes beyond a hole are held (bounded: ftcp/agent/admission.py) until it fills; copies
of the same bytes must agree, or the connection is unprotected (what the primary got
then depends on its queue's layout). The log stops at ``log_cap``. The in-order segment,
the common case, is taken on the tracker's own per-packet path; what falls outside it
comes here. Offsets as in ftcp/agent/seqspace.py.
"""
from __future__ import annotations

from bisect import bisect_left

from ftcp.common.statuses import Reason
from ftcp.agent.conn import PROTECTED


class Reassembly:
    """Puts each protected connection's client bytes into its log (``Conn.take_c2s``
    hands them out). ``unprotect(conn, reason)`` marks a connection whose log can no
    longer be exact; ``check_held(conn, total)`` applies the bounds on held bytes."""

    def __init__(self, log_cap, unprotect, check_held):
        self.log_cap = log_cap
        # None = no cap; an int compare on the hot path either way
        self.cap = log_cap if log_cap is not None else 1 << 62
        self.ooo_total = 0     # out-of-order bytes held over every connection
        self._unprotect = unprotect
        self._check_held = check_held

    def add(self, c, off, data, n):
        """Client bytes ``data`` (``n`` of them) at offset ``off`` of a protected connection."""
        rcv = c._c_rcv
        end = off + n
        if end <= rcv:
            return  # retransmission of bytes already delivered
        # The capture hands out views into its ring, reused once the batch is done:
        # bytes we keep must be copied (bytes() of a bytes object is free).
        data = bytes(data)
        if off > rcv:
            self._hold(c, off, data, n)
            return
        if off < rcv:
            data = data[rcv - off:]  # overlaps what we have: deliver only the new tail
        self._deliver(c, data, end)
        if c._ooo and c._ooo_offs[0] <= c._c_rcv:
            self._drain(c)

    def _deliver(self, c, data, end):
        cap = self.cap
        if end > cap:
            keep = cap - c.c2s_logged
            if keep > 0:
                c._pend.append(data[:keep])
                c.c2s_logged = cap
            c._c_rcv = end
            self._unprotect(c, f"{Reason.LOG_CAP.text} of {self.log_cap} bytes reached")
            return
        c._pend.append(data)
        c._c_rcv = c.c2s_logged = end

    def _hold(self, c, off, data, n):
        """Hold a segment beyond a hole. The held bytes never overlap: what a new copy
        repeats of them is compared and left out, and the rest held in pieces. That is
        what Linux delivers whatever its queue's layout, as long as the copies agree
        (the lowest offset wins when the hole fills). Copies that differ where they
        overlap leave the outcome to that layout: the connection is unprotected."""
        ooo, offs = c._ooo, c._ooo_offs
        if ooo is None:
            c._ooo, c._ooo_offs = ooo, offs = {}, []
        end = off + n
        i = bisect_left(offs, off)
        at = off        # where the bytes of this copy that nothing held has may start
        if i:   # the one held piece that may start before this copy and reach into it
            o = offs[i - 1]
            d = ooo[o]
            if o + len(d) > off:
                if not self._same(c, d, o, data, off, off, min(o + len(d), end)):
                    return
                at = o + len(d)
        pieces = []     # (offset, bytes) of this copy that nothing held has
        k = i
        while k < len(offs) and offs[k] < end:
            o = offs[k]
            d = ooo[o]
            if not self._same(c, d, o, data, off, o, min(o + len(d), end)):
                return
            if at < o:
                pieces.append((at, data[at - off:o - off]))
            at = max(at, o + len(d))
            k += 1
        if at < end:
            pieces.append((at, data[at - off:]))
        for o, d in pieces:
            offs.insert(bisect_left(offs, o), o)
            ooo[o] = d
            c._ooo_bytes += len(d)
            self.ooo_total += len(d)
        self._check_held(c, self.ooo_total)

    def _same(self, c, held, held_off, data, off, lo, hi) -> bool:
        """Do the held copy and the new one agree from ``lo`` to ``hi``? If not, the
        connection is unprotected."""
        if lo >= hi or held[lo - held_off:hi - held_off] == data[lo - off:hi - off]:
            return True
        self._unprotect(c, f"{Reason.CONFLICT.text} at client byte {lo}")
        return False

    def _drain(self, c):
        """Deliver what the hole's filling made contiguous, lowest offset first (the
        offsets are kept in order: nothing is sorted per segment)."""
        ooo, offs = c._ooo, c._ooo_offs
        rcv = c._c_rcv
        taken = 0
        for off in offs:
            if off > rcv:
                break
            taken += 1
            data = ooo.pop(off)
            c._ooo_bytes -= len(data)
            self.ooo_total -= len(data)
            end = off + len(data)
            if end <= rcv:
                continue
            if off < rcv:
                data = data[rcv - off:]
            self._deliver(c, data, end)
            if c.status is not PROTECTED:
                return   # its held bytes are dropped
            rcv = end
        del offs[:taken]

    def drop_held(self, c) -> None:
        """Forget what the connection holds out of order (closed, or unprotected)."""
        self.ooo_total -= c._ooo_bytes
        c._ooo = c._ooo_offs = None
        c._ooo_bytes = 0

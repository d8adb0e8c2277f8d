"""Would the primary's kernel take this client segment? The checks every client segment
must pass before the tracker takes it into a connection's log and state.

Anyone on the clients' side can send any segment with a connection's addresses; one the
primary's kernel drops must not reach the log. The checks are pure (they read the
segment and the connection, change nothing) and sit behind one call,
``check_client_segment``, on the per-packet path next to ``parse_frame`` and
``checksum_ok`` (ftcp/agent/packet.py): a native implementation can replace them here
without the tracker changing.
"""
from __future__ import annotations

from ftcp.agent.conn import MAX_WSCALE, SYN_SENT
from ftcp.agent.packet import ACK, FIN, RST, checksum_ok
from ftcp.agent.seqspace import HALF, MASK

# The largest window TCP can advertise (65535 << 14): what a window not seen yet may be.
MAX_WINDOW = 65535 << MAX_WSCALE

# check_client_segment's verdicts: taken (0, so a verdict is true when the segment is not), or why not
TAKEN, BAD_CHECKSUM, OTHER_HOST, OUT_OF_WINDOW = 0, 1, 2, 3


def check_client_segment(c, seg, flags, macs) -> int:
    """TAKEN, or why the primary would drop the segment: a wrong checksum; a frame for
    another MAC than the primary's (``macs``: {(server_ip << 16) | port: MAC}; Linux's
    TCP takes only frames for its own host, PACKET_HOST); outside what connection ``c``
    accepts (``_acceptable``; not checked with no connection yet, or none of its client
    sequence numbers known)."""
    if not checksum_ok(seg):
        return BAD_CHECKSUM
    mac = macs.get((seg.dst_ip << 16) | seg.dst_port)
    if mac is not None and seg.eth_dst is not None and seg.eth_dst != mac:
        return OTHER_HOST
    if c is not None:
        cb = c._cb
        if cb is not None and not _acceptable(c, seg, flags, cb):
            return OUT_OF_WINDOW
    return TAKEN


def _acceptable(c, seg, flags, cb) -> bool:
    """Would the primary take this client segment (Linux's tcp_validate_incoming,
    tcp_sequence, tcp_ack)? A RST only exactly at the next expected byte (or one
    past the client's FIN, or, with SACK, at the end of what is held out of order:
    tcp_reset_check and the SACK rule); any other segment's timestamp not older
    than the newest one (PAWS), its sequence numbers within the window the server
    advertised; past the handshake, an ACK bit, acknowledging no more than the
    server has sent (as the mirror showed it) and no less than a window before
    what the client acknowledged already."""
    rcv = c._c_rcv
    off = rcv + ((seg.seq - cb - rcv + HALF) & MASK) - HALF
    if flags & RST:
        # (a RST is taken even if it fails PAWS, as Linux does)
        if off == rcv or (c.fin_c and off == rcv + 1):
            return True
        ooo, offs = c._ooo, c._ooo_offs
        # held pieces never overlap: the last one ends what is held
        return c.sack_ok and bool(ooo) and off == offs[-1] + len(ooo[offs[-1]])
    # PAWS (RFC 7323 5, Linux's tcp_paws_discard, and tcp_check_req for the ACK
    # that ends the handshake): a timestamp older than the newest in-order one by
    # more than 1 is an old duplicate, dropped whole
    tv = seg.ts_val
    if c.ts_ok and tv is not None and c.c_tsval is not None and 1 < ((c.c_tsval - tv) & MASK) < HALF:
        return False
    # the window the server offered: from what it acknowledged (its rcv_nxt as we saw
    # it last) on, as wide as it said; a segment that ends before it is an old
    # duplicate, which Linux drops whole (its FIN and ACK included)
    left = max(c._s_ack_off, 0)
    window = c.s_win_scaled if c.s_win_scaled is not None else MAX_WINDOW
    if off > left + window and off > rcv:
        return False
    if off + len(seg.payload) + (flags & FIN) < left:
        return False
    sb = c._sb
    if sb is not None and c.state is not SYN_SENT:
        if not flags & ACK:
            return False
        hi = c._c_ack_off
        acked = hi + ((seg.ack - sb - hi + HALF) & MASK) - HALF
        if acked > max(c._s_hi, c._s_fin + 1) or acked < hi - max(c._c_max_win, 0xFFFF):
            return False
    return True

"""Rebuild a client's TCP socket on the backup with the primary's numbers (TCP_REPAIR).

``repair_params`` (pure) turns a recorded connection state into the numbers the kernel
needs; ``repaired_socket`` (side effect, CAP_NET_ADMIN) makes the socket. In repair
mode nothing leaves the socket: no SYN on connect, no data on send. Leaving repair
mode with TCP_REPAIR_OFF_NO_WP sends nothing either, so the socket stays silent
until the switch redirects the client to it and the agent kicks it.
Constants: linux/tcp.h (uapi).
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

TCP_REPAIR = 19
TCP_REPAIR_QUEUE = 20
TCP_QUEUE_SEQ = 21
TCP_REPAIR_OPTIONS = 22
TCP_TIMESTAMP = 24
TCP_REPAIR_WINDOW = 29
TCP_REPAIR_ON, TCP_REPAIR_OFF, TCP_REPAIR_OFF_NO_WP = 1, 0, -1
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
MASK = 0xFFFFFFFF
LINGER_RST, LINGER_NORMAL = struct.pack("ii", 1, 0), struct.pack("ii", 0, 0)


class RepairError(OSError):
    """The kernel refused a step of the repair (which step is in the message)."""


@dataclass(frozen=True)
class RepairParams:
    local: tuple            # (ip, port) the socket binds: the backup's address, service port
    remote: tuple           # (client ip, client port)
    snd_nxt: int            # first server byte the client has not acknowledged
    rcv_nxt: int            # next client byte expected: every logged byte is "received"
    mss: int                # the largest segment the client accepts (its SYN's MSS)
    snd_wscale: int         # the client's window shift (scales windows it advertises)
    rcv_wscale: int         # our (the primary's) shift
    sack: bool
    timestamps: bool
    tsval: int              # our next TSval: above the primary's last (the client's PAWS check)
    snd_wnd: int            # the client's last advertised window, scaled
    rcv_wnd: int            # the primary's last advertised window, scaled
    ts_recent: int = 0      # the client's latest TSval the mirror showed (our TSecr)

    @property
    def window(self) -> bytes:
        # struct tcp_repair_window { snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup }
        return struct.pack("=5I", self.rcv_nxt, self.snd_wnd, self.snd_wnd, self.rcv_wnd, self.rcv_nxt)

    @property
    def options(self) -> bytes:
        # struct tcp_repair_opt { u32 opt_code; u32 opt_val; } ...
        opts = [(TCPOPT_MSS, self.mss)]
        if self.snd_wscale or self.rcv_wscale:
            opts.append((TCPOPT_WINDOW, self.snd_wscale | (self.rcv_wscale << 16)))
        if self.sack:
            opts.append((TCPOPT_SACK_PERM, 0))
        if self.timestamps:
            opts.append((TCPOPT_TIMESTAMP, 0))
        return b"".join(struct.pack("=II", code, val) for code, val in opts)


def _int(state: dict, key: str, default=None) -> int:
    value = state.get(key, "")
    if value in ("", None):
        if default is None:
            raise ValueError(f"connection state has no {key}")
        return default
    return int(value)


def repair_params(state: dict, local_ip: str, logged: int, fin: bool = False) -> RepairParams:
    """Numbers for the rebuilt socket from the agent's record of the connection.

    ``logged`` is how many client bytes the replica is fed (the frozen log); the
    socket acknowledges exactly those, and with ``fin`` the client's FIN after them
    (a half-closed connection: the client resends nothing, a repeated FIN is old).
    """
    isn_c, isn_s = _int(state, "isn_c"), _int(state, "isn_s")
    ts_ok = bool(_int(state, "ts_ok", 0))
    return RepairParams(
        local=(local_ip, _int(state, "server_port")),
        remote=(state["client_ip"], _int(state, "client_port")),
        snd_nxt=(isn_s + 1 + _int(state, "s2c_acked", 0)) & MASK,
        rcv_nxt=(isn_c + 1 + logged + (1 if fin else 0)) & MASK,
        mss=_int(state, "mss_c", 536),
        snd_wscale=_int(state, "wscale_c", 0),
        rcv_wscale=_int(state, "wscale_s", 0),
        sack=bool(_int(state, "sack_ok", 0)),
        timestamps=ts_ok,
        tsval=next_tsval(_int(state, "s_tsval", 0)) if ts_ok else 0,
        snd_wnd=_int(state, "c_win_scaled", 0) or 65535,
        rcv_wnd=_int(state, "s_win_scaled", 0) or 65535,
        ts_recent=_int(state, "c_tsval", 0) if ts_ok else 0,
    )


def next_tsval(last: int) -> int:
    """The first TSval of the rebuilt socket: above the primary's last one (the client's
    PAWS check) and *even*. Since Linux 6.7 the low bit of a TCP_TIMESTAMP value set in
    repair mode selects microsecond timestamps (for CRIU): an odd value makes the socket
    tick 1000 times faster than the primary's clock, so after 36 idle minutes its TSval
    would look older than the client's last one and PAWS would drop every segment."""
    return (last + 2) & ~1 & MASK


def _u32(value: int) -> bytes:
    # Sequence numbers use all 32 bits; setsockopt() with a Python int only takes a
    # signed C int, so pass the unsigned value as 4 raw bytes.
    return struct.pack("=I", value & MASK)


def reset_params(state: dict, local_ip: str):
    """Numbers for a socket whose only job is to send the client a RST it accepts:
    the RST's sequence number must be exactly what the client expects next (RFC 5961),
    i.e. the server's snd_nxt. None when the record lacks the numbers."""
    try:
        snd_nxt, rcv_nxt = _int(state, "s2c_next"), _int(state, "c2s_next")
    except ValueError:
        return None
    return RepairParams(local=(local_ip, _int(state, "server_port")),
                        remote=(state["client_ip"], _int(state, "client_port")),
                        snd_nxt=snd_nxt & MASK, rcv_nxt=rcv_nxt & MASK, mss=_int(state, "mss_c", 536),
                        snd_wscale=0, rcv_wscale=0, sack=False, timestamps=False, tsval=0,
                        snd_wnd=65535, rcv_wnd=65535)


def _step(sock, what, level, opt, value):
    try:
        sock.setsockopt(level, opt, value)
    except OSError as e:
        raise RepairError(e.errno, f"TCP_REPAIR {what}: {e.strerror}") from None


SO_SNDBUFFORCE = 32


def repaired_socket(p: RepairParams, unacked: bytes = b"") -> socket.socket:
    """An ESTABLISHED socket that continues the primary's connection (docs/failover.md).

    ``unacked``: the server bytes the primary had sent but the client had not
    acknowledged (as far as the mirror saw), from ``snd_nxt`` (= the primary's
    snd_una) on. They go into the send queue as already sent, so the socket's snd_nxt
    is the primary's: a client ACK for any of them is valid. Without them an ACK for
    bytes "not yet sent" is discarded and the connection never moves again.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Until go, any close -- an abort, or the agent dying -- must be a RST: a FIN
        # would be an in-sequence end of the client's stream. ``released`` undoes it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        # A relay: what the replica wrote goes out at once. With Nagle, the tail of a
        # response waits for the client's delayed ACK of the segment before (40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if unacked:
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, max(1 << 22, 4 * len(unacked)))
        _step(sock, "on", socket.SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON)
        _step(sock, "recv queue", socket.SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        _step(sock, "rcv_nxt", socket.SOL_TCP, TCP_QUEUE_SEQ, _u32(p.rcv_nxt))
        _step(sock, "send queue", socket.SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        _step(sock, "snd_nxt", socket.SOL_TCP, TCP_QUEUE_SEQ, _u32(p.snd_nxt))
        # connect() sizes segments from the MSS clamp it finds; the MSS of
        # TCP_REPAIR_OPTIONS (set after connect) only changes the clamp, so without
        # this the socket would send 524-byte segments (the 536 default).
        _step(sock, "mss", socket.SOL_TCP, socket.TCP_MAXSEG, p.mss)
        # In repair mode the port is force-shared with the replica's listener
        # (the kernel sets SK_FORCE_REUSE), and connect() sends no SYN.
        try:
            sock.bind(p.local)
            sock.connect(p.remote)
        except OSError as e:
            raise RepairError(e.errno, f"TCP_REPAIR bind/connect {p.local}->{p.remote}: {e.strerror}") from None
        if p.timestamps:
            # After connect: connect() gives the socket a fresh random timestamp
            # offset on this kernel, which would undo ours; TSvals below the client's
            # last seen one fail its PAWS check and every segment is dropped.
            _step(sock, "timestamp", socket.SOL_TCP, TCP_TIMESTAMP, _u32(p.tsval))
        _step(sock, "options", socket.SOL_TCP, TCP_REPAIR_OPTIONS, p.options)
        _step(sock, "window", socket.SOL_TCP, TCP_REPAIR_WINDOW, p.window)
        if unacked:
            # Still in repair mode with the send queue selected: queued as sent,
            # nothing goes on the wire (tcp_write_xmit skips transmission).
            try:
                sock.sendall(unacked)
            except OSError as e:
                raise RepairError(e.errno, f"TCP_REPAIR send queue: {e.strerror}") from None
        _step(sock, "off", socket.SOL_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
    except BaseException:
        sock.close()
        raise
    return sock


def window_probe(sock: socket.socket) -> tuple:
    """Make the kernel send one window probe now: the client answers with an ACK,
    which tells the socket what the client has of its bytes. Returns the socket's
    (snd_nxt, rcv_nxt, rcv_wnd in bytes, TSval), read while repair mode froze it."""
    sock.setsockopt(socket.SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON)
    try:
        sock.setsockopt(socket.SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        snd_nxt = sock.getsockopt(socket.SOL_TCP, TCP_QUEUE_SEQ) & MASK  # write_seq: nothing unsent yet
        sock.setsockopt(socket.SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        rcv_nxt = sock.getsockopt(socket.SOL_TCP, TCP_QUEUE_SEQ) & MASK
        rcv_wnd = struct.unpack("=5I", sock.getsockopt(socket.SOL_TCP, TCP_REPAIR_WINDOW, 20))[3]
    finally:
        sock.setsockopt(socket.SOL_TCP, TCP_REPAIR, TCP_REPAIR_OFF)
    return snd_nxt, rcv_nxt, rcv_wnd, sock.getsockopt(socket.SOL_TCP, TCP_TIMESTAMP) & MASK


def released(sock: socket.socket) -> None:
    """The socket serves its client now (go): it closes normally again."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NORMAL)


def silent_close(sock: socket.socket) -> None:
    """Close without a FIN or a RST: a socket in repair mode leaves silently."""
    sock.setsockopt(socket.SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON)
    sock.close()


def reset(sock: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0): the client fails fast instead of hanging."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    sock.close()

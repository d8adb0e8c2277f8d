"""Capture frames from the mirror iface: AF_PACKET with a TPACKET_V3 mmap ring.

The kernel fills whole blocks of frames into a shared ring; we hand a block's frames
to the caller in one batch and give the block back. One poll() wake-up per block
instead of one recv() per packet is what lets CPython keep up with line rate.
Constants and struct layouts are from linux/if_packet.h.
"""
from __future__ import annotations

import mmap
import select
import socket
import struct

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1

# struct tpacket_block_desc { u32 version; u32 offset_to_priv; struct tpacket_hdr_v1 h1; }
# tpacket_hdr_v1 { u32 block_status; u32 num_pkts; u32 offset_to_first_pkt; ... }
_BLOCK_HDR = struct.Struct("=IIIII")          # version, offset_to_priv, status, num_pkts, first
_BLOCK_STATUS_OFF = 8
# struct tpacket3_hdr { u32 tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status;
#                       u16 tp_mac, tp_net; ... }
_PKT_HDR = struct.Struct("=IIIIIIHHII")       # ... then hv1: u32 tp_rxhash, tp_vlan_tci
TP_STATUS_VLAN_VALID = 0x10
_STATS_V3 = struct.Struct("=III")             # tp_packets, tp_drops, tp_freeze_q_cnt


class CaptureError(OSError):
    """The mirror iface cannot be opened (missing, down, or no CAP_NET_RAW)."""


class RingCapture:
    """``batch(timeout_ms)`` returns the frames of the next filled block as memoryviews
    into the ring, valid until the next ``batch`` call (which hands the block back to
    the kernel). Most frames are only parsed, never kept, so copying them would be
    wasted work; the tracker copies the client bytes it keeps."""

    def __init__(self, iface: str, block_size: int = 1 << 22, block_count: int = 64,
                 frame_size: int = 1 << 11, retire_ms: int = 10):
        self.iface = iface
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError as e:
            raise CaptureError(f"cannot open a packet socket: {e} (needs root / CAP_NET_RAW)") from None
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            # tpacket_req3: block_size, block_nr, frame_size, frame_nr, retire_blk_tov (ms),
            # sizeof_priv, feature_req_word. A block is handed over when full or when
            # retire_ms passes, which bounds the latency of a quiet stream.
            req = struct.pack("=IIIIIII", block_size, block_count, frame_size,
                              block_size * block_count // frame_size, retire_ms, 0, 0)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.sock.bind((iface, ETH_P_ALL))
        except OSError as e:
            self.sock.close()
            raise CaptureError(f"cannot capture on {iface}: {e.strerror or e}") from None
        self.block_size, self.block_count = block_size, block_count
        self.ring = mmap.mmap(self.sock.fileno(), block_size * block_count,
                              mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = memoryview(self.ring)
        self._next = 0
        self._held = None   # offset of the block whose frames the caller holds
        self._poll = select.poll()
        self._poll.register(self.sock, select.POLLIN | select.POLLERR)
        self.received = self.dropped = 0
        self.other_vlan = 0      # frames tagged for another VLAN than 0, left out
        self.last_stamp = 0.0   # kernel receive time (CLOCK_REALTIME) of the newest frame handed out

    def wake_on(self, fd: int) -> None:
        """Also return from ``batch`` early when ``fd`` becomes readable (the caller
        drains it): a control message must not wait for the poll timeout."""
        self._poll.register(fd, select.POLLIN)

    def close(self):
        self._release()
        try:
            self._view.release()
            self.ring.close()
        except BufferError:
            pass  # a caller still holds a frame view; the mapping goes with the process
        self.sock.close()

    def _release(self):
        if self._held is not None:
            # TP_STATUS_KERNEL: the kernel may fill this block again.
            struct.pack_into("=I", self.ring, self._held + _BLOCK_STATUS_OFF, TP_STATUS_KERNEL)
            self._held = None

    def stats(self):
        """(packets, drops) since the last call, as counted by the kernel."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS_V3.size)
        packets, drops, _ = _STATS_V3.unpack(raw)
        self.received += packets
        self.dropped += drops
        return packets, drops

    def batch(self, timeout_ms: int):
        """Frames of the next full block, or [] after timeout_ms with none ready."""
        self._release()
        ring = self.ring
        base = self._next * self.block_size
        _, _, status, num, first = _BLOCK_HDR.unpack_from(ring, base)
        if not status & TP_STATUS_USER:
            self._poll.poll(timeout_ms)
            _, _, status, num, first = _BLOCK_HDR.unpack_from(ring, base)
            if not status & TP_STATUS_USER:
                return []
        frames = []
        off = base + first
        unpack = _PKT_HDR.unpack_from
        view = self._view
        sec = nsec = 0
        for _ in range(num):
            nxt, sec, nsec, snaplen, _len, st, mac, _net, _hash, tci = unpack(ring, off)
            if not (st & TP_STATUS_VLAN_VALID and tci & 0x0FFF):
                # (a tag the driver took off: another VLAN than 0 is not for the primary)
                start = off + mac
                frames.append(view[start:start + snaplen])
            else:
                self.other_vlan += 1
            off += nxt
        if num:
            self.last_stamp = sec + nsec * 1e-9
        self._held = base
        self._next = (self._next + 1) % self.block_count
        return frames

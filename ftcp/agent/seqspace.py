"""TCP sequence-number arithmetic, and how the tracker numbers the bytes of a stream.

Offsets: each direction's bytes are numbered 0, 1, 2 ... from the first byte after the ISN
(the SYN takes the ISN itself), as unbounded ints. A 32-bit seq is turned into an offset by
its signed distance from a nearby known offset, so streams cross 2^32 without special cases.
The per-packet code inlines ``((a - b + HALF) & MASK) - HALF`` rather than call seq_diff.
"""
from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000


def seq_diff(a: int, b: int) -> int:
    """a - b for 32-bit sequence numbers, as a signed int in [-2^31, 2^31)."""
    return ((a - b + HALF) & MASK) - HALF


def seq_lt(a: int, b: int) -> bool:
    """a comes before b in sequence space (RFC 793 / RFC 1982 arithmetic)."""
    return ((a - b + HALF) & MASK) - HALF < 0


def seq_leq(a: int, b: int) -> bool:
    return ((a - b + HALF) & MASK) - HALF <= 0

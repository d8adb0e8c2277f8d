"""How much a hot replica's output may differ from the primary's (pure).

Every server segment the primary sends becomes an *expectation*, compared with the
replica's output at the same offset (ftcp/agent/replica.py while the replica runs
hot, ftcp/agent/takeover.py at takeover). The service's ``divergence`` setting picks
what the expectation keeps and what passes:

``strict``
    a CRC-32 of the segment: any byte that differs marks the connection diverged
    (it is then reset at failover, never spliced).
``aligned``
    the segment's bytes: the replica's output may differ, but only byte for byte in
    the same *shape* -- a digit where the primary had a digit, a lower-case letter
    for a lower-case letter, an upper-case one for an upper-case one, and every other
    byte identical. The two outputs therefore keep the same length and framing: an
    HTTP ``Date`` written a second later passes (fixed width, RFC 9110 5.6.7), a
    number that grew a digit does not (everything after it moves, and the next byte
    compared is a delimiter against a digit). Bytes that differ are counted, and the
    replica's copy is overwritten with the primary's, so the client only ever gets
    the primary's bytes up to where the primary stopped and the replica's after.

What ``aligned`` cannot see: a field that differs in width at the very end of what
the primary sent (the shift shows only in bytes the primary never sent), and a
server-chosen value of the same shape that the client later sends back (a numeric
session id): docs/failover.md, "Divergence".
"""
from __future__ import annotations

import zlib

from ftcp.common.config import DIVERGENCE_MODES

STRICT, ALIGNED = DIVERGENCE_MODES

# bytes -> their shape class: digits to "0", a-z to "a", A-Z to "A", others to themselves
_SHAPE = bytes(ord("0") if 48 <= b <= 57 else ord("a") if 97 <= b <= 122 else ord("A") if 65 <= b <= 90 else b
               for b in range(256))


def expectation(mode: str, payload) -> int | bytes:
    """What to remember of a primary segment: its CRC-32 (strict) or its bytes (aligned)."""
    return bytes(payload) if mode == ALIGNED else zlib.crc32(payload)


def differing(expected: int | bytes, got) -> int | None:
    """Compare the replica's output ``got`` (same length as the segment) with an
    expectation: the number of bytes that differ and are tolerated (0 when equal),
    or None when the output is not acceptable."""
    if isinstance(expected, int):
        return 0 if zlib.crc32(got) == expected else None
    got = bytes(got)
    if got == expected:
        return 0
    if got.translate(_SHAPE) != expected.translate(_SHAPE):
        return None
    return sum(a != b for a, b in zip(got, expected))


def settle(expected: int | bytes, buf: bytearray, at: int, n: int) -> int | None:
    """``differing`` for ``buf[at:at + n]``; bytes that differ and are tolerated are
    replaced by the primary's, so ``buf`` then holds what the primary sent."""
    with memoryview(buf) as view:
        count = differing(expected, view[at:at + n])
    if count:
        buf[at:at + n] = expected
    return count

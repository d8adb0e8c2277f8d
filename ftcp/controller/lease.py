"""When a controller that shares its switches with others may act (pure; the clock is
the caller's).

The lease lives in Redis (``ftcp:controller:leader``, with a TTL); the shim asks for it
again every fifth of its length, each ask bounded by a third of it. A controller acts
only while its last successful renewal was *asked* less than ``safe`` of a lease ago, so
it stops before its lease can expire and another controller take it, however late the
answer came back.
"""
from __future__ import annotations

from typing import Optional

SAFE = 0.6        # act only this fraction of a lease after the last renewal was asked
UNKNOWN = "unknown"   # what a renewal whose answer never came is taken as

PROMOTE, DEMOTE, STAY = "promote", "demote", "stay"


class Lease:
    def __init__(self, length: float, safe: float = SAFE, ha: bool = True):
        self.length, self.safe, self.ha = length, safe, ha
        self.renewed = float("-inf")    # when the last successful renewal was asked
        self.generation: Optional[int] = None

    @property
    def interval(self) -> float:
        """How often the lease is asked for."""
        return self.length / 5

    @property
    def timeout(self) -> float:
        """How long one ask may take."""
        return self.length / 3

    def may_act(self, now: float) -> bool:
        return not self.ha or now - self.renewed < self.safe * self.length

    def answered(self, asked: float, held, active: bool, now: float) -> str:
        """The answer to a renewal asked at ``asked``: ``(generation, just taken)`` when
        this controller holds the lease, None when another one does, UNKNOWN when Redis
        did not answer. Says what to do: PROMOTE (take the master role: the lease was
        just taken, or this controller is not acting yet; check ``may_act`` again once
        Redis is re-read), DEMOTE (stop acting) or STAY."""
        if held not in (UNKNOWN, None):
            self.renewed = asked
            self.generation, taken = held
            return PROMOTE if taken or not active else STAY
        if active and (held is None or not self.may_act(now)):
            return DEMOTE
        return STAY

"""What the tracker holds at most, whatever the clients send, and what goes when a bound
is reached.

Anyone on the clients' side can make connection records (a SYN, or a stray segment, is
enough), so every table the tracker keeps is bounded: records in all, past their
handshake per service and per client address, records with no handshake seen
(embryonic: short-lived, never written to Redis or given a replica, the oldest dropped
for a new one), and out-of-order client bytes held. ``Admission`` keeps the counts and
applies the bounds; the tracker owns the tables and the state machine.
"""
from __future__ import annotations

from dataclasses import dataclass

from ftcp.common.statuses import Reason
from ftcp.agent.conn import CLOSED
from ftcp.agent.packet import ip_str

DEFAULT_MAX_OOO = 4 << 20


@dataclass(frozen=True)
class Limits:
    """What the tracker holds at most, whatever the clients send (``ftcp.agent --help``).
    A connection that passes a bound of its own is unprotected with the reason; a new
    record past ``conns`` is not made (counted in ``refused``)."""
    conns: int = 100_000               # connection records in all
    conns_per_service: int = 50_000    # ... of one service past its handshake; past it a new one is unprotected
    conns_per_client: int = 5_000      # ... of one service from one client address, likewise
    embryonic: int = 10_000            # records with no handshake seen (a SYN only, or no SYN at all);
    #                                    past it the oldest is dropped for the new one
    embryonic_timeout: float = 10.0    # such a record idle this long is dropped
    ooo_bytes: int = DEFAULT_MAX_OOO   # out-of-order client bytes held per connection
    ooo_segments: int = 4096           # ... and segments
    ooo_total: int = 64 << 20          # ... and bytes over every connection


class Admission:
    """The tracker's records counted against ``Limits``. ``unprotect(conn, reason)``
    marks a record that passed a bound of its own; ``drop(conn)`` takes an evicted
    record out of the tracker's tables."""

    def __init__(self, limits: Limits, unprotect, drop):
        self.limits = limits
        self._unprotect = unprotect
        self._drop = drop
        self._embryonic = {}   # key -> Conn with no handshake seen, oldest first
        self._per_service = {}  # service -> records counted against Limits.conns_per_service
        self._per_client = {}   # (service, client address) -> ... against Limits.conns_per_client
        self._evicted = []     # dropped before their time (bounds): handed out by take_evicted
        self.refused = 0       # new connections not tracked: `conns` records already
        self.evicted = 0       # embryonic records dropped (for newer ones, or idle)

    # --- records past their handshake --------------------------------------------------
    def admit(self, c):
        """Count a record past its handshake (or one the primary talks on) against its
        service's bound and its client address's. Past a bound it is unprotected and
        not counted: its record stays (within ``conns``) but holds no log and no
        replica."""
        n = self._per_service.get(c.service, 0)
        bound = self.limits.conns_per_service
        if n >= bound:
            self._unprotect(c, Reason.TOO_MANY.because(f"service {c.service} has {bound} connections already"))
            return
        client = (c.service, c.client_ip)
        m = self._per_client.get(client, 0)
        if m >= self.limits.conns_per_client:
            self._unprotect(c, Reason.TOO_MANY.because(
                f"client {ip_str(c.client_ip)} has {self.limits.conns_per_client} connections to {c.service} already"))
            return
        self._per_service[c.service] = n + 1
        self._per_client[client] = m + 1
        c._counted = True

    def release(self, c):
        """A record that leaves (expired, evicted, replaced) no longer counts."""
        if c._counted:
            c._counted = False
            self._per_service[c.service] -= 1
            client = (c.service, c.client_ip)
            if self._per_client[client] == 1:
                del self._per_client[client]     # a client gone leaves nothing behind
            else:
                self._per_client[client] -= 1

    def replaced(self, old) -> None:
        """A record a new one takes the place of, for the same 4-tuple."""
        self.release(old)
        self._embryonic.pop(old.key, None)

    # --- records with no handshake seen ------------------------------------------------
    def embryonic(self, conn) -> bool:
        """No handshake seen for it (yet): not written, not replicated."""
        return self._embryonic.get(conn.key) is conn

    def add_embryonic(self, conn, replaced) -> None:
        """Hold a new record with no handshake seen (``replaced``: the record it takes
        the place of, or None); past the bound the oldest goes."""
        self._embryonic[conn.key] = conn
        if replaced is not None:
            self._evicted.append(replaced)   # so the writer closes what it wrote of it
        if len(self._embryonic) > self.limits.embryonic:
            self.evict(next(iter(self._embryonic.values())))

    def promote(self, c) -> None:
        """Its handshake is seen (or the primary talks on it): no longer embryonic, it
        counts against its service's and its client's bounds."""
        if self._embryonic.pop(c.key, None) is not None:
            self.admit(c)

    def forget(self, c) -> None:
        """A record closed: no longer one of the embryonic ones, if it was."""
        if self._embryonic.get(c.key) is c:
            del self._embryonic[c.key]

    def make_room(self, held: int) -> bool:
        """Is there room for one more record (``held`` are tracked)? At the bound the
        oldest embryonic record goes for it; with none, it is refused (counted)."""
        if held < self.limits.conns:
            return True
        if not self._embryonic:
            self.refused += 1
            return False
        self.evict(next(iter(self._embryonic.values())))
        return True

    def evict(self, c):
        """Forget an embryonic record now (a bound, or its timeout): it was never
        written anywhere, so it just goes (``take_evicted`` hands it out once)."""
        del self._embryonic[c.key]
        self.release(c)
        self._drop(c)
        c.state = CLOSED
        self._evicted.append(c)
        self.evicted += 1

    def evict_idle(self, now: float) -> None:
        """Drop the embryonic records idle ``embryonic_timeout`` seconds."""
        quiet = now - self.limits.embryonic_timeout
        for c in [c for c in self._embryonic.values() if c.last_seen < quiet]:
            self.evict(c)

    def take_evicted(self) -> list:
        """Records dropped before their time since the last call, each once."""
        evicted, self._evicted = self._evicted, []
        return evicted

    # --- out-of-order bytes ----------------------------------------------------------
    def check_held(self, c, total: int) -> None:
        """After ``c`` held more client bytes out of order (``total`` over every
        connection): past a bound it is unprotected."""
        limits = self.limits
        if c._ooo_bytes > limits.ooo_bytes or len(c._ooo) > limits.ooo_segments:
            self._unprotect(c, Reason.OOO_OVERFLOW.because(f"{len(c._ooo)} segments, {c._ooo_bytes} bytes held"))
        elif total > limits.ooo_total:
            self._unprotect(c, Reason.OOO_OVERFLOW.because(f"{total} bytes held over all connections"))

"""Failover decisions per service (pure: events and ``now`` in, actions out).

The order is DESIGN §7, sync before promote:

    fence the primary -> ask the backup to take over (epoch N) -> wait for its
    ready(N) -> redirect both directions -> tell it to go (kick) -> record

An epoch per service makes every message of one failover distinguishable from a
late message of an earlier one: a ready(N-1), a second link-down while one
failover runs, or a ready after the deadline never redirect anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

PROTECTED = "protected"
FENCED = "failing-over"      # fenced, waiting for the backup's ready
FAILED_OVER = "failed-over"  # running on the backup; unprotected until a new backup exists
FAILED = "failover-failed"   # the backup did not take over in time; the service is down


@dataclass(frozen=True)
class Fence:
    service: str


@dataclass(frozen=True)
class RequestTakeover:
    service: str
    backup: str
    epoch: int


@dataclass(frozen=True)
class Redirect:
    service: str
    backup: str


@dataclass(frozen=True)
class Go:
    service: str
    backup: str
    epoch: int


@dataclass(frozen=True)
class Record:
    service: str
    status: str
    epoch: int
    detail: dict = field(default_factory=dict)


@dataclass
class ServiceFailover:
    """One service's failover state. ``epoch`` is the last one used (from Redis)."""

    service: str
    backups: tuple
    epoch: int = 0
    status: str = PROTECTED
    backup: Optional[str] = None
    started: Optional[float] = None
    deadline: Optional[float] = None
    reason: str = ""

    def fail(self, reason: str, now: float, timeout: float = 5.0, backup: Optional[str] = None) -> list:
        """The primary is gone (or is being retired): start a failover unless one runs."""
        if self.status != PROTECTED:
            return []
        backup = backup or (self.backups[0] if self.backups else None)
        if backup is None:
            return [Record(self.service, FAILED, self.epoch, {"reason": f"{reason}; no backup"})]
        self.epoch += 1
        self.status, self.backup, self.started, self.deadline = FENCED, backup, now, now + timeout
        self.reason = reason
        return [Fence(self.service), Record(self.service, FENCED, self.epoch, {"reason": reason, "backup": backup}),
                RequestTakeover(self.service, backup, self.epoch)]

    def ready(self, epoch: int, backup: str, taken: list, failed: dict, now: float) -> list:
        """The backup has its sockets: redirect and let it go."""
        if self.status != FENCED or epoch != self.epoch or backup != self.backup:
            return []  # late, duplicate or foreign: never redirect twice or elsewhere
        self.status = FAILED_OVER
        detail = {"backup": backup, "taken": len(taken), "failed": failed, "reason": self.reason,
                  "takeover_seconds": round(now - self.started, 6)}
        return [Redirect(self.service, backup), Go(self.service, backup, epoch),
                Record(self.service, FAILED_OVER, epoch, detail)]

    def tick(self, now: float) -> list:
        """Give up waiting for the backup after the deadline."""
        if self.status == FENCED and now >= self.deadline:
            self.status = FAILED
            return [Record(self.service, FAILED, self.epoch,
                           {"reason": f"{self.reason}; backup {self.backup} did not take over in time"})]
        return []

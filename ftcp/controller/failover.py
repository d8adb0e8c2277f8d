"""Failover of one service (pure: events and ``now`` in, actions out).

Flows are synced before anything is promoted, and every step that crosses to another
process is an epoch-tagged message resent until it is acknowledged:

    protected --fail(N)-->           failing-over     the fence (and the backup->client
                                                      rewrite) on every switch; after
                                                      their barriers takeover(N) to the
                                                      backup, resent until ready(N) or
                                                      the deadline
    failing-over --ready(N)-->       failed-over      the redirect on every switch; after
                                                      their barriers go(N), resent until
                                                      gone(N)
    failing-over --deadline-->       failover-failed  the redirect as well: the clients'
                                                      segments reach the backup's kernel,
                                                      which resets them (nobody hangs);
                                                      abort(N) resent until aborted(N):
                                                      the agent drops what it prepared
                                                      and resets the rest
    failover-failed --fail(N+1)-->   failing-over     a retry (over REST)
    failed-over --gone(N)-->         protected        when another backup is left to protect
                                                      it: the backup that took over serves,
                                                      the host it took over from stays
                                                      fenced, and the next failure fails
                                                      it over again (re-protection)

Roles, not hosts: ``serving`` is the host serving the service (``PRIMARY`` until a
failover moves it), ``fenced`` the hosts a failover took it from (they stay fenced);
every backup that is neither protects it (gets the mirror and keeps its records).

An epoch per service makes every message of one failover distinguishable from a late
message of an earlier one: a ready(N-1), a second link-down while one failover runs,
or a ready after the deadline never redirect anything. ``step`` says how far the
current epoch got; status, epoch, backup and step are recorded in Redis, and a
controller that starts reads them back (``restored``) and carries on from there.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Optional

from ftcp.common.statuses import PRIMARY, ServiceStatus

# The statuses a failover moves a service through (ftcp/common/statuses.py), by the words
# recorded.
PROTECTED, FAILING_OVER, FAILED_OVER, FAILOVER_FAILED = (ServiceStatus.PROTECTED, ServiceStatus.FAILING_OVER,
                                                         ServiceStatus.FAILED_OVER, ServiceStatus.FAILOVER_FAILED)


@dataclass(frozen=True)
class SyncFlows:
    """Make every switch hold the flows of the service's current state; then call
    ``confirmed(step, epoch)`` once their barriers came back."""
    service: str
    step: str
    epoch: int


@dataclass(frozen=True)
class Order:
    """A control message to the backup's agent (resent by ``tick`` until acknowledged)."""
    service: str
    backup: str
    message: dict


@dataclass(frozen=True)
class Record:
    service: str
    status: str
    epoch: int
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Refused:
    """No failover: no live backup agent to take the connections."""
    service: str
    reason: str




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
    step: str = ""
    timeout: float = 5.0          # fence to ready, and how long an acknowledgement is awaited
    retry: float = 0.25           # a control message is resent this often until acknowledged
    outstanding: Optional[tuple] = None   # (cmd, next send, give up at)
    fid: str = ""                 # this failover's id: with the epoch, names it even if the epoch is reused
    serving: str = PRIMARY        # the host serving (or, failing over, the one it moves from)
    fenced: tuple = ()            # the hosts earlier failovers took the service from

    def protectors(self) -> tuple:
        """The backups that protect the service as it is served now (``backup`` too while
        a failover to it runs: it has the mirror until the redirect)."""
        return tuple(b for b in self.backups if b != self.serving and b not in self.fenced)

    def roles(self) -> dict:
        """What a record says of the roles (Redis and REST)."""
        return {"serving": self.serving, "fenced": list(self.fenced)}

    @classmethod
    def restored(cls, service: str, backups: tuple, record: dict, now: float, **kw):
        """The state a previous controller recorded, and what finishes its failover:
        a fenced service asks its backup again (the agent answers a takeover it already
        prepared with the same ready); a failed-over one whose go was not acknowledged
        re-checks its redirect and sends go again; a failed one its abort."""
        f = cls(service, backups, epoch=_int(record.get("epoch")), **kw)
        f.serving = record.get("serving") or PRIMARY
        f.fenced = tuple(_names(record.get("fenced")))
        status, backup = record.get("status"), record.get("backup") or None
        if status not in (FAILING_OVER, FAILED_OVER, FAILOVER_FAILED) or backup is None:
            return f, []
        f.status, f.backup, f.reason, f.started = status, backup, record.get("reason", ""), now
        f.fid = record.get("failover_id", "")
        if status == FAILING_OVER:
            f.deadline, f.step = now + f.timeout, "fencing"
            return f, [SyncFlows(service, "fenced", f.epoch)]
        done = "done" if status == FAILED_OVER else "aborted"
        if record.get("step") == done:
            f.step = done
            return f, []
        f.step = "redirecting"
        return f, [SyncFlows(service, "redirected", f.epoch)]

    def fail(self, reason: str, now: float, backup: Optional[str] = None,
             alive: Callable[[str], bool] = lambda name: True, retry: bool = False) -> list:
        """The serving host is gone (or is being retired): start a failover to the first
        live protector unless one runs. A failed one is only tried again when asked
        (``retry``, over REST)."""
        if self.status != PROTECTED and not (retry and self.status == FAILOVER_FAILED):
            return []
        if self.status == FAILOVER_FAILED and self.backup in self.backups:
            candidates = [backup] if backup else [self.backup] + [b for b in self.protectors() if b != self.backup]
        else:
            candidates = [backup] if backup else list(self.protectors())
        live = [b for b in candidates if alive(b)]
        if not live:
            why = (f"no live backup agent ({', '.join(candidates)} sent no heartbeat lately)" if candidates
                   else "no backup left to take it" if self.backups else "no backup")
            keeps = "the primary" if self.serving == PRIMARY else self.serving
            return [Refused(self.service, f"{reason}; {why}: {keeps} keeps the service")]
        self.epoch += 1
        self.status, self.backup, self.started, self.deadline = FAILING_OVER, live[0], now, now + self.timeout
        self.reason, self.step, self.outstanding = reason, "fencing", None
        # An epoch whose record never reached Redis is used again by the next controller;
        # the id (when it began) tells the agent it is another failover all the same.
        self.fid = f"{self.epoch}@{now:.6f}"
        return [Record(self.service, FAILING_OVER, self.epoch, {"reason": reason, "backup": self.backup,
                                                               "step": self.step, "failover_id": self.fid,
                                                               **self.roles()}),
                SyncFlows(self.service, "fenced", self.epoch)]

    def confirmed(self, step: str, epoch: int, now: float) -> list:
        """The switches hold the flows of ``step``: send the message that follows."""
        if epoch != self.epoch or self.step != {"fenced": "fencing", "redirected": "redirecting",
                                                "reprotected": "reprotecting"}.get(step):
            return []
        if self.status == PROTECTED:   # re-protected: recorded once the switches hold its flows
            self.step = "reprotected"
            return [Record(self.service, PROTECTED, self.epoch, {"step": self.step, "backup": "", **self.roles()})]
        if self.status == FAILING_OVER:
            self.step = "takeover"
            return self._send("takeover", now, self.deadline)
        if self.status == FAILED_OVER:
            self.step = "go"
            return self._send("go", now, now + self.timeout)
        if self.status == FAILOVER_FAILED:
            self.step = "aborting"
            return self._send("abort", now, now + self.timeout)
        return []

    def reply(self, cmd: str, epoch: int, backup: str, now: float, detail: Optional[dict] = None,
              alive: Callable[[str], bool] = lambda name: True) -> list:
        """An agent's answer: ready, gone or aborted. Anything not for the current
        epoch and backup, or not awaited now, is ignored (it is late or a duplicate)."""
        detail = detail or {}
        if epoch != self.epoch or backup != self.backup or detail.get("id", self.fid) != self.fid:
            return []
        if cmd == "ready" and self.status == FAILING_OVER and self.step == "takeover":
            self.status, self.step, self.outstanding = FAILED_OVER, "redirecting", None
            record = {"backup": backup, "taken": len(detail.get("taken", ())), "failed": detail.get("failed", {}),
                      "reason": self.reason, "takeover_seconds": round(now - self.started, 6), "step": self.step}
            return [Record(self.service, FAILED_OVER, epoch, record),
                    SyncFlows(self.service, "redirected", epoch)]
        if (cmd, self.status, self.step) in (("gone", FAILED_OVER, "go"), ("aborted", FAILOVER_FAILED, "aborting")):
            self.step, self.outstanding = "done" if cmd == "gone" else "aborted", None
            counts = {k: detail[k] for k in ("released", "acknowledged", "reset") if k in detail}
            out = [Record(self.service, self.status, epoch, dict(counts, step=self.step))]
            if cmd == "gone":
                out += self._reprotect(alive)
            return out
        return []

    def _reprotect(self, alive: Callable[[str], bool]) -> list:
        """The failover is done: the backup that took over serves, the host it took over
        from stays fenced; with another live backup left to protect it the service is
        protected again (its flows say so once the switches confirm)."""
        moved_from, to = self.serving, self.backup
        rest = [b for b in self.backups if b not in (moved_from, to) and b not in self.fenced and alive(b)]
        if not rest:
            return []
        self.fenced = self.fenced + (moved_from,)
        self.serving, self.backup, self.status, self.step = to, None, PROTECTED, "reprotecting"
        return [SyncFlows(self.service, "reprotected", self.epoch)]

    def tick(self, now: float) -> list:
        """Give up waiting for ready after the deadline; resend what is unacknowledged."""
        if self.status == FAILING_OVER and now >= self.deadline:
            self.status, self.step, self.outstanding = FAILOVER_FAILED, "redirecting", None
            return [Record(self.service, FAILOVER_FAILED, self.epoch,
                           {"reason": f"{self.reason}; backup {self.backup} did not take over in time",
                            "step": self.step}),
                    SyncFlows(self.service, "redirected", self.epoch)]
        if self.outstanding is None or now < self.outstanding[1]:
            return []
        cmd, _, until = self.outstanding
        if now >= until:
            self.outstanding = None
            self.step = f"{cmd}-unacknowledged"
            return [Record(self.service, self.status, self.epoch,
                           {"step": self.step, "problem": f"{self.backup} never acknowledged {cmd}({self.epoch})"})]
        return self._send(cmd, now, until)

    def _send(self, cmd: str, now: float, until: float) -> list:
        self.outstanding = (cmd, now + self.retry, until)
        return [Order(self.service, self.backup, {"cmd": cmd, "service": self.service, "epoch": self.epoch,
                                                 "id": self.fid})]


def _names(value) -> list:
    """The host names of a record's ``fenced`` (JSON text or a list)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else []
        except ValueError:
            return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0

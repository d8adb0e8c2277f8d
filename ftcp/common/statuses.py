"""The words ftcp writes for where a service and a connection stand, and why a
connection is unprotected: one place for the controller, the agent, the REST API and
the metrics. The values are what Redis, REST and ``/metrics`` show
(docs/redis-schema.md); they are ``str`` so that they compare, serialise and store as
the plain words they are.
"""
from __future__ import annotations

import enum


# The name the roles give the primary host (the services file names none); a service's
# record says which host serves it (``serving``): this one until a failover moves it.
PRIMARY = "primary"


class ServiceStatus(enum.StrEnum):
    """A protected service (``ftcp:svc:<name>`` ``status``; ftcp/controller/failover.py has the
    failover's state machine)."""
    CONFIGURED = "configured"            # recorded; its flows not confirmed on a switch yet
    PROTECTED = "protected"              # flows confirmed (barrier): mirrored to the backups
    UNPROTECTED = "unprotected"          # its ports are not all on the switch (``reason`` says which)
    FAILING_OVER = "failing-over"        # the primary is fenced; waiting for the backup's ready
    FAILED_OVER = "failed-over"          # running on the backup
    FAILOVER_FAILED = "failover-failed"  # the backup did not take over in time; its clients were reset


class ConnStatus(enum.StrEnum):
    """A connection (``ftcp:conn:<id>`` ``status``): once unprotected, never again
    protected."""
    PROTECTED = "protected"
    UNPROTECTED = "unprotected"


class ConnState(enum.StrEnum):
    """Where a connection's TCP stands, as the mirror showed it."""
    SYN_SENT = "syn_sent"
    SYN_RECEIVED = "syn_received"
    ESTABLISHED = "established"
    CLOSING = "closing"
    CLOSED = "closed"


class Reason(enum.Enum):
    """Why a connection is unprotected: the text a reason starts with, and the label
    ``/metrics`` counts it under (``ftcp_unprotected_connections{reason=...}``)."""
    NO_SYN = ("no SYN seen (connection predates capture)", "no_syn")
    CAPTURE_GAP = ("capture gap", "capture_gap")            # a hole in the client's log
    OOO_OVERFLOW = ("reassembly buffer overflow", "reassembly_overflow")
    CONFLICT = ("conflicting copies of client data", "conflicting_copies")
    LOG_CAP = ("log cap", "log_cap")
    TOO_MANY = ("too many connections", "too_many")          # the service's record bound
    REDIS_UNAVAILABLE = ("redis unavailable", "redis")
    REDIS_LOST = ("redis lost", "redis")
    DIVERGED = ("diverged", "diverged")                     # the hot replica's output differed
    TAKEN_OVER = ("taken over", "taken_over")               # served by the backup now, nobody protects it
    AGENT_DOWN = ("agent down", "agent_down")               # the agent keeping the record is not up (REST)

    def __init__(self, text: str, label: str):
        self.text, self.label = text, label

    def because(self, detail: str = "") -> str:
        """The reason as written: its text, then what happened."""
        return f"{self.text}: {detail}" if detail else self.text

    @classmethod
    def label_of(cls, reason: str) -> str:
        """The metric label of a written reason; ``other`` for one that is not ours."""
        return next((r.label for r in cls if reason.startswith(r.text)), "other")

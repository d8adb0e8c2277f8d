"""The Prometheus side of the REST API (pure): metric families from the records the
API read, and the text exposition format. ftcp/api.py reads Redis and calls these."""
from __future__ import annotations

import collections
import math
from typing import Any

from ftcp.statuses import ConnStatus, Reason

# what connection_families reads of each live connection's record
CONN_METRIC_FIELDS = ("status", "reason", "divergent_bytes", "replica")



def connection_families(rows_by_service: dict, statuses: tuple) -> list:
    """The per-service connection families from {service: [connection record]}."""
    conns, unprotected, divergent, replicas = [], [], [], []
    for name, rows in rows_by_service.items():
        by_replica = collections.Counter((row.get("replica") or "none").split(":")[0] for row in rows)
        replicas += [({"service": name, "replica": r}, by_replica[r])
                     for r in sorted({"hot", "cold", "failed"} | set(by_replica))]
        divergent.append(({"service": name}, sum(1 for row in rows if isinstance(row.get("divergent_bytes"), int)
                                                 and row["divergent_bytes"] > 0)))
        by_status = collections.Counter(row.get("status") or "unknown" for row in rows)
        conns += [({"service": name, "status": status}, by_status[status])
                  for status in sorted(set(statuses) | set(by_status))]
        reasons = collections.Counter(reason_class(row.get("reason") or "")
                                      for row in rows if row.get("status") == ConnStatus.UNPROTECTED)
        unprotected += [({"service": name, "reason": r}, n) for r, n in sorted(reasons.items())]
    return [
        ("ftcp_connections", "gauge", "Live connections by service and status.", conns),
        ("ftcp_unprotected_connections", "gauge", "Live unprotected connections by service and reason class.",
         unprotected),
        ("ftcp_connections_by_replica", "gauge", "Live connections by service and the state of their replica "
         "on the backup: hot, cold (replayed at takeover), failed (replayed cold), none (no data yet).", replicas),
        ("ftcp_divergent_connections", "gauge", "Live connections whose hot replica's output differed from "
         "the primary's in a way the service's divergence rule tolerates (aligned).", divergent),
    ]


def agent_families(agents: list, stale_after: float) -> list:
    """The agents' liveness and their own counters, as of their last heartbeats."""
    return [
        ("ftcp_agent_up", "gauge", f"1 if the backup's agent sent a heartbeat in the last {stale_after:g} s.",
         [({"agent": a["name"]}, a["status"] == "up") for a in agents]),
        ("ftcp_agent_heartbeat_age_seconds", "gauge", "Seconds since the agent's last heartbeat.",
         [({"agent": a["name"]}, a["age"]) for a in agents if a["age"] is not None]),
    ] + [(name, kind, help_text, agent_samples(agents, stat)) for name, kind, stat, help_text in AGENT_METRICS]


# (metric, type, heartbeat field, help): the agent's own counters, as of its last heartbeat.
AGENT_METRICS = (
    ("ftcp_bytes_logged_total", "counter", "bytes_logged", "Client->server bytes the agent stored in Redis."),
    ("ftcp_agent_kernel_drops_total", "counter", "kernel_drops",
     "Mirrored packets the kernel dropped before the agent read them (capture gaps)."),
    ("ftcp_agent_packets_total", "counter", "packets", "Mirrored packets the agent tracked."),
    ("ftcp_agent_buffered_bytes", "gauge", "buffered", "Client bytes waiting to be written to Redis."),
    ("ftcp_agent_lost_connections_total", "counter", "lost_conns",
     "Connections that lost protection because their log could not be stored."),
    ("ftcp_agent_bad_checksum_total", "counter", "bad_checksum",
     "Client segments with a wrong TCP checksum, not tracked (the primary's kernel drops them too)."),
    ("ftcp_agent_out_of_window_total", "counter", "out_of_window",
     "Client segments outside what the primary would accept (sequence, RST or ACK), not tracked."),
    ("ftcp_agent_other_host_total", "counter", "other_host",
     "Client segments addressed to another MAC than the primary's, not tracked (its TCP never sees them)."),
    ("ftcp_agent_other_frames_total", "counter", "other_frames",
     "Mirrored frames that are not IPv4/TCP (apart from malformed ones)."),
    ("ftcp_agent_refused_connections_total", "counter", "refused",
     "New connections not tracked: the agent held --max-conns records."),
    ("ftcp_agent_evicted_records_total", "counter", "evicted",
     "Records with no handshake seen, dropped (idle, or for newer ones past --max-embryonic)."),
    ("ftcp_agent_replica_failures_total", "counter", "replica_failures",
     "Hot replicas that failed (connect, I/O, not reading their input); those connections are replayed cold."),
    ("ftcp_agent_unverified_segments_total", "counter", "unverified",
     "Primary segments that could not be compared with the replica's output (it was gone, or too much waited)."),
    ("ftcp_agent_divergent_bytes_total", "counter", "divergent_bytes",
     "Bytes of the primaries' output that hot replicas produced differently, tolerated (divergence: aligned)."),
)


def reason_class(reason: str) -> str:
    """A metric label for an unprotected connection's reason."""
    return Reason.label_of(reason)


def agent_samples(agents: list, stat: str, **labels) -> list:
    """One sample per agent whose heartbeat carries the counter ``stat``."""
    return [(dict(labels, agent=a["name"]), a["stats"][stat]) for a in agents
            if isinstance(a["stats"].get(stat), int)]


def exposition(families) -> str:
    """Prometheus text format 0.0.4 from [(name, type, help, [(labels, value)])]."""
    lines = []
    for name, kind, help_text, samples in families:
        lines += [f"# HELP {name} {_escape(help_text)}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            pairs = ",".join(f'{k}="{_escape(v, quote=True)}"' for k, v in labels.items())
            lines.append(f"{name}{{{pairs}}} {_number(value)}" if pairs else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape(text: Any, quote: bool = False) -> str:
    text = str(text).replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(int(value))

"""What /metrics exposes (pure): the metric families, built from values the API read,
and their exposition through prometheus_client.

ftcp/api/routes.py reads Redis (through the Store) and the controller (through its adapter)
at each scrape and hands the values to the ``*_families`` functions here; the
``Families`` collector yields what they return, in a private ``CollectorRegistry``,
and ``render`` writes the Prometheus text format with ``generate_latest``. Nothing
here does I/O, and nothing imports Ryu, eventlet or Redis.

Counter names are written with their ``_total`` suffix, as they are exposed;
prometheus_client keeps a counter family's name without it and adds it back when it
renders. docs/grafana-dashboard.json graphs these families (tests/unit/test_metrics.py
checks it uses only names that are exposed).
"""
from __future__ import annotations

import collections
from typing import Callable, Iterable

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ftcp.common.statuses import ConnStatus, Reason, ServiceStatus

# What ``generate_latest`` writes (text format 0.0.4, legacy names). CONTENT_TYPE_LATEST
# announces version 1.0.0, which prometheus_client itself sends only to a scraper that
# asked for it; /metrics does not negotiate.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# what connection_families reads of each live connection's record
CONN_METRIC_FIELDS = ("status", "reason", "divergent_bytes", "replica")

FAILOVER_OUTCOMES = (ServiceStatus.FAILED_OVER, ServiceStatus.FAILOVER_FAILED)
PROBE_RESULTS = ("alive", "rst", "timeout")


class Families(Collector):
    """A custom collector: at each collect, the families ``gather`` returns now."""

    def __init__(self, gather: Callable[[], Iterable[Metric]]):
        self._gather = gather

    def collect(self) -> Iterable[Metric]:
        yield from self._gather()


def registry(gather: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    """A private registry (not prometheus_client's global one) holding one ``Families``."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Families(gather))
    return reg


def render(reg: CollectorRegistry) -> str:
    """The text exposition of everything ``reg`` collects now (served as ``CONTENT_TYPE``)."""
    return generate_latest(reg).decode("utf-8")


def family(name: str, kind: str, help_text: str, samples: Iterable) -> Metric:
    """A metric family from [(labels, value)]. Samples of one family may carry different
    label sets (ftcp_redis_errors_total: an agent's carry ``agent`` too)."""
    if kind == "counter":
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total: that is the name it is exposed under")
        metric = CounterMetricFamily(name, help_text)
    elif kind == "gauge":
        metric = GaugeMetricFamily(name, help_text)
    else:
        raise ValueError(f"{name}: no {kind} metrics here")
    for labels, value in samples:
        metric.add_sample(name, {k: str(v) for k, v in labels.items()}, float(value))
    return metric


def controller_families(uptime: float, counts: dict) -> list:
    """The controller's own families; ``counts`` is ``Controller.counters()`` (ftcp/api/routes.py)."""
    probes = counts.get("probes", {})
    return [
        family("ftcp_controller_uptime_seconds", "gauge", "Seconds since the controller's REST API started.",
               [({}, uptime)]),
        family("ftcp_failovers_total", "counter", "Failovers and planned migrations, by outcome.",
               [({"outcome": o}, counts.get("failovers", {}).get(o, 0)) for o in FAILOVER_OUTCOMES]),
        family("ftcp_failover_takeover_seconds", "gauge",
               "Fence to backup-ready time of the last failover, as the controller saw it.",
               [({}, counts.get("last_takeover_seconds", 0.0))]),
        family("ftcp_probes_total", "counter", "Service probes by result (alive, rst, timeout).",
               [({"result": r}, probes.get(r, 0)) for r in PROBE_RESULTS]),
        family("ftcp_held_fin_rst_total", "counter", "Server FIN/RST segments held by the controller.",
               [({}, probes.get("held", 0))]),
        family("ftcp_released_fin_rst_total", "counter", "Held FIN/RST segments released after a live probe.",
               [({}, probes.get("released", 0))]),
    ]


def redis_families(up: bool, api_errors: int, controller_errors: int, agents: list) -> list:
    """Whether Redis answered this scrape, and the failed Redis calls of each component."""
    return [
        family("ftcp_redis_up", "gauge", "1 if Redis answered this scrape.", [({}, up)]),
        family("ftcp_redis_errors_total", "counter",
               "Failed Redis calls by component (an agent's as of its last heartbeat).",
               [({"component": "api"}, api_errors), ({"component": "controller"}, controller_errors)]
               + agent_samples(agents, "redis_errors", component="agent")),
    ]


def service_families(statuses: collections.Counter) -> list:
    """The configured services by the status their Redis record gives."""
    return [family("ftcp_services", "gauge", "Configured services by status.",
                   [({"status": s}, n) for s, n in sorted(statuses.items())])]


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
        family("ftcp_connections", "gauge", "Live connections by service and status.", conns),
        family("ftcp_unprotected_connections", "gauge", "Live unprotected connections by service and reason class.",
               unprotected),
        family("ftcp_connections_by_replica", "gauge", "Live connections by service and the state of their replica "
               "on the backup: hot, cold (replayed at takeover), failed (replayed cold), none (no data yet).",
               replicas),
        family("ftcp_divergent_connections", "gauge", "Live connections whose hot replica's output differed from "
               "the primary's in a way the service's divergence rule tolerates (aligned).", divergent),
    ]


def agent_families(agents: list, stale_after: float) -> list:
    """The agents' liveness and their own counters, as of their last heartbeats."""
    return [
        family("ftcp_agent_up", "gauge", f"1 if the backup's agent sent a heartbeat in the last {stale_after:g} s.",
               [({"agent": a["name"]}, a["status"] == "up") for a in agents]),
        family("ftcp_agent_heartbeat_age_seconds", "gauge", "Seconds since the agent's last heartbeat.",
               [({"agent": a["name"]}, a["age"]) for a in agents if a["age"] is not None]),
    ] + [family(name, kind, help_text, agent_samples(agents, stat))
         for name, kind, stat, help_text in AGENT_METRICS]


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

"""The REST API without Ryu: routes, authorization and the resources; parsed request
in, (status, body, content type) out.

ryu_apps/ftcp_rest.py maps HTTP onto ``Api.handle``. A request is judged in full
(ftcp/api/validation.py: query parameters, bodies, ids) before anything changes; then the
app (through the small ``AppAdapter`` the Ryu app implements) and the store are
asked, and every failure becomes a status code in one place, ``Api.handle``, the way
ryu's ofctl_rest does it with a decorator. The API is written down in
docs/openapi.yaml; the Prometheus families are ftcp/api/metrics.py.

This module is long because every resource's handler sits next to the others, so the
answers and their status codes read as one API.
"""
from __future__ import annotations

import abc
import collections
import hmac
import json
import logging
import re
import time
from typing import Callable, Optional

from ftcp.api import metrics
from ftcp.api.validation import ApiError, Request, action_body, client_filter, integer, json_body, query, service_name
from ftcp.api.validation import conn_id as valid_conn_id
from ftcp.common.config import Config, ConfigError, Service, parse_service, redact_url, with_service
from ftcp.common.schema import decode_event
from ftcp.common.statuses import ConnStatus, PRIMARY, Reason, ServiceStatus
from ftcp.common.errors import StoreError

LOG = logging.getLogger(__name__)

JSON = "application/json"
PROMETHEUS = metrics.CONTENT_TYPE
AGENT_STALE_AFTER = 3.0          # seconds without a heartbeat (agents beat every second)
CONN_STATUSES = tuple(ConnStatus)
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
MUTATING = frozenset({"PUT", "POST", "DELETE"})
TOKEN_HELP = "set [ftcp] api_token in ryu.conf or FTCP_API_TOKEN, and restart ryu-manager"

# A connection's raw sequence and timestamp values: served only with the token.
SEQUENCE_FIELDS = ("isn_c", "isn_s", "c2s_next", "s2c_next", "c_ack", "s_ack", "c_tsval", "c_tsecr", "s_tsval",
                   "s_tsecr", "fin_c_seq", "fin_s_seq")
# route name -> {HTTP method: handler}; ryu_apps/ftcp_rest.py maps paths to route names.
# Every resource once: its path (what the Ryu shim serves, ryu_apps/ftcp_rest.py) and
# the handler of each method it takes.
ROUTES = {
    "services": ("/ftcp/services", {"GET": "_list_services"}),
    "service": ("/ftcp/services/{name}", {"GET": "_get_service", "PUT": "_put_service", "DELETE": "_delete_service"}),
    "failover": ("/ftcp/services/{name}/failover", {"POST": "_failover"}),
    "migrate": ("/ftcp/services/{name}/migrate", {"POST": "_migrate"}),
    "connections": ("/ftcp/connections", {"GET": "_list_connections"}),
    "connection": ("/ftcp/connections/{id}", {"GET": "_get_connection"}),
    "health": ("/ftcp/health", {"GET": "_health"}),
    "events": ("/ftcp/events", {"GET": "_events"}),
    "metrics": ("/metrics", {"GET": "_metrics"}),
}

CONN_SUMMARY_FIELDS = ("id", "service", "client_ip", "client_port", "server_ip", "server_port", "state", "status",
                       "reason", "c2s_logged", "s2c_acked", "first_seen", "last_seen", "closed_at")

class AppAdapter(abc.ABC):
    """What the Ryu app gives the API. Methods are called from the WSGI green thread."""

    @abc.abstractmethod
    def config(self) -> Config:
        """The services in force now."""

    @abc.abstractmethod
    def apply_service(self, service: Service) -> None:
        """Create or replace ``service``: make it part of config(), install its flows on
        the connected switches and record it in Redis. The API has already checked that
        it fits the current config; raising ConfigError means nothing was applied."""

    @abc.abstractmethod
    def remove_service(self, name: str) -> None:
        """Remove a configured service: its flows, its Redis record, and from config()."""

    @abc.abstractmethod
    def switches(self) -> list:
        """Connected switches: [{"dpid": "0000000000000001", "address": "127.0.0.1:40000",
        "connected_since": <unix time>}]."""

    @abc.abstractmethod
    def failover(self, name: str, backup: str) -> dict:
        """Fail ``name`` over to ``backup`` now; returns the service's state after it.
        Raises ApiError(409) when the service cannot fail over now."""

    @abc.abstractmethod
    def migrate(self, name: str) -> dict:
        """Planned migration of every live connection of ``name`` to its first live
        backup, as ``failover``."""

    def redis_errors(self) -> int:
        """Failed Redis writes of the controller so far (for /metrics)."""
        return 0

    def counters(self) -> dict:
        """For /metrics: {"probes": {"alive", "rst", "timeout", "held", "released"},
        "failovers": {final status: count}, "last_takeover_seconds": float}."""
        return {"probes": {}, "failovers": {}, "last_takeover_seconds": 0.0}


class Api:
    def __init__(self, store, controller: AppAdapter, token: Optional[str], clock: Callable[[], float] = time.time):
        self.store = store
        self.controller = controller
        self._token = (token or "").encode()
        self.clock = clock
        self.started = clock()
        self.redis_errors = 0
        self._metrics_registry = metrics.registry(self._metric_families)

    @property
    def mutations_enabled(self) -> bool:
        """False without a token: then state-changing calls are refused (403)."""
        return bool(self._token)

    @staticmethod
    def methods(route: str) -> list:
        """The HTTP methods a route answers (for an Allow header)."""
        return sorted(ROUTES[route][1] if route in ROUTES else {})

    def handle(self, route: str, req: Request) -> tuple:
        """(status, body, content type): body is a dict for JSON, text for /metrics."""
        try:
            if route not in ROUTES:
                raise ApiError(404, "no such resource")
            handlers = ROUTES[route][1]
            handler = handlers.get(req.method)
            if handler is None:
                raise ApiError(405, f"{req.method} is not allowed here; allowed: {', '.join(self.methods(route))}")
            if req.method in MUTATING:
                self._authorize(req.authorization)
            status, body = getattr(self, handler)(req)
            return status, body, PROMETHEUS if isinstance(body, str) and status == 200 else JSON
        except ApiError as e:
            return e.status, {"error": e.message, "field": e.field}, JSON
        except ConfigError as e:
            return 400, {"error": str(e), "field": e.field}, JSON
        except StoreError as e:
            self._redis_failed(e)
            return 503, {"error": f"redis unavailable: {e}", "field": None}, JSON
        except Exception:
            # A bug: logged with its traceback, and the controller keeps serving.
            LOG.exception("ftcp REST: %s %s failed", req.method, route)
            return 500, {"error": "internal error; the controller log has the details", "field": None}, JSON

    # --- checks ------------------------------------------------------------------------

    def _authorized(self, header: Optional[str]) -> bool:
        try:
            self._authorize(header)
            return True
        except ApiError:
            return False

    def _authorize(self, header: Optional[str]) -> None:
        if not self._token:
            raise ApiError(403, f"state-changing calls are disabled: no API token is configured; {TOKEN_HELP}",
                           "Authorization")
        scheme, _, given = (header or "").strip().partition(" ")
        # compare_digest: the time taken says nothing about how much of the token matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise ApiError(401, "a valid bearer token is required (Authorization: Bearer <token>)", "Authorization")

    def _redis_failed(self, error: StoreError) -> None:
        self.redis_errors += 1
        LOG.warning("ftcp REST: %s", error)

    def _service(self, name: str) -> Service:
        service = self.controller.config().service(name)
        if service is None:
            raise ApiError(404, f"no service named {name!r}", "name")
        return service

    # --- services --------------------------------------------------------------------------

    def _list_services(self, req):
        query(req, ())
        conf = self.controller.config()
        down = self._down(self._agents(conf, self.clock()))     # read once for every service
        return 200, {"services": [self._service_view(s, down=down) for s in conf.services]}

    def _get_service(self, req):
        query(req, ())
        return 200, self._service_view(self._service(req.params["name"]))

    def _put_service(self, req):
        query(req, ())
        name = req.params["name"]
        service_name(name)
        data = json_body(req.body)
        if isinstance(data, dict):
            given = data.get("name")
            if given is None:
                data = dict(data, name=name)
            elif isinstance(given, str) and given != name:
                raise ApiError(400, f"must be the name in the path ({name!r}) or be omitted, got {given!r}",
                               "service.name")
        service = parse_service(data, "service")
        conf = self.controller.config()
        self._check_fits(conf, service)
        existed = conf.service(name) is not None
        self.controller.apply_service(service)
        LOG.info("ftcp REST: service %s %s (%s)", name, "replaced" if existed else "created", service.key)
        try:
            view = self._service_view(service)
        except StoreError as e:
            # Applied: only the Redis part of the answer is missing.
            self._redis_failed(e)
            view = self._service_view(service, redis=False)
        return (200 if existed else 201), view

    @staticmethod
    def _check_fits(conf: Config, service: Service) -> None:
        """Reject a service that clashes with another (name, address:port, cookie),
        naming the other one instead of its index in a services list."""
        try:
            with_service(conf, service)
        except ConfigError as e:
            names = [s.name for s in conf.services if s.name != service.name] + [service.name]
            problem = re.sub(r"services\[(\d+)\]", lambda m: f"service {names[int(m.group(1))]!r}", e.problem)
            raise ConfigError(re.sub(r"^services\[\d+\]", "service", e.field), problem) from None

    def _delete_service(self, req):
        query(req, ())
        service = self._service(req.params["name"])
        self.controller.remove_service(service.name)
        LOG.info("ftcp REST: service %s deleted", service.name)
        return 204, ""

    def _failover(self, req):
        query(req, ())
        service = self._service(req.params["name"])
        backup = action_body(req, required=("backup",))["backup"]
        names = [b.name for b in service.backups]
        if backup not in names:
            raise ApiError(400, f"{backup!r} is not a backup of {service.name} (backups: {', '.join(names)})",
                           "backup")
        return 200, self.controller.failover(service.name, backup)

    def _migrate(self, req):
        query(req, ())
        service = self._service(req.params["name"])
        action_body(req, required=())
        return 200, self.controller.migrate(service.name)

    def _service_view(self, service: Service, redis: bool = True, down: Optional[dict] = None) -> dict:
        """The service as configured, and from Redis its status and live connections
        (``down``: the agents not up, when the caller read them already)."""
        record = (self.store.service_state(service.name) or {}) if redis else {}
        if redis and down is None:
            down = self._down(self._agents(self.controller.config(), self.clock()))
        view = service.to_dict()
        view.update(
            status=record.get("status") or (ServiceStatus.CONFIGURED if redis else "unknown"),
            reason=record.get("reason") or "",
            epoch=record.get("epoch") or 0,
            dpid=record.get("dpid") or None,
            flows=record.get("flows"),
            updated=record.get("updated"),
            connections=self._conn_counts(service.name, {service.name: _role_of(record, down)}) if redis else None,
            serving=record.get("serving") or PRIMARY,
            fenced=_fenced(record.get("fenced")),
        )
        return view

    def _live_conns(self, name: str, fields: tuple, roles: Optional[dict] = None) -> dict:
        """{(host, id): row} of the service's live connections, over every host that
        keeps records of it (its backups), each row with its roles (``_roles``; the
        service's, from ``_service_roles``, unless the caller has them)."""
        service = self.controller.config().service(name)
        roles = roles if roles is not None else self._service_roles({name})
        out = {}
        for host in ([b.name for b in service.backups] if service else []):
            rows = self.store.conn_fields(host, self.store.service_conns(name, host), tuple(fields) + ROLE_FIELDS)
            out.update({(host, cid): _roles(host, row, roles) for cid, row in rows.items()})
        return out

    def _service_roles(self, names) -> dict:
        """{service: (the host serving it now, the hosts no longer serving or
        protecting it, {backup: its agent's status} for the agents not up)} from the
        services' records and the agents' heartbeats."""
        conf = self.controller.config()
        names = set(names) & {s.name for s in conf.services}
        down = self._down(self._agents(conf, self.clock())) if names else {}
        return {name: _role_of(self.store.service_state(name) or {}, down) for name in names}

    @staticmethod
    def _down(agents: list) -> dict:
        """{backup: its agent's status} of the agents that are not up."""
        return {a["name"]: a["status"] for a in agents if a["status"] != "up"}

    def _conn_counts(self, name: str, roles: dict) -> dict:
        counts = dict.fromkeys(CONN_STATUSES, 0)
        for row in self._live_conns(name, ("status",), roles).values():
            status = row.get("status") or "unknown"
            counts[status] = counts.get(status, 0) + 1
        counts["total"] = sum(counts.values())
        return counts

    # --- connections -------------------------------------------------------------------

    def _list_connections(self, req):
        q = query(req, ("service", "status", "client", "limit", "offset"))
        limit = integer(q, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = integer(q, "offset", 0, 0, 10**9)
        service, status, client = q.get("service"), q.get("status"), q.get("client")
        if service is not None and self.controller.config().service(service) is None:
            raise ApiError(404, f"no service named {service!r}", "service")
        if status is not None and status not in CONN_STATUSES:
            raise ApiError(400, f"must be one of {', '.join(CONN_STATUSES)}, got {status!r}", "status")
        want_client = client_filter(client) if client is not None else None
        by_host = collections.defaultdict(list)
        for host, cid in self.store.conn_ids():
            by_host[host].append(cid)
        rows = {(host, cid): row for host, ids in by_host.items()
                for cid, row in self.store.conn_fields(host, ids, CONN_SUMMARY_FIELDS).items()}
        roles = self._service_roles({row.get("service") for row in rows.values()})
        views = [dict(_roles(host, row, roles), id=cid) for (host, cid), row in rows.items()]
        chosen = [row for row in views
                  if (service is None or row.get("service") == service)
                  and (status is None or row.get("status") == status)
                  and (want_client is None or want_client(row))]
        chosen.sort(key=lambda row: (str(row.get("service")), row["id"], row["recorded_by"]))
        return 200, {"connections": chosen[offset:offset + limit], "total": len(chosen), "limit": limit,
                     "offset": offset}

    def _get_connection(self, req):
        query(req, ())
        conn_id = valid_conn_id(req.params["id"])
        # the record of the first host, in the service's order, that keeps one
        host, state = next(((h, st) for h in self._hosts_of(conn_id)
                            if (st := self.store.conn_state(h, conn_id)) is not None), (None, None))
        if state is None:
            raise ApiError(404, f"no connection {conn_id} (closed connections are kept a few minutes)", "id")
        state = dict(_roles(host, state, self._service_roles({state.get("service")})), id=conn_id)
        state["log_bytes"] = self.store.log_lengths(host, [conn_id]).get(conn_id, 0)
        if not self._authorized(req.authorization):
            # with these anyone could forge a segment the primary would take
            for name in SEQUENCE_FIELDS:
                state.pop(name, None)
        return 200, state

    # --- health, events, metrics --------------------------------------------------------------

    def _health(self, req):
        query(req, ())
        now = self.clock()
        conf = self.controller.config()
        degraded = []
        try:
            switches = list(self.controller.switches())
        except Exception:
            LOG.exception("ftcp REST: the controller could not list its switches")
            switches = []
        if conf.services and not switches:
            degraded.append("no switch connected")
        redis = self._redis_health()
        agents = self._agents(conf, now) if redis["status"] == "up" else \
            [{"name": name, "status": "unknown", "heartbeat": None, "age": None, "stats": {}}
             for name in _backup_names(conf)]
        if redis["status"] != "up":
            degraded.append("redis down")
        degraded += [f"agent {a['name']} {a['status']}" for a in agents if a["status"] not in ("up", "unknown")]
        return 200, {
            "status": "degraded" if degraded else "ok",
            "problems": degraded,
            "time": now,
            "controller": {"status": "up", "started": self.started, "uptime": now - self.started},
            "switches": switches,
            "redis": redis,
            "agents": agents,
        }

    def _redis_health(self) -> dict:
        url = redact_url(getattr(self.store, "url", ""))
        try:
            self.store.ping()
        except StoreError as e:
            self._redis_failed(e)
            return {"status": "down", "url": url, "error": str(e)}
        return {"status": "up", "url": url, "error": None}

    def _agents(self, conf: Config, now: float) -> list:
        """Each backup's agent, from its heartbeat record."""
        agents = []
        for name in _backup_names(conf):
            beat = self.store.agent_state(name)
            if beat is None:
                agents.append({"name": name, "status": "missing", "heartbeat": None, "age": None, "stats": {}})
                continue
            last = beat.get("heartbeat")
            age = now - last if isinstance(last, float) else None
            if beat.get("stopped"):
                status = "stopped"
            elif age is None or age > AGENT_STALE_AFTER:
                status = "stale"
            else:
                status = "up"
            stats = {k: v for k, v in beat.items() if k not in ("heartbeat", "stopped")}
            agents.append({"name": name, "status": status, "heartbeat": last, "age": age, "stats": stats})
        return agents

    def _events(self, req):
        q = query(req, ("limit",))
        limit = integer(q, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        return 200, {"events": [dict(decode_event(record), id=event_id)
                                for event_id, record in self.store.recent_events(limit)]}

    def _metrics(self, req):
        query(req, ())
        return 200, metrics.render(self._metrics_registry)

    def _metric_families(self) -> list:
        """What /metrics exposes now: the collector in ftcp/api/metrics.py calls this at each scrape.
        Without Redis the controller's families are still there, with ftcp_redis_up 0."""
        now = self.clock()
        conf = self.controller.config()
        from_redis, agents = [], []
        redis_up = self._redis_health()["status"] == "up"
        if redis_up:
            try:
                from_redis, agents = self._redis_families(conf, now)
            except StoreError as e:
                self._redis_failed(e)
                redis_up = False
        return (metrics.controller_families(now - self.started, self.controller.counters())
                + metrics.redis_families(redis_up, self.redis_errors, self.controller.redis_errors(), agents)
                + from_redis)

    def _redis_families(self, conf: Config, now: float) -> tuple:
        """The metric families read from Redis, and the agents' records."""
        services, rows = collections.Counter(), {}
        agents = self._agents(conf, now)
        down = self._down(agents)
        for service in conf.services:
            record = self.store.service_state(service.name) or {}
            services[record.get("status") or ServiceStatus.CONFIGURED] += 1
            roles = {service.name: _role_of(record, down)}
            rows[service.name] = list(self._live_conns(service.name, metrics.CONN_METRIC_FIELDS, roles).values())
        families = metrics.service_families(services)
        families += metrics.connection_families(rows, CONN_STATUSES)
        families += metrics.agent_families(agents, AGENT_STALE_AFTER)
        return families, agents


    def _hosts_of(self, conn_id: str) -> list:
        """The hosts that may keep a record of this connection: the backups of the
        service at its server address (every backup if none is)."""
        server = conn_id.rsplit("-", 1)[1]
        conf = self.controller.config()
        for service in conf.services:
            if service.key == server:
                return [b.name for b in service.backups]
        return _backup_names(conf)


# What a record's roles are read from (the API adds them; they are not stored).
ROLE_FIELDS = ("service", "status", "reason")
MOVED = (ServiceStatus.FAILING_OVER, ServiceStatus.FAILED_OVER, ServiceStatus.FAILOVER_FAILED)


def _role_of(record: dict, down: dict) -> tuple:
    """(the host serving the service now, the hosts no longer serving or protecting it,
    the agents not up) from the service's record."""
    serving, fenced = record.get("serving") or PRIMARY, list(_fenced(record.get("fenced")))
    if record.get("status") in MOVED and record.get("backup"):
        serving, fenced = record["backup"], fenced + [record.get("serving") or PRIMARY]
    return serving, fenced, down


def _roles(host: str, row: dict, roles: dict) -> dict:
    """The record ``host``'s agent keeps, with who keeps, serves and protects the
    connection. A connection it took over it serves, and nobody protects. A host the
    service moved away from (fenced, or serving it now) gets nothing of it any more, and
    a host whose agent is not up logs nothing: such a record is reported unprotected
    though its agent could not say so. Else the record is a protector's: it protects
    while it says protected."""
    serving, fenced, down = roles.get(row.get("service"), (PRIMARY, [], {}))
    out = dict(row, recorded_by=host)
    if str(row.get("reason") or "").startswith(Reason.TAKEN_OVER.text):
        return dict(out, serving=host, protector=None)
    out["serving"] = serving
    why = (f"{serving} serves it now and no host protects it" if host == serving or host in fenced
           else Reason.AGENT_DOWN.because(f"the agent on {host} is {down[host]}: nothing logs it")
           if host in down else None)
    if why is not None:
        if out.get("status") == ConnStatus.PROTECTED:
            out.update(status=ConnStatus.UNPROTECTED, reason=Reason.TAKEN_OVER.because(why)
                       if host == serving or host in fenced else why)
        return dict(out, protector=None)
    return dict(out, protector=host if row.get("status") == ConnStatus.PROTECTED else None)


def _fenced(value) -> list:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    try:
        return _fenced(json.loads(value)) if isinstance(value, str) and value else []
    except ValueError:
        return []


def _backup_names(conf: Config) -> list:
    return sorted({b.name for s in conf.services for b in s.backups})

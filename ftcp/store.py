"""The only module that talks to Redis. Schema: docs/redis-schema.md.

Every call is short and bounded by socket timeouts; callers that run inside Ryu's
event handlers hand work to a green thread so a slow Redis never stalls OpenFlow.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Optional

import redis

from ftcp.config import Service, redact_url

PREFIX = "ftcp"
EVENTS = f"{PREFIX}:events"          # capped stream + pub/sub channel of the same name
SERVICES = f"{PREFIX}:services"      # set of configured service names
EVENTS_MAXLEN = 10000


def svc_key(name: str) -> str:
    return f"{PREFIX}:svc:{name}"


def svc_conns_key(name: str) -> str:
    return f"{PREFIX}:svc:{name}:conns"


def conn_key(conn_id: str) -> str:
    return f"{PREFIX}:conn:{conn_id}"


def conn_log_key(conn_id: str) -> str:
    return f"{PREFIX}:conn:{conn_id}:c2s"


def agent_key(name: str) -> str:
    return f"{PREFIX}:agent:{name}"


class StoreError(RuntimeError):
    """Redis could not be reached or answered with an error."""


class Store:
    def __init__(self, url: str, clock: Callable[[], float] = time.time, timeout: float = 2.0):
        self.url = url
        self.clock = clock
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True,
        )
        # The client->server logs are bytes: a second client that does not decode.
        self._raw = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def __repr__(self) -> str:
        return f"Store({redact_url(self.url)})"

    def _do(self, fn, raw=False):
        try:
            return fn(self._raw if raw else self._redis)
        except (redis.RedisError, OSError) as e:
            raise StoreError(f"redis at {redact_url(self.url)}: {e}") from None

    def ping(self) -> bool:
        return bool(self._do(lambda r: r.ping()))

    # --- services -------------------------------------------------------------

    def save_service(self, service: Service, status: str, **extra) -> None:
        """Record a service's config and status; its epoch is kept if it exists."""
        fields = {
            "svc_ip": service.address,
            "svc_port": service.port,
            "primary": json.dumps({"port": str(service.primary.port), "mac": service.primary.mac}),
            "backups": json.dumps([
                {"name": b.name, "address": b.address, "data_port": str(b.data_port),
                 "mirror_port": str(b.mirror_port), "mac": b.mac} for b in service.backups]),
            "status": status,
            "updated": f"{self.clock():.6f}",
        }
        fields.update({k: str(v) for k, v in extra.items()})

        def write(r):
            pipe = r.pipeline(transaction=True)
            pipe.hset(svc_key(service.name), mapping=fields)
            pipe.hsetnx(svc_key(service.name), "epoch", 0)
            pipe.sadd(SERVICES, service.name)
            pipe.execute()
        self._do(write)

    def service(self, name: str) -> Optional[dict]:
        return self._do(lambda r: r.hgetall(svc_key(name))) or None

    def service_names(self) -> set:
        return self._do(lambda r: r.smembers(SERVICES))

    # --- events ---------------------------------------------------------------

    def event(self, kind: str, **fields) -> str:
        """Append to the capped event stream and publish the same record."""
        record = {"kind": kind, "time": f"{self.clock():.6f}"}
        record.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()})

        def write(r):
            pipe = r.pipeline(transaction=False)
            pipe.xadd(EVENTS, record, maxlen=EVENTS_MAXLEN, approximate=True)
            pipe.publish(EVENTS, json.dumps(record))
            return pipe.execute()[0]
        return self._do(write)

    def events(self, after: str = "0", block_ms: Optional[int] = None, count: int = 1000) -> list:
        """[(id, record)] after the given stream id; blocks up to block_ms if given."""
        resp = self._do(lambda r: r.xread({EVENTS: after}, count=count, block=block_ms))
        return resp[0][1] if resp else []

    def last_event_id(self) -> str:
        last = self._do(lambda r: r.xrevrange(EVENTS, count=1))
        return last[0][0] if last else "0"

    # --- connections (written by the backup agent) -------------------------------

    def write_conns(self, writes, agent: Optional[dict] = None, agent_name: str = "",
                    events=(), closed_ttl: int = 300) -> None:
        """Apply a batch of ConnWrite atomically (MULTI/EXEC): all of it or none.

        Atomicity is what makes a retry after an error exact: ``log_lengths`` then
        tells how much of each log is really stored.
        """
        def write(r):
            pipe = r.pipeline(transaction=True)
            for w in writes:
                key, log_key = conn_key(w.conn_id), conn_log_key(w.conn_id)
                if w.reset:
                    pipe.delete(key, log_key)
                if w.data:
                    pipe.append(log_key, w.data)
                pipe.hset(key, mapping=w.state)
                if w.closed:
                    pipe.srem(svc_conns_key(w.service), w.conn_id)
                    pipe.expire(key, closed_ttl)
                    pipe.expire(log_key, closed_ttl)
                else:
                    pipe.sadd(svc_conns_key(w.service), w.conn_id)
            if agent is not None:
                pipe.hset(agent_key(agent_name), mapping=agent)
            for record in events:
                pipe.xadd(EVENTS, record, maxlen=EVENTS_MAXLEN, approximate=True)
                pipe.publish(EVENTS, json.dumps(record))
            pipe.execute()
        self._do(write, raw=True)

    def log_lengths(self, conn_ids) -> dict:
        """Bytes stored in each connection's client->server log."""
        ids = list(conn_ids)

        def read(r):
            pipe = r.pipeline(transaction=False)
            for cid in ids:
                pipe.strlen(conn_log_key(cid))
            return dict(zip(ids, pipe.execute()))
        return self._do(read)

    def conn(self, conn_id: str) -> Optional[dict]:
        return self._do(lambda r: r.hgetall(conn_key(conn_id))) or None

    def conn_log(self, conn_id: str, start: int = 0, end: int = -1) -> bytes:
        return self._do(lambda r: r.getrange(conn_log_key(conn_id), start, end), raw=True)

    def service_conns(self, name: str) -> set:
        return self._do(lambda r: r.smembers(svc_conns_key(name)))

    def agent(self, name: str) -> Optional[dict]:
        return self._do(lambda r: r.hgetall(agent_key(name))) or None

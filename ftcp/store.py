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


class StoreError(RuntimeError):
    """Redis could not be reached or answered with an error."""


class Store:
    def __init__(self, url: str, clock: Callable[[], float] = time.time, timeout: float = 2.0):
        self.url = url
        self.clock = clock
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True,
        )

    def __repr__(self) -> str:
        return f"Store({redact_url(self.url)})"

    def _do(self, fn):
        try:
            return fn(self._redis)
        except redis.RedisError as e:
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

"""Buffer between the controller and Redis: nothing the app decides waits on Redis.

Service records are kept latest-wins per service; events in a bounded FIFO. ``flush``
writes what it can and keeps the rest for the next try, so a Redis outage loses at
most the oldest events past the bound (and says so), never a service's status.
"""
from __future__ import annotations

import collections
import logging
from typing import NamedTuple

from ftcp.common.errors import StoreError

LOG = logging.getLogger(__name__)
_NOTHING = object()   # no record waiting for a service


class _Record(NamedTuple):
    """A service's status waiting to be written; ``fresh``: delete the old record first
    (the service was forgotten, then recorded again, before a flush)."""
    service: object
    status: str
    extra: dict
    fresh: bool = False


class Recorder:
    def __init__(self, store, max_events: int = 10000):
        self.store = store
        self._services = {}
        self._events = collections.deque(maxlen=max_events)
        self.dropped_events = 0
        self.redis_errors = 0
        self._healthy = None

    def service(self, service, status: str, **extra) -> None:
        """The latest status wins; fields of a record still waiting are kept unless
        the new one sets them too (Redis merges the hash the same way)."""
        self._queue(service.name, _Record(service, status, extra))

    def forget_service(self, name: str) -> None:
        """The service was removed: delete its record. Queued like a status (latest
        wins), so a status still waiting to be written cannot bring it back, and one
        recorded after it starts from an empty record."""
        self._queue(name, None)

    def _queue(self, name: str, newer) -> None:
        """Queue ``newer`` (a _Record, or None: delete) for a service, after what is
        still waiting for it: what Redis would hold had both been written in turn."""
        older = self._services.get(name, _NOTHING)
        if older is _NOTHING or newer is None or newer.fresh:
            self._services[name] = newer
        elif older is None:
            self._services[name] = newer._replace(fresh=True)
        else:
            self._services[name] = newer._replace(extra={**older.extra, **newer.extra}, fresh=older.fresh)

    def drop_services(self) -> None:
        """Forget the service records not written yet (a deposed controller's: the new
        master's are newer)."""
        self._services.clear()

    def event(self, kind: str, **fields) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped_events += 1
        self._events.append((kind, fields))

    @property
    def pending(self) -> int:
        return len(self._services) + len(self._events)

    def flush(self) -> bool:
        """Write everything pending; False (and keep it) if Redis fails."""
        # Take each record out before writing it: a Redis call yields to other green
        # threads, which may record a newer status meanwhile; that one must survive.
        try:
            for name in list(self._services):
                record = self._services.pop(name)
                try:
                    if record is None or record.fresh:
                        self.store.delete_service(name)
                    if record is not None:
                        self.store.save_service(record.service, record.status, **record.extra)
                except StoreError:
                    # back in front of whatever was recorded for it meanwhile
                    newer = self._services.pop(name, _NOTHING)
                    self._services[name] = record
                    if newer is not _NOTHING:
                        self._queue(name, newer)
                    raise
            while self._events:
                kind, fields = self._events.popleft()
                try:
                    self.store.event(kind, **fields)
                except StoreError:
                    self._events.appendleft((kind, fields))
                    raise
        except StoreError as e:
            self.redis_errors += 1
            if self._healthy is not False:
                LOG.error("cannot write to Redis, keeping %d records to retry: %s", self.pending, e)
            self._healthy = False
            return False
        if self._healthy is False:
            LOG.info("Redis is back; pending records written")
        self._healthy = True
        return True

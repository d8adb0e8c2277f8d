"""Buffer between the controller and Redis: nothing the app decides waits on Redis.

Service records are kept latest-wins per service; events in a bounded FIFO. ``flush``
writes what it can and keeps the rest for the next try, so a Redis outage loses at
most the oldest events past the bound (and says so), never a service's status.
"""
from __future__ import annotations

import collections
import logging

from ftcp.store import StoreError

LOG = logging.getLogger("ftcp.recorder")


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
        pending = self._services.get(service.name)
        if pending is not None:
            extra = {**pending[2], **extra}
        self._services[service.name] = (service, status, extra)

    def forget_service(self, name: str) -> None:
        """The service was removed: delete its record. Queued like a status (latest
        wins), so a status still waiting to be written cannot bring it back."""
        self._services[name] = None

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
                    if record is None:
                        self.store.delete_service(name)
                    else:
                        self.store.save_service(record[0], record[1], **record[2])
                except StoreError:
                    self._services.setdefault(name, record)
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

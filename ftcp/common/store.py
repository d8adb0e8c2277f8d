"""The only module that talks to Redis. Schema: docs/redis-schema.md.

Every call is short and bounded by socket timeouts; callers that run inside Ryu's
event handlers hand work to a green thread so a slow Redis never stalls OpenFlow.

This module is long because it is the only one that talks to Redis: every command of
the schema and every ACL rule is here, next to the others (the key names are
ftcp/common/keys.py).
"""
from __future__ import annotations

import json
import time
from typing import Callable, Optional

import redis
from redis.sentinel import Sentinel
from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer
from redis.utils import HIREDIS_AVAILABLE

from ftcp.common import control
from ftcp.common.config import SENTINEL_URL_RE, Service, redact_url
from ftcp.common.errors import StoreError
from ftcp.common.keys import (AGENT_CHANNEL_PREFIX, ANSWERS_MAXLEN, CONN_PREFIX, EPOCHS, EVENTS, EVENTS_MAXLEN,
                              GENERATION, LEADER, PREFIX, SERVICES, agent_channel, agent_key, answers_key, conn_key,
                              conn_log_key, conn_of_key, svc_conns_key, svc_key)
from ftcp.common.schema import decode_agent, decode_conn, decode_service

REPLICA_WAIT_MS = 500   # with Sentinel: how long a write waits for a replica to have it

# KEYS: leader, generation; ARGV: holder id, ttl ms. -> {generation, 1 if just taken}
# or nil when another holds the lease.
_LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {tonumber(redis.call('GET', KEYS[2]) or '0'), 0}
end
if holder then return nil end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {redis.call('INCR', KEYS[2]), 1}
"""


# What each component may do in Redis (ACL rules, Redis 7), given to a user of its own.
# The controller: keys and channels under the prefix only, no admin or dangerous
# command (CONFIG, FLUSHALL, KEYS, DEBUG, ...). An agent: only the commands its Store
# calls send, each only on the keys it needs (Redis 7 selectors): it reads the
# services, the connection records and their logs; it writes connection records and
# logs, the services' connection sets, its own heartbeat; it appends events and its
# answers; it listens on its own channel. So a compromised backup host cannot
# rewrite a service's record, take the controllers' lease, talk on another agent's
# channel or answer for it, trim or delete the events, or write an unbounded string. Pub/sub
# permissions do not tell publishing from subscribing: control messages are sealed
# (ftcp/common/control.py) for that.
_CONTROLLER_COMMANDS = "+@all -@admin -@dangerous"
_AGENT_CONNECTION = "+ping +hello +auth +select +client|setname +multi +exec +discard +wait"
_AGENT_READS = "+hget +hmget +hgetall +smembers +lrange"
_AGENT_CONN_WRITES = "+hset +rpush +del +expire +sadd +srem"


def acl_user(component: str) -> str:
    """The Redis user name of a component: ``ftcp-controller``, ``ftcp-agent-<backup>``."""
    return "ftcp-" + component.replace(":", "-")


def acl_rules(component: str) -> str:
    """The ACL rules for ``controller`` or ``agent:<backup name>`` (what follows
    ``user <name> on ><password>`` in a Redis configuration or ACL SETUSER)."""
    if component == "controller":
        return f"resetkeys resetchannels ~{PREFIX}:* &{PREFIX}:* {_CONTROLLER_COMMANDS}"
    kind, _, backup = component.partition(":")
    if kind != "agent" or not backup:
        raise ValueError(f"component must be 'controller' or 'agent:<backup>', got {component!r}")
    return " ".join([
        "resetkeys", "resetchannels", "-@all", _AGENT_CONNECTION,
        f"&{agent_channel(backup)}", f"&{EVENTS}", "+publish +subscribe +unsubscribe",
        f"%R~{PREFIX}:*", _AGENT_READS,
        # connection records and logs in its own namespace only
        f"%RW~{conn_key(backup, '*')}", f"%RW~{svc_conns_key('*', backup)}", _AGENT_CONN_WRITES,
        f"(%W~{agent_key(backup)} +hset)", f"(%W~{EVENTS} +xadd)", f"(%W~{answers_key(backup)} +xadd)"])


class _LogPacker:
    """Packs a command with hiredis (C) unless it carries a large value, which goes
    through redis-py's Python serializer: that one sends large values as they are,
    where hiredis would first copy every logged byte into one command buffer (a sixth
    of the agent's CPU at line rate, measured). Small commands are the common case
    with many chatty connections, and there the Python packer costs the writer thread
    most of a core."""
    LARGE = 6000

    def __init__(self):
        self._python = PythonRespSerializer(self.LARGE, Encoder("utf-8", "strict", False).encode)
        self._hiredis = HiredisRespSerializer() if HIREDIS_AVAILABLE else self._python

    def pack(self, *args):
        for arg in args:
            if isinstance(arg, (bytes, bytearray, memoryview)) and len(arg) > self.LARGE:
                return self._python.pack(*args)
        return self._hiredis.pack(*args)


def _client(url: str, **kw) -> redis.Redis:
    """A client for a Redis URL; for redis+sentinel://[:password@]h:p,h:p/master[/db],
    one that asks the sentinels for the master at every (re)connect (redis-py's
    Sentinel), so a promoted replica is found after a Sentinel failover."""
    match = SENTINEL_URL_RE.match(url)
    if match is None:
        return redis.Redis.from_url(url, **kw)
    creds = url[len("redis+sentinel://"):].split("@", 1)[0] if "@" in url.split("/", 3)[2] else ""
    username, _, password = creds.partition(":")
    hosts = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in match.group(1).split(",")]
    timeout = kw.get("socket_timeout")
    sentinel = Sentinel(hosts, socket_timeout=timeout, sentinel_kwargs={"socket_timeout": timeout,
                                                                        "socket_connect_timeout": timeout})
    return sentinel.master_for(match.group(2), db=int(match.group(3) or 0), username=username or None,
                               password=password or None, **kw)


# Records per round trip in the bulk reads (listings, metrics): between two, the Store
# calls its ``pause``, which on the controller yields its event loop, so a listing of
# tens of thousands of connections never holds OpenFlow and the probes for long.
READ_CHUNK = 500


def _no_pause() -> None:
    pass


class Store:
    def __init__(self, url: str, clock: Callable[[], float] = time.time, timeout: float = 2.0,
                 control_key: Optional[control.Keyring] = None, pause: Callable[[], None] = _no_pause):
        self.url = url
        self.clock = clock
        self.pause = pause
        self.control_key = control_key   # seals and checks control messages (ftcp/common/control.py)
        self.sentinel = url.startswith("redis+sentinel://")
        self._redis = _client(url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True)
        # The client->server logs are bytes: a second client that does not decode, with
        # a packer of its own (see _LogPacker).
        self._raw = _client(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                            command_packer=_LogPacker())

    def __repr__(self) -> str:
        return f"Store({redact_url(self.url)})"

    def _chunked(self, ids: list, read) -> list:
        """``read(r, chunk)`` over ``ids`` in chunks of READ_CHUNK, pausing between."""
        out = []
        for start in range(0, len(ids), READ_CHUNK):
            if start:
                self.pause()
            chunk = ids[start:start + READ_CHUNK]
            out += self._do(lambda r: read(r, chunk))
        return out

    def _do(self, fn, raw=False):
        try:
            return fn(self._raw if raw else self._redis)
        except (redis.RedisError, OSError) as e:
            raise StoreError(f"redis at {redact_url(self.url)}: {e}") from None
        except (ValueError, RecursionError) as e:
            # What Redis holds did not decode (not UTF-8, a field of the wrong type or
            # nesting): anyone with write access could have put it there
            raise StoreError(f"redis at {redact_url(self.url)}: a record that does not decode: "
                             f"{type(e).__name__}") from None

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
            # the whole definition, as the services file would hold it: an agent that
            # starts after a service was created over REST reads it from here
            "config": json.dumps(service.to_dict()),
        }
        fields.update({k: str(v) for k, v in extra.items()})

        def write(r):
            pipe = r.pipeline(transaction=True)
            pipe.hset(svc_key(service.name), mapping=fields)
            pipe.hsetnx(svc_key(service.name), "epoch", 0)
            pipe.sadd(SERVICES, service.name)
            if "epoch" in extra:
                # a sorted set scored by epoch: GT raises a score, never lowers it
                pipe.zadd(EPOCHS, {service.name: int(extra["epoch"])}, gt=True)
            pipe.execute()
        self._do(write)

    def epochs(self) -> dict:
        """The last failover epoch of every service ever recorded, removed ones included."""
        return {name: int(score) for name, score in self._do(lambda r: r.zrange(EPOCHS, 0, -1, withscores=True))}

    def service(self, name: str) -> Optional[dict]:
        return self._do(lambda r: r.hgetall(svc_key(name))) or None

    def service_names(self) -> set:
        return self._do(lambda r: r.smembers(SERVICES))

    def service_configs(self) -> list:
        """The definition (``config``) of every recorded service, as mappings."""
        out = []
        for name in sorted(self.service_names()):
            raw = (self.service(name) or {}).get("config")
            if raw:
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    pass   # not ours to judge here: the caller validates what it gets
        return out

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

    # --- which controller acts ---------------------------------------------------

    def lead(self, holder: str, ttl: float) -> Optional[tuple]:
        """Take or keep the controllers' lease for ``ttl`` seconds: (generation id,
        True if just taken) while ``holder`` has it, None while another one does."""
        out = self._do(lambda r: r.eval(_LEAD, 2, LEADER, GENERATION, holder, int(ttl * 1000)))
        return (int(out[0]), bool(out[1])) if out else None

    def leader(self) -> Optional[str]:
        return self._do(lambda r: r.get(LEADER))

    # --- control messages -------------------------------------------------------

    def publish(self, channel: str, message: dict) -> int:
        """Send a control message (sealed with ``control_key``, ftcp/common/control.py);
        returns how many subscribers got it."""
        peer = channel[len(AGENT_CHANNEL_PREFIX):] if channel.startswith(AGENT_CHANNEL_PREFIX) else None
        data = control.seal(self.control_key, channel, message, self.clock(), peer=peer)
        return self._do(lambda r: r.publish(channel, data))

    def answer(self, backup: str, message: dict) -> None:
        """An agent's answer to the controller, on its own stream (sealed for it)."""
        key = answers_key(backup)
        data = control.seal(self.control_key, key, message, self.clock())
        self._do(lambda r: r.xadd(key, {"m": data}, maxlen=ANSWERS_MAXLEN, approximate=True))

    def answers_from(self, backups) -> dict:
        """{backup: the id of its newest answer} (``0-0`` for none): where to read from
        to get only what comes next."""
        out = {}
        for backup in backups:
            last = self._do(lambda r: r.xrevrange(answers_key(backup), count=1))
            out[backup] = last[0][0] if last else "0-0"
        return out

    def read_answers(self, after: dict, block_ms: Optional[int]) -> list:
        """[(backup, message)] of the answers after the ids in ``after`` ({backup: id},
        updated in place), waiting up to ``block_ms`` for one (None: not at all; never 0,
        which would wait for ever). A message that is not to
        be obeyed comes as ``{"cmd": "invalid", "why", "raw"}``."""
        if not after:
            return []
        streams = {answers_key(b): i for b, i in after.items()}
        got = self._do(lambda r: r.xread(streams, count=100, block=block_ms)) or []
        out = []
        for key, entries in got:
            backup = key[len(answers_key("")):]
            for entry_id, fields in entries:
                after[backup] = entry_id
                raw = fields.get("m", "")
                try:
                    out.append((backup, control.unseal(self.control_key, key, raw, self.clock())))
                except control.ControlError as e:
                    out.append((backup, {"cmd": "invalid", "why": str(e), "raw": str(raw)[:200]}))
        return out

    def subscribe(self, channel: str):
        """A redis-py PubSub on ``channel``; read it with ``next_message``."""
        pubsub = self._do(lambda r: r.pubsub(ignore_subscribe_messages=True))
        self._do(lambda r: pubsub.subscribe(channel))
        return pubsub

    def next_message(self, pubsub, timeout: float) -> Optional[dict]:
        """The next JSON message on a subscription, or None after ``timeout``."""
        try:
            msg = pubsub.get_message(timeout=timeout)
        except (redis.RedisError, OSError) as e:
            raise StoreError(f"redis at {redact_url(self.url)}: {e}") from None
        if not msg or msg.get("type") != "message":
            return None
        try:
            channel = msg.get("channel")
            return control.unseal(self.control_key, channel.decode() if isinstance(channel, bytes) else str(channel),
                                  msg["data"], self.clock())
        except control.ControlError as e:
            return {"cmd": "invalid", "why": str(e), "raw": str(msg["data"])[:200]}

    # --- connections (written by the backup agent) -------------------------------

    def write_conns(self, writes, agent: Optional[dict] = None, agent_name: str = "",
                    events=(), closed_ttl: int = 300) -> None:
        """Apply a batch of ConnWrite of the agent ``agent_name`` (the records are in its
        namespace) atomically (MULTI/EXEC): all of it or none.

        Atomicity is what makes a retry after an error exact: ``log_lengths`` then
        tells how much of each log is really stored.
        """
        if not agent_name:
            raise ValueError("connection records are written in an agent's namespace: agent_name is needed")

        def write(r):
            pipe = r.pipeline(transaction=True)
            for w in writes:
                key, log_key = conn_key(agent_name, w.conn_id), conn_log_key(agent_name, w.conn_id)
                if w.reset:
                    pipe.delete(key, log_key)
                if w.data:
                    # A list of chunks, not one APPENDed string: Redis re-allocates (and
                    # copies) a growing string every MB, which costs it 5x the CPU.
                    pipe.rpush(log_key, w.data)
                pipe.hset(key, mapping=w.state)
                if w.closed:
                    pipe.srem(svc_conns_key(w.service, agent_name), w.conn_id)
                    pipe.expire(key, closed_ttl)
                    pipe.expire(log_key, closed_ttl)
                elif w.listed:
                    pipe.sadd(svc_conns_key(w.service, agent_name), w.conn_id)
            if agent is not None:
                pipe.hset(agent_key(agent_name), mapping=agent)
            for record in events:
                pipe.xadd(EVENTS, record, maxlen=EVENTS_MAXLEN, approximate=True)
                pipe.publish(EVENTS, json.dumps(record))
            pipe.execute()
            if self.sentinel:
                # Replication is asynchronous: a promoted replica would lack what the
                # master had not passed on. A write counts once a replica has it.
                if r.execute_command("WAIT", 1, REPLICA_WAIT_MS) < 1:
                    raise redis.RedisError(f"no replica acknowledged the write within {REPLICA_WAIT_MS} ms")
        self._do(write, raw=True)

    def log_lengths(self, host: str, conn_ids) -> dict:
        """Bytes stored in each of ``host``'s connection logs (``c2s_stored`` is written
        in the same transaction as the chunks, so it is exact)."""
        ids = list(conn_ids)

        def read(r, chunk):
            pipe = r.pipeline(transaction=False)
            for cid in chunk:
                pipe.hget(conn_key(host, cid), "c2s_stored")
            return pipe.execute()
        return {cid: int(v or 0) for cid, v in zip(ids, self._chunked(ids, read))}

    def conn(self, host: str, conn_id: str) -> Optional[dict]:
        """The record ``host``'s agent keeps of a connection."""
        return self._do(lambda r: r.hgetall(conn_key(host, conn_id))) or None

    def conn_log(self, host: str, conn_id: str) -> bytes:
        """The whole client->server log ``host``'s agent kept of a connection."""
        return b"".join(self._do(lambda r: r.lrange(conn_log_key(host, conn_id), 0, -1), raw=True))

    def conn_logs(self, host: str, conn_ids) -> dict:
        """Many of ``host``'s logs in one round trip: {conn id: bytes}."""
        ids = list(conn_ids)

        def read(r):
            pipe = r.pipeline(transaction=False)
            for conn_id in ids:
                pipe.lrange(conn_log_key(host, conn_id), 0, -1)
            return pipe.execute()
        return {conn_id: b"".join(chunks) for conn_id, chunks in zip(ids, self._do(read, raw=True))}

    def service_conns(self, name: str, host: str) -> set:
        """The ids of the service's live connections ``host``'s agent keeps."""
        return self._do(lambda r: r.smembers(svc_conns_key(name, host)))

    def live_conns(self, names, host: str) -> list:
        """The stored state (decoded) of every live connection of these services that
        ``host``'s agent keeps."""
        ids = [cid for name in names for cid in self.service_conns(name, host)]

        def read(r, chunk):
            pipe = r.pipeline(transaction=False)
            for cid in chunk:
                pipe.hgetall(conn_key(host, cid))
            return [decode_conn(raw) for raw in pipe.execute() if raw]
        return self._chunked(ids, read)

    def delete_conn(self, host: str, conn_id: str, service: str) -> None:
        """Forget a connection's record (benchmarks free memory between trials with it)."""
        def delete(r):
            pipe = r.pipeline(transaction=True)
            pipe.delete(conn_key(host, conn_id), conn_log_key(host, conn_id))
            pipe.srem(svc_conns_key(service, host), conn_id)
            pipe.execute()
        self._do(delete)

    def memory_used(self) -> int:
        return int(self._do(lambda r: r.info("memory"))["used_memory"])

    def agent(self, name: str) -> Optional[dict]:
        return self._do(lambda r: r.hgetall(agent_key(name))) or None

    # --- typed reads for the REST API (ftcp/api/routes.py) ------------------------------------

    def delete_service(self, name: str) -> None:
        """Forget a removed service's record (its connections expire on their own)."""
        def delete(r):
            pipe = r.pipeline(transaction=True)
            pipe.delete(svc_key(name))
            pipe.srem(SERVICES, name)
            pipe.execute()
        self._do(delete)

    def service_state(self, name: str) -> Optional[dict]:
        """``ftcp:svc:<name>`` with typed values (decode_service)."""
        raw = self.service(name)
        return decode_service(raw) if raw else None

    def agent_state(self, name: str) -> Optional[dict]:
        """``ftcp:agent:<name>`` (the heartbeat) with typed values (decode_agent)."""
        raw = self.agent(name)
        return decode_agent(raw) if raw else None

    def conn_state(self, host: str, conn_id: str) -> Optional[dict]:
        """``ftcp:conn:<host>:<id>`` with typed values (decode_conn)."""
        raw = self.conn(host, conn_id)
        return decode_conn(raw) if raw else None

    def conn_ids(self) -> list:
        """(host, id) of every connection record, live or recently closed (closed ones
        expire after the agent's grace TTL). SCAN, so Redis is never blocked."""
        def scan(r):
            keys = []
            for k in r.scan_iter(match=CONN_PREFIX + "*", count=READ_CHUNK):
                keys.append(k)
                if len(keys) % READ_CHUNK == 0:
                    self.pause()
            return keys
        return [pair for pair in map(conn_of_key, self._do(scan)) if pair is not None]

    def conn_fields(self, host: str, conn_ids, fields) -> dict:
        """{id: {field: typed value}} of these records of ``host``'s agent; records that
        are gone (expired since they were listed) are left out."""
        ids, fields = list(conn_ids), list(fields)

        def read(r, chunk):
            pipe = r.pipeline(transaction=False)
            for cid in chunk:
                pipe.hmget(conn_key(host, cid), fields)
            return [decode_conn({f: v for f, v in zip(fields, values) if v is not None})
                    if any(v is not None for v in values) else None for values in pipe.execute()]
        return {cid: row for cid, row in zip(ids, self._chunked(ids, read)) if row is not None}

    def recent_events(self, limit: int) -> list:
        """The last ``limit`` records of the event stream, oldest first: [(id, record)]."""
        return list(reversed(self._do(lambda r: r.xrevrange(EVENTS, count=limit))))

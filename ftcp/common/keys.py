"""Every Redis key and channel name ftcp uses, built in one place (pure).

docs/redis-schema.md says what each holds. The Store (ftcp/common/store.py) is the only
module that reads or writes them; the others name a key only to tell an agent where to
listen.
"""
from __future__ import annotations

PREFIX = "ftcp"
EVENTS = f"{PREFIX}:events"          # capped stream + pub/sub channel of the same name
SERVICES = f"{PREFIX}:services"      # set of configured service names
EVENTS_MAXLEN = 10000
# The last failover epoch of every service ever defined (a sorted set: the service's
# name scored by its epoch), never deleted:
# a service removed and defined again goes on from its last epoch, so no agent that
# remembers it takes a new failover's messages for stale ones.
EPOCHS = f"{PREFIX}:epochs"


def svc_key(name: str) -> str:
    return f"{PREFIX}:svc:{name}"


# A connection's record and log are namespaced by the host whose agent keeps them (the
# backup that protects it): two hosts protecting one service never write each other's.
# Host names never hold a ':' (config.NAME_RE), so a key splits back into its parts.
CONN_PREFIX = f"{PREFIX}:conn:"


def svc_conns_key(name: str, host: str) -> str:
    return f"{PREFIX}:svc:{name}:conns:{host}"


def conn_key(host: str, conn_id: str) -> str:
    return f"{CONN_PREFIX}{host}:{conn_id}"


def conn_log_key(host: str, conn_id: str) -> str:
    return f"{CONN_PREFIX}{host}:{conn_id}:c2s"


def conn_of_key(key: str):
    """(host, conn id) of a connection record's key; None for any other key."""
    if not key.startswith(CONN_PREFIX) or key.endswith(":c2s"):
        return None
    host, sep, conn_id = key[len(CONN_PREFIX):].partition(":")
    return (host, conn_id) if sep and host and conn_id else None


def agent_key(name: str) -> str:
    return f"{PREFIX}:agent:{name}"


# Control: the controller asks an agent on the agent's pub/sub channel; each agent
# answers on a capped stream of its own, which the controller reads. A stream keeps
# what it was sent (a controller that was away a moment reads it after), and no agent
# can make Redis drop the controller's reading of another's answers (as a flood of
# large messages on a shared pub/sub channel would, past its output buffer limit).
ANSWERS_MAXLEN = 1000


def answers_key(backup: str) -> str:
    return f"{PREFIX}:ctl:answers:{backup}"


# Two controllers: the lease of the one that acts (string: its id, with a TTL) and the
# OpenFlow generation id each new holder takes (a counter).
LEADER = f"{PREFIX}:controller:leader"
GENERATION = f"{PREFIX}:controller:generation"


AGENT_CHANNEL_PREFIX = f"{PREFIX}:ctl:agent:"


def agent_channel(name: str) -> str:
    return AGENT_CHANNEL_PREFIX + name

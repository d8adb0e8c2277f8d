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

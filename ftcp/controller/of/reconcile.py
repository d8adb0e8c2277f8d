"""What a switch holds against what it should hold: the diff that gets it there.

A switch's ftcp flows (read back from its flow stats, or our own adds) are keyed by
(priority, match), OpenFlow's own identity of a flow; the diff adds first, highest
priority first, then deletes, so no packet meets a table without the flow that should
stop or carry it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ryu.ofproto import ofproto_v1_3_parser as parser

from ftcp.controller.of import messages
from ftcp.controller.of.cookies import cookie_parts


@dataclass(frozen=True)
class Installed:
    """One ftcp flow as the switch holds it (from a flow-stats reply or our own add)."""
    cookie: int
    priority: int
    match: object          # OFPMatch
    actions: tuple         # actions_key() of its instructions

    @property
    def key(self) -> tuple:
        return flow_key(self.priority, self.match)


def _norm(value):
    return value.lower() if isinstance(value, str) else tuple(value) if isinstance(value, (list, tuple)) else value


def flow_key(priority: int, match) -> tuple:
    """A flow's identity in its table: priority and match (OpenFlow's own rule: an ADD
    with the same pair replaces the flow)."""
    return priority, tuple(sorted((k, _norm(v)) for k, v in match.items()))


def actions_key(instructions) -> tuple:
    """What a flow does, comparable between our FlowMods and a switch's flow stats."""
    out = []
    for inst in instructions:
        acts = []
        for act in getattr(inst, "actions", []):
            if isinstance(act, parser.OFPActionSetField):
                acts.append(("set", act.key, _norm(act.value)))
            elif isinstance(act, parser.OFPActionOutput):
                acts.append(("output", act.port))
            else:
                acts.append((type(act).__name__,))
        out.append((inst.type, tuple(acts)))
    return tuple(out)


def installed(flow) -> Installed:
    """An Installed from a FlowMod or an OFPFlowStats entry."""
    return Installed(flow.cookie, flow.priority, flow.match, actions_key(flow.instructions))


def reconcile(current: dict, desired: list, keep=frozenset()) -> tuple:
    """The messages that turn a switch's ftcp flows (``current``: key -> Installed) into
    ``desired`` (FlowMods), and the table that results. Adds first, highest priority
    first (a fence before anything it guards), then deletes: never delete-then-add. An
    ADD with the same priority and match replaces a flow in place. Flows of the
    services in ``keep`` (cookie ids) that are not desired are left alone (their ports
    are missing now; they may come back)."""
    want = {}
    for mod in desired:
        want[flow_key(mod.priority, mod.match)] = mod
    adds = [mod for key, mod in want.items()
            if key not in current or (current[key].cookie, current[key].actions)
            != (mod.cookie, actions_key(mod.instructions))]
    adds.sort(key=lambda mod: -mod.priority)
    table = dict(current)
    deletes = []
    for key, flow in current.items():
        if key not in want and (cookie_parts(flow.cookie) or (None,))[0] not in keep:
            deletes.append(messages.delete_strict(flow.cookie, flow.priority, flow.match))
            del table[key]
    for mod in adds:
        table[flow_key(mod.priority, mod.match)] = installed(mod)
    return adds + deletes, table

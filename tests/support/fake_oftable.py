"""A fake OpenFlow 1.3 switch table for unit tests of the controller core.

Feed it the Ryu OFP 1.3 messages the core produces (``apply``), then ask what a
packet would hit (``lookup``), where it would go and with which rewritten fields
(``forward``), or what the switch would answer to a flow-stats request
(``flow_stats``). In the spirit of faucet's FakeOFTable, much smaller: one table,
no counters, no timeouts, no groups or meters, apply-actions only.

Matches are compared as dicts of ``OFPMatch.items()`` (masked fields as
``(value, mask)`` tuples), with IPv4/MAC strings turned into numbers for the
comparison, so a match parsed back from the wire equals the one built in Python.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser


@dataclass(frozen=True)
class Flow:
    cookie: int
    priority: int
    match: dict  # field -> value; masked fields as (value, mask)
    instructions: list  # the Ryu instruction list; [] = drop


def _num(value):
    """An int for an int, a MAC address string or an IP address string."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and len(value) == 17 and value.count(":") == 5:
        return int(value.replace(":", ""), 16)
    if isinstance(value, str):
        return int(ipaddress.ip_address(value))
    raise TypeError(f"cannot compare match value {value!r}")


def _norm(match: dict) -> dict:
    return {k: tuple(_num(x) for x in v) if isinstance(v, tuple) else _num(v) for k, v in match.items()}


def _field_hits(flow_value, pkt_value) -> bool:
    if isinstance(flow_value, tuple):
        value, mask = (_num(x) for x in flow_value)
        return _num(pkt_value) & mask == value & mask
    return _num(pkt_value) == _num(flow_value)


def _cookie_ok(flow_cookie: int, msg) -> bool:
    return flow_cookie & msg.cookie_mask == msg.cookie & msg.cookie_mask


class FakeOFTable:
    """One OpenFlow 1.3 flow table, kept in the order flows were added."""

    def __init__(self):
        self._entries = []  # [Flow, OFPMatch]: the original match object, for flow_stats
        self.log = []  # every FlowMod applied, in order

    def apply(self, msg) -> None:
        """Apply a FlowMod; any other message is accepted and ignored."""
        if not isinstance(msg, parser.OFPFlowMod):
            return
        assert msg.table_id in (0, ofp.OFPTT_ALL), f"only table 0 exists, not {msg.table_id}"
        self.log.append(msg)
        match = dict(msg.match.items())
        key = _norm(match)
        strict = msg.command in (ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE_STRICT)

        def selected(flow):
            if not _cookie_ok(flow.cookie, msg):
                return False
            if strict:
                return flow.priority == msg.priority and _norm(flow.match) == key
            flow_key = _norm(flow.match)
            return all(k in flow_key and flow_key[k] == v for k, v in key.items())

        if msg.command == ofp.OFPFC_ADD:
            self._entries = [e for e in self._entries
                             if not (e[0].priority == msg.priority and _norm(e[0].match) == key)]
            self._entries.append([Flow(msg.cookie, msg.priority, match, list(msg.instructions)), msg.match])
        elif msg.command in (ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT):
            for entry in self._entries:
                if selected(entry[0]):
                    entry[0] = replace(entry[0], instructions=list(msg.instructions))
        elif msg.command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
            self._entries = [e for e in self._entries if not selected(e[0])]
        else:
            raise AssertionError(f"unknown FlowMod command {msg.command}")

    def flows(self) -> list:
        """The current flows, highest priority first."""
        return [e[0] for e in sorted(self._entries, key=lambda e: -e[0].priority)]

    def lookup(self, **pkt):
        """The flow the packet hits, or None; a tie at the top priority is an error."""
        hits = [f for f in self.flows()
                if all(k in pkt and _field_hits(v, pkt[k]) for k, v in f.match.items())]
        if not hits:
            return None
        top = [f for f in hits if f.priority == hits[0].priority]
        assert len(top) == 1, f"ambiguous table: {pkt} hits {len(top)} flows at priority {top[0].priority}: {top}"
        return top[0]

    def forward(self, **pkt) -> list:
        """[(port, packet as output there)] in action order; [] for a miss or a drop."""
        flow = self.lookup(**pkt)
        if flow is None:
            return []
        out, current = [], dict(pkt)
        for inst in flow.instructions:
            if not (isinstance(inst, parser.OFPInstructionActions) and inst.type == ofp.OFPIT_APPLY_ACTIONS):
                raise NotImplementedError(f"instruction {inst} is not modelled")
            for action in inst.actions:
                if isinstance(action, parser.OFPActionSetField):
                    current[action.key] = action.value
                elif isinstance(action, parser.OFPActionOutput):
                    out.append((action.port, dict(current)))
                else:
                    raise NotImplementedError(f"action {action} is not modelled")
        return out

    def flow_stats(self, cookie: int = 0, cookie_mask: int = 0) -> list:
        """What the switch answers to an OFPFlowStatsRequest with this cookie filter."""
        return [parser.OFPFlowStats(table_id=0, duration_sec=0, duration_nsec=0, priority=flow.priority,
                                    idle_timeout=0, hard_timeout=0, flags=0, cookie=flow.cookie,
                                    packet_count=0, byte_count=0, match=ofmatch,
                                    instructions=list(flow.instructions))
                for flow, ofmatch in sorted(self._entries, key=lambda e: -e[0].priority)
                if flow.cookie & cookie_mask == cookie & cookie_mask]

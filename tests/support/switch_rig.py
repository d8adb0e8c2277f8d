"""The controller core (ftcp/controller/core.py) wired to fake switches (FakeOFTable), a
fake clock and recorded control messages: what the Ryu shim and OVS do, in memory.

``Rig.connect(dpid)`` plays a switch (re)connecting with the flows its table holds;
requests the core sends (port descriptions, flow stats, barriers) are answered by
``settle`` in the order sent, as one OpenFlow connection does, unless the switch is
``hold``ing its replies (a slow or lost switch).
"""
from __future__ import annotations

import collections

from ryu.ofproto import ofproto_v1_3_parser as parser

from ftcp.controller.core import Controller
from ftcp.controller.effects import Event, ForgetService, Publish, RecordService, Send
from tests.support.fake_oftable import FakeOFTable

PORTS = {f"s1-eth{i}": (i, True) for i in range(1, 9)}


class Rig:
    def __init__(self, conf, now: float = 100.0, **kw):
        self.core = Controller(conf, **kw)
        self.now = now
        self.tables = {}
        self.ports = {}
        self.queue = collections.defaultdict(collections.deque)   # dpid -> requests awaiting a reply
        self.hold = set()                                          # dpids whose replies are held
        self.published, self.records, self.events = [], [], []

    # --- effects ---------------------------------------------------------------------------
    def run(self, effects):
        for e in effects:
            if isinstance(e, Send):
                if e.dpid not in self.tables:
                    continue
                if isinstance(e.msg, (parser.OFPBarrierRequest, parser.OFPFlowStatsRequest,
                                      parser.OFPPortDescStatsRequest, parser.OFPPortStatsRequest)):
                    self.queue[e.dpid].append(e.msg)
                else:
                    self.tables[e.dpid].apply(e.msg)
            elif isinstance(e, Publish):
                self.published.append(e.message)
            elif isinstance(e, RecordService):
                self.records.append((e.service.name, e.status, dict(e.fields)))
            elif isinstance(e, ForgetService):
                self.records.append((e.name, None, {}))
            elif isinstance(e, Event):
                self.events.append((e.kind, dict(e.fields)))
        return effects

    def settle(self):
        """Answer every queued request of switches that are not held."""
        moved = True
        while moved:
            moved = False
            for dpid in list(self.queue):
                if dpid in self.hold or dpid not in self.tables:
                    continue
                while self.queue[dpid]:
                    msg = self.queue[dpid].popleft()
                    moved = True
                    self.run(self._answer(dpid, msg))

    def _answer(self, dpid, msg):
        core, now = self.core, self.now
        if isinstance(msg, parser.OFPBarrierRequest):
            return core.barrier_reply(dpid, msg.xid, now)
        if isinstance(msg, parser.OFPFlowStatsRequest):
            return core.flow_stats(dpid, msg.xid, self.tables[dpid].flow_stats(msg.cookie, msg.cookie_mask),
                                   False, now)
        if isinstance(msg, parser.OFPPortDescStatsRequest):
            return core.port_desc(dpid, self.ports[dpid], now)
        return []   # port stats: the prober's tests drive those by hand

    # --- events ----------------------------------------------------------------------------
    def connect(self, dpid: int = 1, table: FakeOFTable = None, ports: dict = None):
        self.tables[dpid] = table if table is not None else self.tables.get(dpid) or FakeOFTable()
        self.ports[dpid] = dict(ports or PORTS)
        self.queue[dpid].clear()
        self.run(self.core.switch_connected(dpid, self.now))
        self.settle()
        return self.tables[dpid]

    def disconnect(self, dpid: int = 1):
        self.queue[dpid].clear()
        self.run(self.core.switch_gone(dpid, self.now))

    def restore(self, records=None, epochs=None):
        self.run(self.core.restore(records or {}, self.now, epochs=epochs))
        self.settle()

    def call(self, method, *args):
        """A core method with the rig's time; effects carried out and answered."""
        self.run(getattr(self.core, method)(*args, self.now))
        self.settle()

    def tick(self, until: float, step: float = 0.01):
        while self.now < until - 1e-9:
            self.now = round(self.now + step, 6)
            self.run(self.core.tick(self.now))
            self.settle()

    def beat(self, *agents):
        for name in agents:
            self.core.agent_heartbeat(name, {"heartbeat": str(self.now), "control": "1"}, self.now)

    def cmds(self):
        return [(m["cmd"], m.get("epoch")) for m in self.published]

    def last_record(self, name: str):
        return [r for r in self.records if r[0] == name][-1]

    def stored(self, name: str) -> dict:
        """The service's hash as Redis would hold it: every record merged (HSET)."""
        out = {}
        for record_name, status, fields in self.records:
            if record_name == name:
                out.update({k: str(v) for k, v in fields.items()}, status=status)
        return out


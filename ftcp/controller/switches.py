"""The controller core's view of its switches (part of ftcp.controller.core.Controller).

A switch that connects is asked for its ports and every flow with the ftcp cookie;
once both are in (and the services' state is loaded from Redis) it is reconciled by
diff (``flows.reconcile``): adds first, then deletes, nothing removed and re-added. Every
reconcile ends with a barrier; a failover step (``failover.SyncFlows``) is confirmed when
every switch that carries the service has answered a barrier sent after it -- a switch
lost before its reply confirms with the barrier of its reconcile when it comes back.
"""
from __future__ import annotations

import logging
from typing import Optional

from ftcp.controller import failover
from ftcp.controller.of import flows
from ftcp.controller.effects import Event, RecordService, Send
from ftcp.controller.failover import ServiceFailover
from ftcp.common.statuses import ServiceStatus
from ftcp.controller.plan import plan_switch, switch_applies

LOG = logging.getLogger("ftcp.controller.core")


class Switch:
    def __init__(self, dpid: int, since: float):
        self.dpid, self.since = dpid, since
        self.ports = None         # name -> (number, link up)
        self.flows = None         # flows.flow_key -> flows.Installed: what the switch holds
        self.reading = None       # xid of the flow-stats request under way
        self.read = []            # its reply parts so far
        self.plans = {}           # service name -> ServicePlan (ok ones)
        self.synced = False       # its first reconcile is confirmed
        self.recorded = set()     # services recorded protected on it since their flows last changed




class SwitchSync:
    """Switch connections, reconciles and barriers: mixed into the Controller."""

    # --- switches ------------------------------------------------------------------------

    def switch_connected(self, dpid: int, now: float) -> list:
        LOG.info("ftcp: switch %016x connected: reading its ports and ftcp flows", dpid)
        sw = self.switches[dpid] = Switch(dpid, now)
        if not switch_applies(self.conf, dpid):
            LOG.info("ftcp: switch %016x is not switch.dpid %016x: left alone", dpid, self.conf.dpid)
            return []
        return self._claim(sw) if self.active else []

    def switch_gone(self, dpid: int, now: float) -> list:
        LOG.warning("ftcp: switch %016x disconnected", dpid)
        self.switches.pop(dpid, None)
        for table in (self._barriers, self._port_reads):
            for key in [k for k in table if k[0] == dpid]:
                del table[key]
        return []

    def _read_flows(self, sw: Switch) -> Send:
        sw.reading, sw.read = self._next_xid(), []
        return Send(sw.dpid, flows.flow_stats_request(None, sw.reading))

    def port_desc(self, dpid: int, ports: dict, now: float) -> list:
        """The switch's ports: {name: (number, link up)}."""
        sw = self.switches.get(dpid)
        if sw is None or not switch_applies(self.conf, dpid):
            return []
        sw.ports = dict(ports)
        return self._maybe_reconcile(sw, now)

    def flow_stats(self, dpid: int, xid: int, body: list, more: bool, now: float) -> list:
        sw = self.switches.get(dpid)
        if sw is None or xid != sw.reading:
            return []
        sw.read += [f for f in body if flows.is_ftcp(f.cookie)]
        if more:
            return []
        sw.reading = None
        sw.flows = {}
        for flow in sw.read:
            item = flows.installed(flow)
            sw.flows[item.key] = item
        return self._maybe_reconcile(sw, now)

    def port_status(self, dpid: int, number: int, name: str, up: bool, change: str, now: float) -> list:
        """A port went down, came up, was added or deleted (``change``)."""
        if not self.active:
            return []
        sw = self.switches.get(dpid)
        if sw is None or sw.ports is None:
            return []
        out = []
        if up:
            if self._links_down.pop((dpid, number), None):
                LOG.warning("ftcp: port %d of switch %016x is up again within probe.link_confirm: no failover",
                            number, dpid)
                out.append(Event("link_flap", {"dpid": f"{dpid:016x}", "port": number}))
        elif any(plan.primary_port == number for plan in sw.plans.values()):
            why = f"{'deleted' if change == 'delete' else 'link down'} on port {number} of switch {dpid:016x}"
            self._links_down[(dpid, number)] = (now + (self._link_confirm() if change != "delete" else 0.0), why)
            out += self._links_confirmed(now)
        if change == "delete":
            sw.ports.pop(name, None)
        else:
            sw.ports[name] = (number, up)
        if change in ("add", "delete"):
            out += self._reconcile(sw, now)   # names may now resolve differently
        return out

    def _maybe_reconcile(self, sw: Switch, now: float) -> list:
        if not self.loaded or sw.ports is None or sw.flows is None:
            return []
        return self._reconcile(sw, now)

    def _reconcile(self, sw: Switch, now: float) -> list:
        """Bring the switch's ftcp flows to what every service's state needs."""
        if sw.ports is None or sw.flows is None:
            return []
        numbers = {name: number for name, (number, _) in sw.ports.items()}
        desired = [flows.default_flow(None)]
        keep, out = set(), []
        sw.plans = {}
        for plan in plan_switch(self.conf, numbers):
            svc, f = plan.service, self.failovers[plan.service.name]
            primary_gone = plan.primary_port is None and f.status == ServiceStatus.PROTECTED
            problem = plan.problem or (plan.primary_problem if primary_gone else None)
            if problem:
                keep.add(svc.cookie_id)   # its flows wait for the port to come back
                LOG.error("ftcp: service %s NOT protected on switch %016x: %s", svc.name, sw.dpid, problem)
                sw.recorded.discard(svc.name)
                if f.status == ServiceStatus.PROTECTED:
                    out += [RecordService(svc, ServiceStatus.UNPROTECTED,
                                          {"reason": problem, "dpid": f"{sw.dpid:016x}"}),
                            Event("service_unprotected", {"service": svc.name, "dpid": f"{sw.dpid:016x}",
                                                          "reason": problem})]
                continue
            sw.plans[svc.name] = plan
            desired += self._service_flows(plan, f)
        mods, sw.flows = flows.reconcile(sw.flows, desired, frozenset(keep))
        for mod in mods:
            LOG.info("ftcp: switch %016x: %s", sw.dpid, flows.describe(mod))
        out += [Send(sw.dpid, mod) for mod in mods]
        xid = self._next_xid()
        self._barriers[(sw.dpid, xid)] = True
        out.append(Send(sw.dpid, with_xid(flows.barrier(None), xid)))
        return out

    def _probe_ip(self):
        return self.conf.probe.address if self.conf.probe else None

    def _service_flows(self, plan, f: ServiceFailover) -> list:
        """The flows of one service in its failover state (DESIGN §3, §7)."""
        svc = plan.service
        if f.status == ServiceStatus.PROTECTED:
            return flows.service_flows(None, plan, probe_ip=self._probe_ip())
        fence = [flows.fence_flow(None, plan)] if plan.primary_port is not None else []
        if f.backup not in {b.name for b in svc.backups}:
            # recorded as moved to a backup the definition no longer has (renamed while
            # the controller was down): keep the primary fenced, redirect nowhere
            LOG.error("ftcp: service %s is %s to %s, which is not one of its backups now", svc.name, f.status,
                      f.backup)
            return fence
        if f.status == ServiceStatus.FAILING_OVER:
            mirrors = flows.service_flows(None, plan, probe_ip=self._probe_ip()) if plan.primary_port else []
            return fence + mirrors + [flows.redirect_s2c_flow(None, plan, f.backup, svc.primary.mac)]
        return fence + flows.redirect_flows(None, plan, f.backup, svc.primary.mac) + flows.mirror_port_drops(None, plan)

    def barrier_reply(self, dpid: int, xid: int, now: float) -> list:
        if not self.active:
            return []
        sw = self.switches.get(dpid)
        reconciled = self._barriers.pop((dpid, xid), None)
        if sw is None or reconciled is None:
            return []
        out = []
        sw.synced = True
        for name, plan in sw.plans.items():
            svc, f = plan.service, self.failovers[name]
            if f.status != ServiceStatus.PROTECTED:
                continue
            if name not in sw.recorded:
                # its first confirmed flows on this switch: at the switch's first sync, or
                # a service added, replaced or whose port came back since
                sw.recorded.add(name)
                count = len(flows.service_flows(None, plan, probe_ip=self._probe_ip()))
                LOG.info("ftcp: service %s protected on switch %016x: %d flows, primary port %d, mirror port(s) %s",
                         name, dpid, count, plan.primary_port, ",".join(map(str, plan.mirror_ports)))
                out += [RecordService(svc, ServiceStatus.PROTECTED,
                                      {"dpid": f"{dpid:016x}", "flows": count, "reason": "", "epoch": f.epoch}),
                        Event("flows_installed", {"service": name, "dpid": f"{dpid:016x}", "flows": count})]
            up = (sw.ports or {}).get(_port_name(sw, plan.primary_port), (None, True))[1]
            if not up and self._seen_alive(name):
                # found down (at a connect, or a reconcile): the same confirmation as a port-status
                why = f"link down on port {plan.primary_port} of switch {dpid:016x}"
                self._links_down.setdefault((dpid, plan.primary_port), (now + self._link_confirm(), why))
        out += self._links_confirmed(now)
        for token, (after, need) in list(self._awaiting.items()):
            if need:
                if xid >= need.get(dpid, xid + 1):
                    del need[dpid]
                done = not need
            else:   # no switch carried the service: the first reconcile after it that does
                done = token.service in sw.plans and xid > after
            if done:
                del self._awaiting[token]
                out += self._confirmed(token, now)
        return out

    def _seen_alive(self, name: str) -> bool:
        prober = self.probers.get(name)
        return prober is None or prober.armed

    def _sync(self, action: failover.SyncFlows, now: float) -> list:
        """Reconcile every switch whose flows are known with the new state; the step is
        confirmed by a barrier sent after it from each one that carries the service (a
        switch still being read is reconciled, with the new state, once it is)."""
        out, need, after = [], {}, self._xid
        for sw in self.switches.values():
            if sw.ports is not None and sw.flows is not None:
                out += self._reconcile(sw, now)
                if action.service in sw.plans:
                    need[sw.dpid] = self._xid
        if not need:
            LOG.warning("ftcp: %s: no connected switch carries the service; %s waits for one",
                        action.service, action.step)
        self._awaiting[action] = (after, need)
        return out

    def _confirmed(self, token: failover.SyncFlows, now: float) -> list:
        f = self.failovers.get(token.service)
        if f is None:
            return []
        self._step(token.service, token.step, now)
        return self._run(f.confirmed(token.step, token.epoch, now), now)

    def _link_confirm(self) -> float:
        return self.conf.probe.link_confirm if self.conf.probe else 0.0

    def _links_confirmed(self, now: float) -> list:
        """Fail over the services whose primary's link stayed down long enough."""
        out = []
        for (dpid, number), (when, why) in list(self._links_down.items()):
            if now < when:
                continue
            del self._links_down[(dpid, number)]
            sw = self.switches.get(dpid)
            for name, plan in (sw.plans.items() if sw else ()):
                if plan.primary_port == number:
                    out += self.fail(name, why, now)
        return out

    def error(self, dpid: int, kind: int, code: int, now: float) -> list:
        LOG.error("ftcp: switch %016x rejected a message: type=%d code=%d", dpid, kind, code)
        return [Event("switch_error", {"dpid": f"{dpid:016x}", "type": kind, "code": code})]

    def _next_xid(self) -> int:
        self._xid = self._xid + 1 if self._xid < 0xFFFFFFFF else 0x80000000
        return self._xid


def with_xid(msg, xid: int):
    msg.xid = xid
    return msg


def _port_name(sw: Switch, number: int) -> Optional[str]:
    for name, (no, _) in (sw.ports or {}).items():
        if no == number:
            return name
    return None

"""The switches the controller's core talks to (pure): connections, flow read-back,
reconcile by diff, barriers.

A switch that connects is asked for its ports and every flow with the ftcp cookie; once
both are in (and the services' state is loaded from Redis) it is reconciled by diff
(``of.reconcile``): adds first, then deletes, nothing removed and re-added. Every
reconcile ends with a barrier; a failover step (``failover.SyncFlows``) is confirmed when
every switch that carries the service has answered a barrier sent after it -- a switch
lost before its reply confirms with the barrier of its reconcile when it comes back.

``Switches`` owns all of that state. What a service's flows should be in its current
state is not its to decide: the core says it (``wanted``), and what a barrier confirms
goes back to the core, which runs the failover.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, Optional

from ftcp.common.config import Config
from ftcp.common.statuses import PRIMARY, ServiceStatus
from ftcp.controller import failover
from ftcp.controller.effects import Event, RecordService, Send
from ftcp.controller.of import messages
from ftcp.controller.of.cookies import is_ftcp
from ftcp.controller.of.reconcile import installed, reconcile
from ftcp.controller.placement import ServicePlan, plan_switch, switch_applies

LOG = logging.getLogger(__name__)


class Xids:
    """Transaction ids for the requests whose replies the core must match (barriers,
    flow and port stats), above the range Ryu uses for its own."""

    def __init__(self):
        self.last = 0x80000000

    def next(self) -> int:
        self.last = self.last + 1 if self.last < 0xFFFFFFFF else 0x80000000
        return self.last


class Switch:
    def __init__(self, dpid: int, since: float):
        self.dpid, self.since = dpid, since
        self.ports = None         # name -> (number, link up)
        self.flows = None         # reconcile.flow_key -> reconcile.Installed: what the switch holds
        self.reading = None       # xid of the flow-stats request under way
        self.read = []            # its reply parts so far
        self.plans = {}           # service name -> ServicePlan (ok ones)
        self.synced = False       # its first reconcile is confirmed
        self.recorded = set()     # services recorded protected on it since their flows last changed

    def port_name(self, number: int) -> Optional[str]:
        for name, (no, _) in (self.ports or {}).items():
            if no == number:
                return name
        return None

    def link_up(self, number: int) -> bool:
        return (self.ports or {}).get(self.port_name(number), (None, True))[1]


class Switches:
    """Every connected switch, the barriers awaited and the failover steps they confirm.

    ``config`` gives the services as now defined; ``status(name)`` a service's failover
    status and epoch; ``wanted(plan)`` the flows its state needs on a switch (None: it
    is not served there)."""

    def __init__(self, config: Callable[[], Config], status: Callable[[str], tuple],
                 wanted: Callable[[ServicePlan], list], xids: Xids,
                 serving: Callable[[str], str] = lambda name: PRIMARY):
        self._config, self._status, self._wanted, self.xids = config, status, wanted, xids
        self._serving = serving   # the name of the host serving a service now
        self._switches = {}
        self._barriers = {}        # (dpid, xid) -> True for a reconcile barrier
        self._awaiting = {}        # SyncFlows -> (xid when asked, {dpid: barrier xid that confirms it})

    # --- what the others may ask -------------------------------------------------------------

    def get(self, dpid: int) -> Optional[Switch]:
        return self._switches.get(dpid)

    def all(self) -> list:
        return list(self._switches.values())

    def plan(self, dpid: int, service: str) -> Optional[ServicePlan]:
        sw = self._switches.get(dpid)
        return sw.plans.get(service) if sw is not None else None

    def serving_host(self, plan: ServicePlan):
        """The host serving the service of ``plan`` now, as attached to its switch (None:
        the service's definition no longer has it: its flows fence every host)."""
        name = self._serving(plan.service.name)
        if name != PRIMARY and name not in {h.name for h in plan.backups}:
            return None
        return plan.host(name)

    def carriers(self, name: str) -> Iterator:
        """(switch, plan, host) of every synced switch where the host serving the service is attached."""
        for sw in self._switches.values():
            plan = sw.plans.get(name)
            if plan is not None and sw.synced:
                host = self.serving_host(plan)
                if host is not None and host.data_port is not None:
                    yield sw, plan, host

    def serving_on(self, dpid: int, number: int) -> list:
        """The services whose serving host is attached to this port of this switch."""
        sw = self._switches.get(dpid)
        return [name for name, plan in (sw.plans.items() if sw else ())
                if (host := self.serving_host(plan)) is not None and host.data_port == number]

    def forget_pending(self) -> None:
        self._barriers.clear()
        self._awaiting.clear()

    # --- connections ---------------------------------------------------------------------------

    def connected(self, dpid: int, now: float, claim: bool, generation: Optional[int]) -> list:
        LOG.info("ftcp: switch %016x connected: reading its ports and ftcp flows", dpid)
        sw = self._switches[dpid] = Switch(dpid, now)
        if not switch_applies(self._config(), dpid):
            LOG.info("ftcp: switch %016x is not switch.dpid %016x: left alone", dpid, self._config().dpid)
            return []
        return self._claim(sw, generation) if claim else []

    def gone(self, dpid: int) -> None:
        LOG.warning("ftcp: switch %016x disconnected", dpid)
        self._switches.pop(dpid, None)
        for key in [k for k in self._barriers if k[0] == dpid]:
            del self._barriers[key]

    def reclaim(self, generation: Optional[int]) -> list:
        """This controller became the master: read every switch again, as if it had just connected."""
        out = []
        for sw in self._switches.values():
            sw.ports = sw.flows = None
            sw.synced = False
            out += self._claim(sw, generation)
        return out

    def _claim(self, sw: Switch, generation: Optional[int]) -> list:
        out = [Send(sw.dpid, messages.role_request(generation))] if generation is not None else []
        sw.reading, sw.read = self.xids.next(), []
        return out + [Send(sw.dpid, messages.port_desc_request()),
                      Send(sw.dpid, messages.flow_stats_request(sw.reading))]

    def port_desc(self, dpid: int, ports: dict, ready: bool, now: float) -> list:
        """The switch's ports: {name: (number, link up)}; ``ready``: the services' state is loaded."""
        sw = self._switches.get(dpid)
        if sw is None or not switch_applies(self._config(), dpid):
            return []
        sw.ports = dict(ports)
        return self.reconcile(sw, now) if ready else []

    def flow_stats(self, dpid: int, xid: int, body: list, more: bool, ready: bool, now: float) -> list:
        sw = self._switches.get(dpid)
        if sw is None or xid != sw.reading:
            return []
        sw.read += [f for f in body if is_ftcp(f.cookie)]
        if more:
            return []
        sw.reading = None
        sw.flows = {}
        for flow in sw.read:
            item = installed(flow)
            sw.flows[item.key] = item
        return self.reconcile(sw, now) if ready else []

    def port_changed(self, dpid: int, number: int, name: str, up: bool, change: str, now: float) -> list:
        """A port went down, came up, was added or deleted (``change``)."""
        sw = self._switches[dpid]
        if change == "delete":
            sw.ports.pop(name, None)
        else:
            sw.ports[name] = (number, up)
        return self.reconcile(sw, now) if change in ("add", "delete") else []   # names may resolve differently

    # --- reconcile ---------------------------------------------------------------------------

    def reconcile_all(self, now: float) -> list:
        out = []
        for sw in list(self._switches.values()):
            out += self.reconcile(sw, now)
        return out

    def service_changed(self, name: str, removed: bool, now: float) -> list:
        """A service was defined again (or removed): every switch is reconciled to it, and
        it is recorded protected again once its new flows are confirmed."""
        out = []
        for sw in self._switches.values():
            if removed:
                sw.plans.pop(name, None)
            sw.recorded.discard(name)
            out += self.reconcile(sw, now)
        return out

    def reconcile(self, sw: Switch, now: float) -> list:
        """Bring the switch's ftcp flows to what every service's state needs."""
        if sw.ports is None or sw.flows is None:
            return []
        numbers = {name: number for name, (number, _) in sw.ports.items()}
        desired = [messages.default_flow()]
        keep, out = set(), []
        sw.plans = {}
        for plan in plan_switch(self._config(), numbers):
            svc = plan.service
            status, _ = self._status(svc.name)
            primary_gone = (plan.primary_port is None and status == ServiceStatus.PROTECTED
                            and self._serving(svc.name) == PRIMARY)
            problem = plan.problem or (plan.primary_problem if primary_gone else None)
            if problem:
                keep.add(svc.cookie_id)   # its flows wait for the port to come back
                LOG.error("ftcp: service %s NOT protected on switch %016x: %s", svc.name, sw.dpid, problem)
                sw.recorded.discard(svc.name)
                if status == ServiceStatus.PROTECTED:
                    out += [RecordService(svc, ServiceStatus.UNPROTECTED,
                                          {"reason": problem, "dpid": f"{sw.dpid:016x}"}),
                            Event("service_unprotected", {"service": svc.name, "dpid": f"{sw.dpid:016x}",
                                                          "reason": problem})]
                continue
            sw.plans[svc.name] = plan
            desired += self._wanted(plan)
        mods, sw.flows = reconcile(sw.flows, desired, frozenset(keep))
        for mod in mods:
            LOG.info("ftcp: switch %016x: %s", sw.dpid, messages.describe(mod))
        out += [Send(sw.dpid, mod) for mod in mods]
        xid = self.xids.next()
        self._barriers[(sw.dpid, xid)] = True
        out.append(Send(sw.dpid, messages.barrier(xid)))
        return out

    # --- barriers ----------------------------------------------------------------------------

    def barrier_reply(self, dpid: int, xid: int) -> Optional[tuple]:
        """A reconcile's barrier came back: (the records of the services now protected
        on it, the (plan, serving host) whose link it found down); None: not one of ours."""
        sw = self._switches.get(dpid)
        reconciled = self._barriers.pop((dpid, xid), None)
        if sw is None or reconciled is None:
            return None
        out, down = [], []
        sw.synced = True
        for name, plan in sw.plans.items():
            svc = plan.service
            status, epoch = self._status(name)
            if status != ServiceStatus.PROTECTED:
                continue
            if name not in sw.recorded:
                # its first confirmed flows on this switch: at the switch's first sync, or
                # a service added, replaced or whose port came back since
                sw.recorded.add(name)
                count = len(self._wanted(plan))
                LOG.info("ftcp: service %s protected on switch %016x: %d flows, primary port %d, mirror port(s) %s",
                         name, dpid, count, plan.primary_port, ",".join(map(str, plan.mirror_ports)))
                out += [RecordService(svc, ServiceStatus.PROTECTED,
                                      {"dpid": f"{dpid:016x}", "flows": count, "reason": "", "epoch": epoch}),
                        Event("flows_installed", {"service": name, "dpid": f"{dpid:016x}", "flows": count})]
            host = self.serving_host(plan)
            if host is not None and host.data_port is not None and not sw.link_up(host.data_port):
                down.append((plan, host))
        return out, down

    def confirmed(self, dpid: int, xid: int) -> list:
        """The failover steps this barrier reply confirms (after every switch that carries
        the service answered one sent after the step)."""
        sw = self._switches.get(dpid)
        done = []
        for token, (after, need) in list(self._awaiting.items()):
            if need:
                if xid >= need.get(dpid, xid + 1):
                    del need[dpid]
                finished = not need
            else:   # no switch carried the service: the first reconcile after it that does
                finished = sw is not None and token.service in sw.plans and xid > after
            if finished:
                del self._awaiting[token]
                done.append(token)
        return done

    def sync(self, action: failover.SyncFlows, now: float) -> list:
        """Reconcile every switch whose flows are known with the new state; the step is
        confirmed by a barrier sent after it from each one that carries the service (a
        switch still being read is reconciled, with the new state, once it is)."""
        out, need, after = [], {}, self.xids.last
        for sw in self._switches.values():
            if sw.ports is not None and sw.flows is not None:
                out += self.reconcile(sw, now)
                if action.service in sw.plans:
                    need[sw.dpid] = self.xids.last
        if not need:
            LOG.warning("ftcp: %s: no connected switch carries the service; %s waits for one",
                        action.service, action.step)
        self._awaiting[action] = (after, need)
        return out

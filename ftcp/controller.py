"""The controller's core: services x switches x failovers (pure; DESIGN §11, §13).

Every method takes an event and ``now`` and returns effects for the Ryu shim
(ryu_apps/ftcp_app.py) to carry out: OpenFlow messages for a switch (``Send``),
control messages for an agent (``Publish``), records for Redis (``RecordService``,
``Event``). Nothing here does I/O, so every rule is unit-tested with a fake flow table
and a fake clock.

State lives in Redis and in the switches; this is a cache of both:

* ``restore`` takes each service's record from Redis (status, epoch, backup, step) and
  carries on with a failover a previous controller left half done (ftcp/failover.py).
  Until it has run, no switch is touched: fail_mode=secure keeps their flows.
* A switch that connects is asked for its ports and its ftcp flows; the flows are then
  reconciled by diff (``flows.reconcile``): what is missing is added, what is stale is
  deleted, nothing is deleted and added again. A service that failed over keeps its
  fence and redirect through a controller restart or a switch reconnect.
* A failover step that changes flows is confirmed by a barrier from every switch
  that carries the service; a switch lost before its reply confirms with the barrier
  of its reconcile when it comes back.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Optional

from ftcp import failover, flows
from ftcp.config import Config, Service, with_service, without_service
from ftcp.failover import FAILED, FAILED_OVER, FENCED, PROTECTED, ServiceFailover
from ftcp.plan import plan_switch, switch_applies
from ftcp.probe import Prober, ReadPort, Release, SendProbe, Verdict
from ftcp.store import agent_channel

LOG = logging.getLogger("ftcp.controller")
AGENT_TIMEOUT = 3.0   # an agent whose heartbeat is older than this is not taken as alive


@dataclass(frozen=True)
class Send:
    dpid: int
    msg: object


@dataclass(frozen=True)
class Publish:
    channel: str
    message: dict


@dataclass(frozen=True)
class RecordService:
    service: Service
    status: str
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ForgetService:
    name: str


@dataclass(frozen=True)
class Event:
    kind: str
    fields: dict = field(default_factory=dict)


class Switch:
    def __init__(self, dpid: int, since: float):
        self.dpid, self.since = dpid, since
        self.ports = None         # name -> (number, link up)
        self.flows = None         # flows.flow_key -> flows.Installed: what the switch holds
        self.reading = None       # xid of the flow-stats request under way
        self.read = []            # its reply parts so far
        self.plans = {}           # service name -> ServicePlan (ok ones)
        self.synced = False       # its first reconcile is confirmed


class Controller:
    def __init__(self, conf: Config, takeover_timeout: float = 5.0, retry: float = 0.25,
                 agent_timeout: float = AGENT_TIMEOUT, active: bool = True):
        self.conf = conf
        self.takeover_timeout, self.retry, self.agent_timeout = takeover_timeout, retry, agent_timeout
        self.active = active       # False: a standby controller, which sends nothing (promote)
        self.generation = None     # the OpenFlow role generation id, when two controllers share switches
        self.loaded = False
        self.failovers, self.probers = {}, {}
        self.switches = {}
        self.heartbeats = {}       # agent name -> its last heartbeat time
        self.timelines = {}        # service -> [(step, time)] of the failover under way
        self._barriers = {}        # (dpid, xid) -> True for a reconcile barrier
        self._awaiting = {}        # SyncFlows -> {dpid: xid} or None (no switch carries it yet)
        self._port_reads = {}      # (dpid, xid) -> (service, token)
        self._links_down = {}      # (dpid, port) -> (when it fails over, why): a link down being confirmed
        self._xid = 0x80000000
        self.failover_counts = {}
        self.last_takeover_seconds = 0.0
        self._index()

    # --- services ------------------------------------------------------------------------

    def _index(self):
        for svc in self.conf.services:
            backups = tuple(b.name for b in svc.backups)
            if svc.name in self.failovers:
                self.failovers[svc.name].backups = backups
            else:
                self.failovers[svc.name] = ServiceFailover(svc.name, backups, timeout=self.takeover_timeout,
                                                           retry=self.retry)
            if self.conf.probe and svc.name not in self.probers:
                self.probers[svc.name] = self._prober(svc.name)
        names = {s.name for s in self.conf.services}
        for table in (self.failovers, self.probers):
            for name in set(table) - names:
                del table[name]
        self._by_cookie = {s.cookie_id: s.name for s in self.conf.services}
        self._by_address = {(s.address, s.port): s.name for s in self.conf.services}

    def _prober(self, name: str, armed: bool = False, start: float = 0.0) -> Prober:
        probe = self.conf.probe
        prober = Prober(name, probe.interval, probe.misses, refusals=probe.refusals)
        prober.armed, prober.next_at = armed, start
        return prober

    def restore(self, records: dict, now: float) -> list:
        """The services' records as Redis holds them ({name: hash or None}); then the
        switches that connected meanwhile are reconciled."""
        out = []
        for svc in self.conf.services:
            if self.conf.probe:
                self.probers[svc.name] = self._prober(svc.name)
            record = records.get(svc.name) or {}
            f, actions = ServiceFailover.restored(svc.name, tuple(b.name for b in svc.backups), record, now,
                                                  timeout=self.takeover_timeout, retry=self.retry)
            self.failovers[svc.name] = f
            if f.status != PROTECTED:
                LOG.warning("ftcp: service %s was %s (epoch %d, backup %s, step %s) when the controller "
                            "started: carrying on", svc.name, f.status, f.epoch, f.backup, record.get("step"))
                self.timelines[svc.name] = [("restored", now)]
                if svc.name in self.probers:
                    self.probers[svc.name].stop()
            elif record.get("status") == PROTECTED and svc.name in self.probers:
                # it was seen alive before: silence or a RST now condemns it
                self.probers[svc.name].armed = True
            if not record:
                out.append(RecordService(svc, "configured", {"epoch": f.epoch}))
            out += self._run(actions, now)
        self.loaded = True
        out.append(Event("controller_started", {"services": [s.name for s in self.conf.services]}))
        for sw in list(self.switches.values()):
            out += self._maybe_reconcile(sw, now)
        return out

    # --- two controllers ---------------------------------------------------------------------

    def promote(self, records: dict, generation: int, now: float) -> list:
        """This controller now holds the lease: claim the master role on every switch
        (``generation`` makes a deposed master's messages stale there), re-read what
        Redis and the switches hold, and act from then on."""
        LOG.warning("ftcp: this controller is the master now (generation %d)", generation)
        self.active, self.generation = True, generation
        self._forget_pending()
        out = []
        for sw in self.switches.values():
            sw.ports = sw.flows = None
            sw.synced = False
            out += self._claim(sw)
        return out + self.restore(records, now)

    def demote(self, now: float) -> list:
        """Another controller acts now (or the lease could not be renewed): send nothing."""
        LOG.warning("ftcp: this controller is a standby now")
        self.active, self.loaded = False, False
        self._forget_pending()
        for prober in self.probers.values():
            prober.stop()
        return [Event("controller_standby", {})]

    def _forget_pending(self):
        for table in (self._barriers, self._awaiting, self._port_reads, self._links_down, self.timelines):
            table.clear()

    def _claim(self, sw: Switch) -> list:
        out = [Send(sw.dpid, flows.role_request(None, self.generation))] if self.generation is not None else []
        return out + [Send(sw.dpid, flows.port_desc_request(None)), self._read_flows(sw)]

    # --- services ----------------------------------------------------------------------------

    def apply_service(self, service: Service, now: float) -> list:
        """Create or replace a service (ConfigError: nothing changed); every switch
        is reconciled to the new definition by diff."""
        old = self.conf.service(service.name)
        self.conf = with_service(self.conf, service)
        self._index()
        f = self.failovers[service.name]
        out = [RecordService(service, "configured" if f.status == PROTECTED else f.status, {"epoch": f.epoch}),
               Event("service_configured", {"service": service.name})]
        for sw in self.switches.values():
            out += self._reconcile(sw, now)
        # The backups' agents log the new service from now on (a backup the new
        # definition no longer lists stops: the same message tells it).
        for name in sorted({b.name for b in service.backups} | {b.name for b in (old.backups if old else ())}):
            out.append(Publish(agent_channel(name), {"cmd": "service", "service": service.to_dict()}))
        return out

    def remove_service(self, name: str, now: float) -> list:
        svc = self.conf.service(name)
        self.conf = without_service(self.conf, name)
        self._index()
        self.timelines.pop(name, None)
        out = [ForgetService(name), Event("service_deleted", {"service": name})]
        for sw in self.switches.values():
            sw.plans.pop(name, None)
            out += self._reconcile(sw, now)
        out += [Publish(agent_channel(b.name), {"cmd": "forget", "service": name}) for b in svc.backups]
        return out

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
            confirm = self.conf.probe.link_confirm if self.conf.probe and change != "delete" else 0.0
            self._links_down[(dpid, number)] = (now + confirm, why)
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
        if self.conf.probe:
            desired += flows.probe_flows(None, self.conf.probe.address)
        keep, out = set(), []
        sw.plans = {}
        for plan in plan_switch(self.conf, numbers):
            svc, f = plan.service, self.failovers[plan.service.name]
            problem = plan.problem or (plan.primary_problem if plan.primary_port is None and f.status == PROTECTED
                                       else None)
            if problem:
                keep.add(svc.cookie_id)   # its flows wait for the port to come back
                LOG.error("ftcp: service %s NOT protected on switch %016x: %s", svc.name, sw.dpid, problem)
                if f.status == PROTECTED:
                    out += [RecordService(svc, "unprotected", {"reason": problem, "dpid": f"{sw.dpid:016x}"}),
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
        out.append(Send(sw.dpid, _with_xid(flows.barrier(None), xid)))
        return out

    def _service_flows(self, plan, f: ServiceFailover) -> list:
        """The flows of one service in its failover state (DESIGN §3, §7)."""
        svc = plan.service
        if f.status == PROTECTED:
            return flows.service_flows(None, plan, hold=bool(self.conf.probe))
        fence = [flows.fence_flow(None, plan)] if plan.primary_port is not None else []
        if f.status == FENCED:
            mirrors = flows.service_flows(None, plan, hold=bool(self.conf.probe)) if plan.primary_port else []
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
        first = not sw.synced
        sw.synced = True
        for name, plan in sw.plans.items():
            svc, f = plan.service, self.failovers[name]
            if f.status != PROTECTED:
                continue
            if first:
                count = len(flows.service_flows(None, plan, hold=bool(self.conf.probe)))
                LOG.info("ftcp: service %s protected on switch %016x: %d flows, primary port %d, mirror port(s) %s",
                         name, dpid, count, plan.primary_port, ",".join(map(str, plan.mirror_ports)))
                out += [RecordService(svc, PROTECTED, {"dpid": f"{dpid:016x}", "flows": count, "reason": "",
                                                       "epoch": f.epoch}),
                        Event("flows_installed", {"service": name, "dpid": f"{dpid:016x}", "flows": count})]
            up = (sw.ports or {}).get(_port_name(sw, plan.primary_port), (None, True))[1]
            if not up and self._seen_alive(name):
                out += self.fail(name, f"link down on port {plan.primary_port} of switch {dpid:016x}", now)
        for token, need in list(self._awaiting.items()):
            if need is None and token.service in sw.plans:
                need = self._awaiting[token] = {}
            if need is not None and xid >= need.get(dpid, xid + 1):
                del need[dpid]
            if need == {}:
                del self._awaiting[token]
                out += self._confirmed(token, now)
        return out

    def _seen_alive(self, name: str) -> bool:
        prober = self.probers.get(name)
        return prober is None or prober.armed

    def _sync(self, action: failover.SyncFlows, now: float) -> list:
        out, need = [], {}
        for sw in self.switches.values():
            if sw.synced:
                out += self._reconcile(sw, now)
                if action.service in sw.plans:
                    need[sw.dpid] = self._xid
        if not need:
            LOG.warning("ftcp: %s: no connected switch carries the service; %s waits for one",
                        action.service, action.step)
        self._awaiting[action] = need or None
        return out

    def _confirmed(self, token: failover.SyncFlows, now: float) -> list:
        f = self.failovers.get(token.service)
        if f is None:
            return []
        self._step(token.service, token.step, now)
        return self._run(f.confirmed(token.step, token.epoch, now), now)

    # --- failover ------------------------------------------------------------------------

    def alive(self, agent: str, now: float) -> bool:
        return now - self.heartbeats.get(agent, float("-inf")) <= self.agent_timeout

    def agent_heartbeat(self, name: str, beat: Optional[dict], now: float) -> None:
        """An agent's heartbeat record as read from Redis (None: there is none)."""
        try:
            stamp = float((beat or {}).get("heartbeat") or "-inf")
        except ValueError:
            return
        if beat and not beat.get("stopped") and beat.get("control", "1") == "1":
            self.heartbeats[name] = stamp
        else:
            self.heartbeats.pop(name, None)

    def fail(self, name: str, reason: str, now: float, backup: Optional[str] = None, retry: bool = False) -> list:
        f = self.failovers.get(name)
        if f is None:
            return []
        actions = f.fail(reason, now, backup=backup, alive=lambda agent: self.alive(agent, now), retry=retry)
        if f.status == FENCED and f.started == now:
            self.timelines[name] = [("detected", now)]
            LOG.warning("ftcp: service %s: %s: failing over to %s (epoch %d)", name, reason, f.backup, f.epoch)
            if name in self.probers:
                self.probers[name].stop()  # held FIN/RST are dropped: the client must not see them
        return self._run(actions, now)

    def control(self, msg: dict, now: float) -> list:
        """A message on the controller's channel: an agent's ready/gone/aborted, or an
        operator's failover request."""
        if not self.active:
            return []
        cmd, name = msg.get("cmd"), msg.get("service")
        if name not in self.failovers:
            LOG.error("ftcp: control message for unknown service: %r", msg)
            return []
        if cmd == "failover":
            return self.fail(name, str(msg.get("reason") or "requested"), now, backup=msg.get("backup"))
        if cmd not in ("ready", "gone", "aborted"):
            LOG.error("ftcp: unknown control message: %r", msg)
            return []
        try:
            epoch = int(msg.get("epoch"))
        except (TypeError, ValueError):
            LOG.error("ftcp: control message without a valid epoch, dropped: %r", msg)
            return []
        f = self.failovers[name]
        actions = f.reply(cmd, epoch, msg.get("backup"), now, msg)
        if not actions:
            LOG.info("ftcp: %s of %s epoch %s from %s ignored (now epoch %d, %s, step %s)", cmd, name, epoch,
                     msg.get("backup"), f.epoch, f.status, f.step)
            return []
        LOG.info("ftcp: %s: %s from %s for epoch %d", name, cmd, msg.get("backup"), epoch)
        self._step(name, cmd, now)
        return self._run(actions, now)

    def start_failover(self, name: str, reason: str, backup: Optional[str], now: float):
        """A failover asked for over REST: (effects, the service's state after it)."""
        out = self.fail(name, reason, now, backup=backup, retry=True)
        f = self.failovers[name]
        return out, {"service": name, "status": f.status, "epoch": f.epoch, "backup": f.backup,
                     "reason": reason}

    def _run(self, actions, now: float) -> list:
        out = []
        for action in actions:
            if isinstance(action, failover.SyncFlows):
                out += self._sync(action, now)
            elif isinstance(action, failover.Send):
                out.append(Publish(agent_channel(action.backup), action.message))
            elif isinstance(action, failover.Record):
                out += self._record(action, now)
            elif isinstance(action, failover.Refused):
                LOG.error("ftcp: service %s: no failover: %s", action.service, action.reason)
                out.append(Event("failover_refused", {"service": action.service, "reason": action.reason}))
                if action.service in self.probers:
                    # try again in a second: the agent may be back by then
                    self.probers[action.service] = self._prober(action.service, armed=True, start=now + 1.0)
        return out

    def _step(self, name: str, step: str, now: float) -> None:
        if name in self.timelines:
            self.timelines[name].append((step, now))

    def _record(self, action: failover.Record, now: float) -> list:
        svc = self.conf.service(action.service)
        detail = dict(action.detail)
        final = action.status == FAILED or detail.get("step") == "done"
        if final and action.service in self.timelines:
            # Where the time went, in ms after the failure was seen: for operators and
            # for the benchmark's breakdown of the stall.
            steps = self.timelines.pop(action.service)
            detail["timeline_ms"] = {step: round((t - steps[0][1]) * 1000, 1) for step, t in steps}
        if action.status in (FAILED_OVER, FAILED) and "takeover_seconds" in detail:
            self.last_takeover_seconds = float(detail["takeover_seconds"])
        if action.status == FAILED or (action.status == FAILED_OVER and detail.get("step") == "redirecting"):
            self.failover_counts[action.status] = self.failover_counts.get(action.status, 0) + 1
        LOG.warning("ftcp: service %s is %s (epoch %d): %s", action.service, action.status, action.epoch, detail)
        fields = {k: v if isinstance(v, str) else _json(v) for k, v in detail.items()}
        return [RecordService(svc, action.status, dict(fields, epoch=action.epoch)),
                Event(f"service_{action.status}", dict(detail, service=action.service, epoch=action.epoch))]

    # --- probes, held segments, ARP ------------------------------------------------------

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

    def tick(self, now: float) -> list:
        if not self.active:
            return []
        out = self._links_confirmed(now)
        for f in list(self.failovers.values()):
            out += self._run(f.tick(now), now)
        for name, prober in list(self.probers.items()):
            # Probe only what is protected on a synced switch.
            if self.failovers[name].status == PROTECTED and any(self._carriers(name)):
                out += self._probe_actions(prober.tick(now), now)
        return out

    def _carriers(self, name: str):
        for sw in self.switches.values():
            plan = sw.plans.get(name)
            if plan is not None and sw.synced and plan.primary_port is not None:
                yield sw, plan

    def _probe_actions(self, actions, now: float) -> list:
        out = []
        probe = self.conf.probe
        for action in actions:
            if isinstance(action, SendProbe):
                out += [Send(sw.dpid, flows.probe_syn(None, plan, probe, action.sport, action.seq))
                        for sw, plan in self._carriers(action.service)]
            elif isinstance(action, ReadPort):
                for sw, plan in self._carriers(action.service):
                    xid = self._next_xid()
                    self._port_reads[(sw.dpid, xid)] = (action.service, action.token)
                    out.append(Send(sw.dpid, _with_xid(flows.port_stats_request(None, plan.primary_port), xid)))
            elif isinstance(action, Release):
                LOG.info("ftcp: %s: a probe sent after the hold was answered: releasing %d held FIN/RST",
                         action.service, len(action.held))
                for dpid, data in action.held:
                    plan = self.switches[dpid].plans.get(action.service) if dpid in self.switches else None
                    if plan is not None:
                        out.append(Send(dpid, flows.release(None, plan, data)))
            elif isinstance(action, Verdict):
                out += self.fail(action.service, action.reason, now)
        return out

    def port_stats(self, dpid: int, xid: int, rx_packets: int, now: float) -> list:
        read = self._port_reads.pop((dpid, xid), None)
        prober = self.probers.get(read[0]) if read else None
        if prober is None:
            return []
        return self._probe_actions(prober.port_counter(rx_packets, read[1], now), now)

    def packet_in(self, dpid: int, in_port: int, cookie: int, data: bytes, now: float) -> list:
        """Only three kinds come here: ARP for addresses the controller answers, answers
        to probes, and FIN/RST segments held from a primary. Anything else is ignored."""
        if not self.active:
            return []
        parts = flows.cookie_parts(cookie)
        if parts and parts[1] in (flows.HOLD_FIN, flows.HOLD_RST):
            return self._held(dpid, data, *parts, now)
        frame = flows.parse_frame(data)
        if frame is None:
            return []
        if frame.kind == "arp":
            mac = self._arp_answer(frame.dst)
            return [Send(dpid, flows.arp_reply(None, in_port, frame, mac))] if mac else []
        probe = self.conf.probe
        if probe is None or frame.dst != probe.address:
            return []
        name = self._by_address.get((frame.src, frame.sport))
        if name not in self.probers:
            return []
        syn_ack = frame.flags & (flows.TCP_SYN | flows.TCP_ACK) == flows.TCP_SYN | flows.TCP_ACK
        rst = bool(frame.flags & flows.TCP_RST)
        out = self._probe_actions(self.probers[name].answer(frame.dport, frame.ack, syn_ack, rst, now), now)
        if syn_ack:
            out += [Send(sw.dpid, flows.probe_rst(None, plan, probe, frame.dport, frame.ack))
                    for sw, plan in self._carriers(name)]
        return out

    def _held(self, dpid: int, data: bytes, service_id: int, purpose: int, now: float) -> list:
        """A FIN/RST from a primary, held by the switch. Only the first of a hold is
        parsed and logged (it probes); the rest just join it."""
        name = self._by_cookie.get(service_id)
        if name not in self.probers:
            return []
        actions = self.probers[name].hold((dpid, bytes(data)), now)
        if actions:
            frame = flows.parse_frame(data)
            LOG.info("ftcp: %s: held a %s from the primary to %s:%s; probing (later ones join it)", name,
                     "FIN" if purpose == flows.HOLD_FIN else "RST", frame.dst if frame else "?",
                     frame.dport if frame else "?")
        return self._probe_actions(actions, now)

    def _arp_answer(self, ip: str) -> Optional[str]:
        """The MAC the controller answers ARP with: the probe address, and the address
        of a service whose primary is gone (the backup answers with the service's MAC)."""
        if self.conf.probe and ip == self.conf.probe.address:
            return self.conf.probe.mac
        for svc in self.conf.services:
            if svc.address == ip and self.failovers[svc.name].status in (FAILED_OVER, FAILED):
                return svc.primary.mac
        return None

    def error(self, dpid: int, kind: int, code: int, now: float) -> list:
        LOG.error("ftcp: switch %016x rejected a message: type=%d code=%d", dpid, kind, code)
        return [Event("switch_error", {"dpid": f"{dpid:016x}", "type": kind, "code": code})]

    # --- numbers for /metrics --------------------------------------------------------------

    def counters(self) -> dict:
        """Probes, held FIN/RST, failovers and their duration."""
        probes = {"alive": 0, "rst": 0, "timeout": 0, "held": 0, "released": 0}
        for prober in self.probers.values():
            probes["alive"] += prober.stats["alive"]
            probes["rst"] += prober.stats["dead"]
            probes["timeout"] += prober.stats["missed"]
            probes["held"] += prober.stats["held"]
            probes["released"] += prober.stats["released"]
        return {"probes": probes, "failovers": dict(self.failover_counts),
                "last_takeover_seconds": self.last_takeover_seconds}

    def _next_xid(self) -> int:
        self._xid = self._xid + 1 if self._xid < 0xFFFFFFFF else 0x80000000
        return self._xid


def _with_xid(msg, xid: int):
    msg.xid = xid
    return msg


def _port_name(sw: Switch, number: int) -> Optional[str]:
    for name, (no, _) in (sw.ports or {}).items():
        if no == number:
            return name
    return None


def _json(value) -> str:
    return json.dumps(value)

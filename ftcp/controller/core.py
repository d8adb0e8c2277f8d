"""The controller's core: services x switches x failovers (pure).

Every method takes an event and ``now`` and returns effects for the Ryu shim
(ryu_apps/ftcp_app.py) to carry out: OpenFlow messages for a switch (``Send``),
control messages for an agent (``Publish``), records for Redis (``RecordService``,
``Event``). Nothing here does I/O, so every rule is unit-tested with a fake flow table
and a fake clock. A request the core will not carry out raises ``Refusal``, which says
why (and carries the effects to dispatch all the same).

State lives in Redis and in the switches; this is a cache of both:

* ``restore`` takes each service's record from Redis (status, epoch, backup, step) and
  carries on with a failover a previous controller left half done (ftcp/controller/failover.py).
  Until it has run, no switch is touched: fail_mode=secure keeps their flows.
* A switch that connects is asked for its ports and its ftcp flows; the flows are then
  reconciled by diff: what is missing is added, what is stale is deleted, nothing is
  deleted and added again. A service that failed over keeps its fence and redirect
  through a controller restart or a switch reconnect.
* A failover step that changes flows is confirmed by a barrier from every switch
  that carries the service; a switch lost before its reply confirms with the barrier
  of its reconcile when it comes back.

The core owns the services, their failovers and the two-controller role, and composes
two managers that own their own state: ``Switches`` (ftcp/controller/switches.py: the
switches' ports, flows, reconciles and barriers) and ``Liveness``
(ftcp/controller/liveness.py: probes, held FIN/RST, links down, ARP). What the managers
cannot decide alone comes back to the core among their effects (a ``prober.Verdict``
condemns a service) or as their answer (the steps a barrier confirms).

This module is long because it is where every event of the controller meets the
services' failovers; each kind of state it touches is a manager's or a state machine's.
"""
from __future__ import annotations

import json
import logging
from typing import Optional

from ftcp.common.config import Config, ConfigError, Service, with_service, without_service
from ftcp.common.keys import agent_channel
from ftcp.common.statuses import PRIMARY, ServiceStatus
from ftcp.controller import failover
from ftcp.controller.effects import Event, ForgetService, Publish, RecordService
from ftcp.controller.failover import ServiceFailover
from ftcp.controller.liveness import Liveness
from ftcp.controller.of import messages
from ftcp.controller.placement import ServicePlan
from ftcp.controller.prober import Verdict
from ftcp.controller.switches import Switches, Xids

LOG = logging.getLogger(__name__)
AGENT_TIMEOUT = 3.0   # an agent whose heartbeat is older than this is not taken as alive


class Refusal(Exception):
    """A request the core will not carry out: an HTTP-like ``status`` (409: not in this
    state, 503: not this controller's to do), the reason and the field it concerns.
    ``effects`` are still to be dispatched (the refusal's event)."""

    def __init__(self, status: int, reason: str, field: Optional[str] = None, effects: tuple = ()):
        super().__init__(reason)
        self.status, self.reason, self.field, self.effects = status, reason, field, list(effects)


class Controller:
    def __init__(self, conf: Config, takeover_timeout: float = 5.0, retry: float = 0.25,
                 agent_timeout: float = AGENT_TIMEOUT, active: bool = True):
        self.conf = conf
        self.takeover_timeout, self.retry, self.agent_timeout = takeover_timeout, retry, agent_timeout
        self.active = active       # False: a standby controller, which sends nothing (promote)
        self.generation = None     # the OpenFlow role generation id, when two controllers share switches
        self.loaded = False
        self.failovers = {}
        self.epochs = {}           # service -> its last epoch, removed services' too (ftcp:epochs)
        self.heartbeats = {}       # agent name -> its last heartbeat time
        self.boots = {}            # agent name -> when that agent started (its heartbeat's "started")
        self.timelines = {}        # service -> [(step, time)] of the failover under way
        self.failover_counts = {}
        self.last_takeover_seconds = 0.0
        xids = Xids()
        self.switches = Switches(lambda: self.conf, self._status, self._wanted, xids, self._serving)
        self.liveness = Liveness(lambda: self.conf, self._status, self.switches, xids, self._serving)
        self._index()

    # --- services ------------------------------------------------------------------------

    def _index(self):
        for svc in self.conf.services:
            backups = tuple(b.name for b in svc.backups)
            if svc.name in self.failovers:
                self.failovers[svc.name].backups = backups
            else:
                # a service defined again goes on from its last epoch: epochs never go back
                self.failovers[svc.name] = ServiceFailover(svc.name, backups, epoch=self.epochs.get(svc.name, 0),
                                                           timeout=self.takeover_timeout, retry=self.retry)
        for name in set(self.failovers) - {s.name for s in self.conf.services}:
            del self.failovers[name]
        self.liveness.index()

    def _status(self, name: str) -> tuple:
        f = self.failovers[name]
        return f.status, f.epoch

    def restore(self, records: dict, now: float, epochs: Optional[dict] = None) -> list:
        """The services' records as Redis holds them ({name: hash or None}) and the last
        epoch of every service ever defined (``ftcp:epochs``); then the switches that
        connected meanwhile are reconciled."""
        out = []
        self.epochs.update(epochs or {})
        for svc in self.conf.services:
            record = dict(records.get(svc.name) or {})
            if svc.name in self.epochs:
                record["epoch"] = max(self.epochs[svc.name], _epoch(record))
            # seen alive before: silence or a RST now condemns it
            self.liveness.restored(svc.name, record.get("status") == ServiceStatus.PROTECTED, now)
            f, actions = ServiceFailover.restored(svc.name, tuple(b.name for b in svc.backups), record, now,
                                                  timeout=self.takeover_timeout, retry=self.retry)
            self.failovers[svc.name] = f
            if f.status != ServiceStatus.PROTECTED:
                LOG.warning("ftcp: service %s was %s (epoch %d, backup %s, step %s) when the controller "
                            "started: carrying on", svc.name, f.status, f.epoch, f.backup, record.get("step"))
                self.timelines[svc.name] = [("restored", now)]
                self.liveness.stop(svc.name)
            if not records.get(svc.name):
                out.append(RecordService(svc, ServiceStatus.CONFIGURED, {"epoch": f.epoch}))
            out += self._run(actions, now)
        self.loaded = True
        out.append(Event("controller_started", {"services": [s.name for s in self.conf.services]}))
        return out + self.switches.reconcile_all(now)

    # --- two controllers ---------------------------------------------------------------------

    def promote(self, records: dict, generation: int, now: float, epochs: Optional[dict] = None) -> list:
        """This controller now holds the lease: claim the master role on every switch
        (``generation`` makes a deposed master's messages stale there), re-read what
        Redis and the switches hold, and act from then on."""
        LOG.warning("ftcp: this controller is the master now (generation %d)", generation)
        self.active, self.generation = True, generation
        self._forget_pending()
        return self.switches.reclaim(self.generation) + self.restore(records, now, epochs)

    def demote(self, now: float) -> list:
        """Another controller acts now (or the lease could not be renewed): send nothing."""
        LOG.warning("ftcp: this controller is a standby now")
        self.active, self.loaded = False, False
        self._forget_pending()
        self.liveness.stop()
        return [Event("controller_standby", {})]

    def _forget_pending(self):
        self.switches.forget_pending()
        self.liveness.forget_pending()
        self.timelines.clear()

    def _master(self) -> None:
        if not self.active:
            raise Refusal(503, "this controller is a standby: ask the master (ftcp:controller:leader in Redis)")

    # --- switches ------------------------------------------------------------------------------

    def switch_connected(self, dpid: int, now: float) -> list:
        return self.switches.connected(dpid, now, claim=self.active, generation=self.generation)

    def switch_gone(self, dpid: int, now: float) -> list:
        self.switches.gone(dpid)
        self.liveness.switch_gone(dpid)
        return []

    def switch_since(self, dpid: int) -> Optional[float]:
        sw = self.switches.get(dpid)
        return sw.since if sw is not None else None

    def port_desc(self, dpid: int, ports: dict, now: float) -> list:
        """The switch's ports: {name: (number, link up)}."""
        return self.switches.port_desc(dpid, ports, self.loaded, now)

    def flow_stats(self, dpid: int, xid: int, body: list, more: bool, now: float) -> list:
        return self.switches.flow_stats(dpid, xid, body, more, self.loaded, now)

    def port_status(self, dpid: int, number: int, name: str, up: bool, change: str, now: float) -> list:
        """A port went down, came up, was added or deleted (``change``)."""
        if not self.active:
            return []
        sw = self.switches.get(dpid)
        if sw is None or sw.ports is None:
            return []
        out = []
        if up:
            out += self.liveness.link_up(dpid, number)
        elif self.switches.serving_on(dpid, number):
            out += self._settle(self.liveness.link_down(dpid, number, change == "delete", now), now)
        return out + self.switches.port_changed(dpid, number, name, up, change, now)

    def barrier_reply(self, dpid: int, xid: int, now: float) -> list:
        if not self.active:
            return []
        answer = self.switches.barrier_reply(dpid, xid)
        if answer is None:
            return []
        out, down = answer
        for plan, host in down:
            self.liveness.found_down(dpid, host.data_port, plan.service.name, now)
        out += self._settle(self.liveness.links_confirmed(now), now)
        for token in self.switches.confirmed(dpid, xid):
            f = self.failovers.get(token.service)
            if f is not None:
                self._step(token.service, token.step, now)
                out += self._run(f.confirmed(token.step, token.epoch, now), now)
        return out

    def error(self, dpid: int, kind: int, code: int, now: float) -> list:
        LOG.error("ftcp: switch %016x rejected a message: type=%d code=%d", dpid, kind, code)
        return [Event("switch_error", {"dpid": f"{dpid:016x}", "type": kind, "code": code})]

    def _serving(self, name: str) -> str:
        return self.failovers[name].serving

    def _wanted(self, plan: ServicePlan) -> list:
        """The flows of one service on one switch in its failover state: the hosts
        earlier failovers took it from stay fenced; the host serving gets its clients,
        every protector a copy of both directions (the client's side of any rewrite)."""
        svc, f = plan.service, self.failovers[plan.service.name]
        probe_ip = self.conf.probe.address if self.conf.probe else None
        names = {b.name for b in svc.backups}
        gone = [n for n in (f.serving, *f.fenced, f.backup) if n not in names | {PRIMARY} and n]
        if gone:
            # recorded with a backup the definition no longer has (renamed while the
            # controller was down): keep the known hosts fenced, redirect nowhere
            LOG.error("ftcp: service %s is %s with %s, not among its backups now", svc.name, f.status,
                      ", ".join(gone))
            return [messages.fence_flow(plan, h) for h in plan.hosts if h.data_port is not None]
        fences = [messages.fence_flow(plan, plan.host(n)) for n in f.fenced if plan.host(n).data_port is not None]
        serving = plan.host(f.serving)
        protectors = tuple(plan.host(n) for n in f.protectors())
        if f.status == ServiceStatus.PROTECTED:
            return fences + messages.service_flows(plan, serving, protectors, probe_ip=probe_ip)
        fences += [messages.fence_flow(plan, serving)] if serving.data_port is not None else []
        to = plan.host(f.backup)
        others = tuple(p for p in protectors if p.name != to.name)
        if f.status == ServiceStatus.FAILING_OVER:
            served = messages.service_flows(plan, serving, protectors, probe_ip=probe_ip) \
                if serving.data_port else []
            return fences + served + [messages.redirect_s2c_flow(plan, to, svc.primary.mac, others)]
        if f.status == ServiceStatus.FAILED_OVER:
            return fences + messages.redirect_flows(plan, to, svc.primary.mac, others) + \
                messages.mirror_port_drops(plan)
        return fences + messages.redirect_flows(plan, to, svc.primary.mac) + messages.mirror_port_drops(plan)

    # --- packet-ins and port counters: the liveness of primaries ---------------------------------

    def packet_in(self, dpid: int, in_port: int, cookie: int, data: bytes, now: float) -> list:
        if not self.active:
            return []
        return self._settle(self.liveness.packet_in(dpid, in_port, cookie, data, now), now)

    def port_stats(self, dpid: int, xid: int, rx_packets: int, now: float) -> list:
        return self._settle(self.liveness.port_stats(dpid, xid, rx_packets, now), now)

    def _settle(self, items: list, now: float) -> list:
        """The managers' effects, with each verdict on a service turned into its failover."""
        out = []
        for item in items:
            if isinstance(item, Verdict):
                out += self.fail(item.service, item.reason, now)
            else:
                out.append(item)
        return out

    # --- services ----------------------------------------------------------------------------

    def apply_service(self, service: Service, now: float) -> list:
        """Create or replace a service (ConfigError: nothing changed); every switch
        is reconciled to the new definition by diff."""
        self._master()
        old = self.conf.service(service.name)
        f = self.failovers.get(service.name)
        names = {b.name for b in service.backups}
        if f is not None and f.status != ServiceStatus.PROTECTED and f.backup not in names:
            raise ConfigError("backups", f"service {service.name} is {f.status} to {f.backup}: "
                                         f"keep {f.backup} among its backups")
        if f is not None and f.serving != PRIMARY and f.serving not in names:
            raise ConfigError("backups", f"service {service.name} is served by {f.serving}: "
                                         f"keep {f.serving} among its backups")
        self.conf = with_service(self.conf, service)
        self._index()
        f = self.failovers[service.name]
        status = ServiceStatus.CONFIGURED if f.status == ServiceStatus.PROTECTED else f.status
        out = [RecordService(service, status, {"epoch": f.epoch}),
               Event("service_configured", {"service": service.name})]
        out += self.switches.service_changed(service.name, removed=False, now=now)
        # The backups' agents log the new service from now on (a backup the new
        # definition no longer lists stops: the same message tells it).
        for name in sorted({b.name for b in service.backups} | {b.name for b in (old.backups if old else ())}):
            out.append(Publish(agent_channel(name), {"cmd": "service", "service": service.to_dict()}))
        return out

    def remove_service(self, name: str, now: float) -> list:
        self._master()
        svc = self.conf.service(name)
        self.epochs[name] = max(self.epochs.get(name, 0), self.failovers[name].epoch)
        self.conf = without_service(self.conf, name)
        self._index()
        self.timelines.pop(name, None)
        out = [ForgetService(name), Event("service_deleted", {"service": name})]
        out += self.switches.service_changed(name, removed=True, now=now)
        out += [Publish(agent_channel(b.name), {"cmd": "forget", "service": name}) for b in svc.backups]
        return out

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
            self.boots[name] = beat.get("started")
        else:
            self.heartbeats.pop(name, None)

    def fail(self, name: str, reason: str, now: float, backup: Optional[str] = None, retry: bool = False) -> list:
        f = self.failovers.get(name)
        if f is None:
            return []
        actions = f.fail(reason, now, backup=backup, alive=lambda agent: self.alive(agent, now), retry=retry)
        if f.status == ServiceStatus.FAILING_OVER and f.started == now:
            self.timelines[name] = [("detected", now)]
            LOG.warning("ftcp: service %s: %s: failing over to %s (epoch %d)", name, reason, f.backup, f.epoch)
            self.liveness.stop(name)  # held FIN/RST are dropped: the client must not see them
        return self._run(actions, now)

    def control(self, msg: dict, now: float) -> list:
        """An agent's answer (ready, gone or aborted), from its answer stream."""
        if not self.active:
            return []
        cmd, name = msg.get("cmd"), msg.get("service")
        if cmd == "invalid":
            LOG.warning("ftcp: control message refused (%s): %.200s", msg.get("why"), msg.get("raw"))
            return []
        if name not in self.failovers:
            LOG.error("ftcp: control message for unknown service: %r", msg)
            return []
        if cmd not in ("ready", "gone", "aborted"):   # operators use REST, which needs the token
            LOG.error("ftcp: unknown control message: %r", msg)
            return []
        try:
            epoch = int(msg.get("epoch"))
        except (TypeError, ValueError):
            LOG.error("ftcp: control message without a valid epoch, dropped: %r", msg)
            return []
        if not isinstance(msg.get("taken", []), list) or not isinstance(msg.get("failed", {}), dict) \
                or not isinstance(msg.get("id", ""), str):
            LOG.error("ftcp: control message of the wrong shape, dropped: %.300r", msg)
            return []
        f = self.failovers[name]
        actions = f.reply(cmd, epoch, msg.get("backup"), now, msg, alive=lambda agent: self.alive(agent, now))
        if not actions:
            LOG.info("ftcp: %s of %s epoch %s from %s ignored (now epoch %d, %s, step %s)", cmd, name, epoch,
                     msg.get("backup"), f.epoch, f.status, f.step)
            return []
        LOG.info("ftcp: %s: %s from %s for epoch %d", name, cmd, msg.get("backup"), epoch)
        self._step(name, cmd, now)
        return self._run(actions, now)

    def start_failover(self, name: str, reason: str, backup: Optional[str], now: float):
        """A failover (or a planned migration) asked for over REST: (effects, the
        service's state after it); Refusal if the service cannot move now."""
        self._master()
        f = self.failovers[name]
        before = f.status
        if before not in (ServiceStatus.PROTECTED, ServiceStatus.FAILOVER_FAILED):
            raise Refusal(409, f"service {name} is {before}, not protected: nothing to move", "name")
        out = self.fail(name, reason, now, backup=backup, retry=True)
        if f.status == before:
            raise Refusal(409, f"service {name} cannot fail over now: no live backup agent", "name", effects=out)
        return out, {"service": name, "status": f.status, "epoch": f.epoch, "backup": f.backup,
                     "reason": reason}

    def _run(self, actions, now: float) -> list:
        out = []
        for action in actions:
            if isinstance(action, failover.SyncFlows):
                out += self.switches.sync(action, now)
            elif isinstance(action, failover.Order):
                # for the agent running now: a sealed takeover, go or abort replayed to a
                # restarted agent is not obeyed again (it was not for that run); the
                # core resends each until answered, so a run it has not seen yet gets it
                boot = self.boots.get(action.backup)
                message = dict(action.message, boot=boot) if boot else action.message
                out.append(Publish(agent_channel(action.backup), message))
            elif isinstance(action, failover.Record):
                out += self._record(action, now)
            elif isinstance(action, failover.Refused):
                LOG.error("ftcp: service %s: no failover: %s", action.service, action.reason)
                out.append(Event("failover_refused", {"service": action.service, "reason": action.reason}))
                self.liveness.rearm(action.service, now)
        return out

    def _step(self, name: str, step: str, now: float) -> None:
        if name in self.timelines:
            self.timelines[name].append((step, now))

    def _record(self, action: failover.Record, now: float) -> list:
        svc = self.conf.service(action.service)
        detail = dict(action.detail)
        final = action.status == ServiceStatus.FAILOVER_FAILED or detail.get("step") == "done"
        if final and action.service in self.timelines:
            # Where the time went, in ms after the failure was seen: for operators and
            # for the benchmark's breakdown of the stall.
            steps = self.timelines.pop(action.service)
            detail["timeline_ms"] = {step: round((t - steps[0][1]) * 1000, 1) for step, t in steps}
        if action.status in (ServiceStatus.FAILED_OVER, ServiceStatus.FAILOVER_FAILED) and "takeover_seconds" in detail:
            self.last_takeover_seconds = float(detail["takeover_seconds"])
        if action.status == ServiceStatus.FAILOVER_FAILED or (action.status == ServiceStatus.FAILED_OVER
                                                              and detail.get("step") == "redirecting"):
            self.failover_counts[action.status] = self.failover_counts.get(action.status, 0) + 1
        LOG.warning("ftcp: service %s is %s (epoch %d): %s", action.service, action.status, action.epoch, detail)
        self.epochs[action.service] = max(self.epochs.get(action.service, 0), action.epoch)
        if action.status == ServiceStatus.PROTECTED and detail.get("step") == "reprotected":
            # the host now serving is probed from here on (condemned once it answered one)
            self.liveness.restored(action.service, False, now)
            LOG.warning("ftcp: service %s is protected again: %s serves it, %s protect it", action.service,
                        detail.get("serving"), ", ".join(self.failovers[action.service].protectors()) or "nobody")
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in detail.items()}
        return [RecordService(svc, action.status, dict(fields, epoch=action.epoch)),
                Event(f"service_{action.status}", dict(detail, service=action.service, epoch=action.epoch))]

    # --- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> list:
        if not self.active:
            return []
        out = self._settle(self.liveness.links_confirmed(now), now)
        for f in list(self.failovers.values()):
            out += self._run(f.tick(now), now)
        return out + self._settle(self.liveness.probe(now), now)

    # --- numbers for /metrics ---------------------------------------------------------------

    def counters(self) -> dict:
        """Probes, held FIN/RST, failovers and their duration."""
        return {"probes": self.liveness.counters(), "failovers": dict(self.failover_counts),
                "last_takeover_seconds": self.last_takeover_seconds}


def _epoch(record: dict) -> int:
    try:
        return int(record.get("epoch") or 0)
    except ValueError:
        return 0

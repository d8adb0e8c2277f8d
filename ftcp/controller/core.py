"""The controller's core: services x switches x failovers (pure; DESIGN §11, §13).

Every method takes an event and ``now`` and returns effects for the Ryu shim
(ryu_apps/ftcp_app.py) to carry out: OpenFlow messages for a switch (``Send``),
control messages for an agent (``Publish``), records for Redis (``RecordService``,
``Event``). Nothing here does I/O, so every rule is unit-tested with a fake flow table
and a fake clock.

State lives in Redis and in the switches; this is a cache of both:

* ``restore`` takes each service's record from Redis (status, epoch, backup, step) and
  carries on with a failover a previous controller left half done (ftcp/controller/failover.py).
  Until it has run, no switch is touched: fail_mode=secure keeps their flows.
* A switch that connects is asked for its ports and its ftcp flows; the flows are then
  reconciled by diff (``flows.reconcile``): what is missing is added, what is stale is
  deleted, nothing is deleted and added again. A service that failed over keeps its
  fence and redirect through a controller restart or a switch reconnect.
* A failover step that changes flows is confirmed by a barrier from every switch
  that carries the service; a switch lost before its reply confirms with the barrier
  of its reconcile when it comes back.

This file holds the services, the failovers and the two-controller roles; the switches'
side is ftcp/controller/switches.py, the liveness of primaries (probes, held FIN/RST, ARP)
ftcp/controller/liveness.py, both mixed into ``Controller``; the effects are ftcp/controller/effects.py.
"""
from __future__ import annotations

import json
import logging
from typing import Optional

from ftcp.controller import failover
from ftcp.controller.of import flows
from ftcp.common.config import Config, ConfigError, Service, with_service, without_service
from ftcp.controller.effects import Event, ForgetService, Publish, RecordService, Send
from ftcp.controller.failover import ServiceFailover
from ftcp.common.statuses import ServiceStatus
from ftcp.controller.liveness import Liveness
from ftcp.controller.prober import Prober
from ftcp.common.store import agent_channel
from ftcp.controller.switches import Switch, SwitchSync

LOG = logging.getLogger("ftcp.controller.core")
AGENT_TIMEOUT = 3.0   # an agent whose heartbeat is older than this is not taken as alive


class Controller(SwitchSync, Liveness):
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
        self.boots = {}            # agent name -> when that agent started (its heartbeat's "started")
        self.timelines = {}        # service -> [(step, time)] of the failover under way
        self._barriers = {}        # (dpid, xid) -> True for a reconcile barrier
        self._awaiting = {}        # SyncFlows -> (xid when asked, {dpid: barrier xid that confirms it})
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
        """A fresh prober; ``armed``: the service was seen alive before, so silence
        (counted from ``start``) or RSTs condemn it without a first SYN-ACK."""
        probe = self.conf.probe
        prober = Prober(name, probe.interval, probe.misses, refusals=probe.refusals)
        prober.armed, prober.next_at, prober.last_answer = armed, start, start
        return prober

    def restore(self, records: dict, now: float) -> list:
        """The services' records as Redis holds them ({name: hash or None}); then the
        switches that connected meanwhile are reconciled."""
        out = []
        for svc in self.conf.services:
            record = records.get(svc.name) or {}
            if self.conf.probe:
                # seen alive before: silence or a RST now condemns it
                armed = record.get("status") == ServiceStatus.PROTECTED
                self.probers[svc.name] = self._prober(svc.name, armed=armed, start=now)
            f, actions = ServiceFailover.restored(svc.name, tuple(b.name for b in svc.backups), record, now,
                                                  timeout=self.takeover_timeout, retry=self.retry)
            self.failovers[svc.name] = f
            if f.status != ServiceStatus.PROTECTED:
                LOG.warning("ftcp: service %s was %s (epoch %d, backup %s, step %s) when the controller "
                            "started: carrying on", svc.name, f.status, f.epoch, f.backup, record.get("step"))
                self.timelines[svc.name] = [("restored", now)]
                if svc.name in self.probers:
                    self.probers[svc.name].stop()
            if not record:
                out.append(RecordService(svc, ServiceStatus.CONFIGURED, {"epoch": f.epoch}))
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
        f = self.failovers.get(service.name)
        if f is not None and f.status != ServiceStatus.PROTECTED and f.backup not in {b.name for b in service.backups}:
            raise ConfigError("backups", f"service {service.name} is {f.status} to {f.backup}: "
                                         f"keep {f.backup} among its backups")
        self.conf = with_service(self.conf, service)
        self._index()
        f = self.failovers[service.name]
        status = ServiceStatus.CONFIGURED if f.status == ServiceStatus.PROTECTED else f.status
        out = [RecordService(service, status, {"epoch": f.epoch}),
               Event("service_configured", {"service": service.name})]
        for sw in self.switches.values():
            sw.recorded.discard(service.name)   # "protected" again once the new flows are confirmed
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
            sw.recorded.discard(name)
            out += self._reconcile(sw, now)
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
            if name in self.probers:
                self.probers[name].stop()  # held FIN/RST are dropped: the client must not see them
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
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in detail.items()}
        return [RecordService(svc, action.status, dict(fields, epoch=action.epoch)),
                Event(f"service_{action.status}", dict(detail, service=action.service, epoch=action.epoch))]

    # --- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> list:
        if not self.active:
            return []
        out = self._links_confirmed(now)
        for f in list(self.failovers.values()):
            out += self._run(f.tick(now), now)
        for name, prober in list(self.probers.items()):
            # Probe only what is protected on a synced switch.
            if self.failovers[name].status == ServiceStatus.PROTECTED and any(self._carriers(name)):
                out += self._probe_actions(prober.tick(now), now)
        return out

    # --- numbers for /metrics ---------------------------------------------------------------

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

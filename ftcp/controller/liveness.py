"""Is the primary alive? Probes, held FIN/RST, links down and ARP answers, wired to the
switches (pure; each service's prober is ftcp/controller/prober.py).

Probes go out of every switch that carries the service; their answers, ARP requests for
the probe address (and for a failed-over service's address) and the FIN/RST segments a
primary's switch port holds come back as packet-ins. A primary's link that goes down is
confirmed for ``probe.link_confirm`` before it condemns the service.

``Liveness`` owns the probers, the port-counter reads under way and the links being
confirmed. It does not fail anything over itself: a condemned service comes back to the
core as a ``prober.Verdict`` among the effects, and the core runs the failover.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from ftcp.common.config import Config
from ftcp.common.statuses import PRIMARY, ServiceStatus
from ftcp.controller.effects import Event, Send
from ftcp.controller.of import messages
from ftcp.controller.of.cookies import HOLD_FIN, HOLD_RST, PROBE_REPLY, cookie_parts
from ftcp.controller.of.packets import TCP_ACK, TCP_RST, TCP_SYN, parse_frame
from ftcp.controller.prober import Prober, ReadPort, Release, SendProbe, Verdict
from ftcp.controller.switches import Switches, Xids

LOG = logging.getLogger(__name__)
REARM_AFTER = 1.0   # a refused failover: probe again after this long (the agent may be back)


class Liveness:
    """The probers of every service, port reads and links down.

    ``config`` gives the services as now defined, ``status(name)`` a service's failover
    status and epoch."""

    def __init__(self, config: Callable[[], Config], status: Callable[[str], tuple], switches: Switches,
                 xids: Xids, serving: Callable[[str], str] = lambda name: PRIMARY):
        self._config, self._status, self._switches, self._xids = config, status, switches, xids
        self._serving = serving   # the name of the host serving a service now: the one probed
        self.probers = {}
        self._port_reads = {}      # (dpid, xid) -> (service, token)
        self._links_down = {}      # (dpid, port) -> (when it fails over, why): a link down being confirmed
        self._by_cookie, self._by_address = {}, {}

    # --- services ------------------------------------------------------------------------------

    def index(self) -> None:
        """Follow the services as now defined: a prober for each new one, none for a removed one."""
        conf = self._config()
        if conf.probe:
            for svc in conf.services:
                if svc.name not in self.probers:
                    self.probers[svc.name] = self._prober(svc.name)
        for name in set(self.probers) - {s.name for s in conf.services}:
            del self.probers[name]
        self._by_cookie = {s.cookie_id: s.name for s in conf.services}
        # probe answers come from the serving host's own address: the primary's is the
        # service's, a backup's its own
        self._by_address = {(s.address, s.port): s.name for s in conf.services}
        self._by_address.update({(b.address, s.port): s.name for s in conf.services for b in s.backups})

    def _prober(self, name: str, armed: bool = False, start: float = 0.0) -> Prober:
        """A fresh prober; ``armed``: the service was seen alive before, so silence
        (counted from ``start``) or RSTs condemn it without a first SYN-ACK."""
        probe = self._config().probe
        prober = Prober(name, probe.interval, probe.misses, refusals=probe.refusals)
        prober.armed, prober.next_at, prober.last_answer = armed, start, start
        return prober

    def restored(self, name: str, seen_alive: bool, now: float) -> None:
        """The service's state was read from Redis: probe it afresh (``seen_alive``: it
        was protected, so silence or a RST now condemns it)."""
        if self._config().probe:
            self.probers[name] = self._prober(name, armed=seen_alive, start=now)

    def stop(self, name: Optional[str] = None) -> None:
        """Stop probing one service (it is failing over: held FIN/RST are dropped, the
        client must not see them), or every one (a standby controller)."""
        for key, prober in self.probers.items():
            if name is None or key == name:
                prober.stop()

    def rearm(self, name: str, now: float) -> None:
        """A failover was refused: probe again a little later (the agent may be back by then)."""
        if name in self.probers:
            self.probers[name] = self._prober(name, armed=True, start=now + REARM_AFTER)

    def seen_alive(self, name: str) -> bool:
        prober = self.probers.get(name)
        return prober is None or prober.armed

    def forget_pending(self) -> None:
        self._port_reads.clear()
        self._links_down.clear()

    def switch_gone(self, dpid: int) -> None:
        for key in [k for k in self._port_reads if k[0] == dpid]:
            del self._port_reads[key]

    def port_reads(self) -> list:
        """The (dpid, xid) of every port-counter read awaiting its reply."""
        return list(self._port_reads)

    # --- links ---------------------------------------------------------------------------------

    def _link_confirm(self) -> float:
        probe = self._config().probe
        return probe.link_confirm if probe else 0.0

    def link_up(self, dpid: int, number: int) -> list:
        if self._links_down.pop((dpid, number), None):
            LOG.warning("ftcp: port %d of switch %016x is up again within probe.link_confirm: no failover",
                        number, dpid)
            return [Event("link_flap", {"dpid": f"{dpid:016x}", "port": number})]
        return []

    def link_down(self, dpid: int, number: int, deleted: bool, now: float) -> list:
        """A primary's port went down (or was deleted: no confirmation wait)."""
        why = f"{'deleted' if deleted else 'link down'} on port {number} of switch {dpid:016x}"
        self._links_down[(dpid, number)] = (now + (0.0 if deleted else self._link_confirm()), why)
        return self.links_confirmed(now)

    def found_down(self, dpid: int, number: int, service: str, now: float) -> None:
        """A primary's link found down at a connect or a reconcile: the same confirmation as a port-status."""
        if self.seen_alive(service):
            why = f"link down on port {number} of switch {dpid:016x}"
            self._links_down.setdefault((dpid, number), (now + self._link_confirm(), why))

    def links_confirmed(self, now: float) -> list:
        """Verdicts on the services whose primary's link stayed down long enough."""
        out = []
        for (dpid, number), (when, why) in list(self._links_down.items()):
            if now < when:
                continue
            del self._links_down[(dpid, number)]
            out += [Verdict(name, "link", why) for name in self._switches.serving_on(dpid, number)]
        return out

    # --- probes --------------------------------------------------------------------------------

    def probe(self, now: float) -> list:
        out = []
        for name, prober in list(self.probers.items()):
            # Probe only what is protected on a synced switch.
            if self._status(name)[0] == ServiceStatus.PROTECTED and any(self._switches.carriers(name)):
                out += self._probe_actions(prober.tick(now))
        return out

    def _probe_actions(self, actions) -> list:
        out = []
        probe = self._config().probe
        for action in actions:
            if isinstance(action, SendProbe):
                out += [Send(sw.dpid, messages.probe_syn(plan, host, probe, action.sport, action.seq))
                        for sw, plan, host in self._switches.carriers(action.service)]
            elif isinstance(action, ReadPort):
                for sw, plan, host in self._switches.carriers(action.service):
                    xid = self._xids.next()
                    self._port_reads[(sw.dpid, xid)] = (action.service, action.token)
                    out.append(Send(sw.dpid, messages.port_stats_request(host.data_port, xid)))
            elif isinstance(action, Release):
                LOG.info("ftcp: %s: a probe sent after the hold was answered: releasing %d held FIN/RST",
                         action.service, len(action.held))
                for dpid, data in action.held:
                    plan = self._switches.plan(dpid, action.service)
                    if plan is not None:
                        out.append(Send(dpid, self._release(plan, data)))
            elif isinstance(action, Verdict):
                out.append(action)
        return out

    def port_stats(self, dpid: int, xid: int, rx_packets: int, now: float) -> list:
        read = self._port_reads.pop((dpid, xid), None)
        prober = self.probers.get(read[0]) if read else None
        if prober is None:
            return []
        return self._probe_actions(prober.port_counter(rx_packets, read[1], now))

    def packet_in(self, dpid: int, in_port: int, cookie: int, data: bytes, now: float) -> list:
        """Only three kinds come here: ARP for addresses the controller answers, answers
        to probes, and FIN/RST segments held from a primary. Anything else is ignored."""
        parts = cookie_parts(cookie)
        if parts and parts[1] in (HOLD_FIN, HOLD_RST):
            return self._held(dpid, data, *parts, now)
        frame = parse_frame(data)
        if frame is None:
            return []
        if frame.kind == "arp":
            mac = self._arp_answer(frame.dst)
            return [Send(dpid, messages.arp_reply(in_port, frame, mac))] if mac else []
        probe = self._config().probe
        if probe is None or frame.dst != probe.address or parts is None or parts[1] != PROBE_REPLY:
            return []   # an answer to a probe comes only by the primary's probe-reply flow
        name = self._by_address.get((frame.src, frame.sport))
        if name not in self.probers:
            return []
        syn_ack = frame.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
        rst = bool(frame.flags & TCP_RST)
        out = self._probe_actions(self.probers[name].answer(frame.dport, frame.ack, syn_ack, rst, now))
        if syn_ack:
            out += [Send(sw.dpid, messages.probe_rst(plan, host, probe, frame.dport, frame.ack))
                    for sw, plan, host in self._switches.carriers(name)]
        return out

    def _release(self, plan, data: bytes):
        """A held FIN/RST of the serving host, sent on as it would have gone: to the
        client and the protectors' mirrors (from a backup, rewritten as its redirect is)."""
        serving = self._switches.serving_host(plan) or plan.primary
        protectors = tuple(h for h in plan.backups if h.name != serving.name)
        rewrite = None if serving.name is None else (plan.service.address, plan.primary.mac)
        return messages.release(data, protectors, rewrite)

    def _held(self, dpid: int, data: bytes, service_id: int, purpose: int, now: float) -> list:
        """A FIN/RST from a primary, held by the switch. Only the first of a hold is
        parsed and logged (it probes); the rest just join it."""
        name = self._by_cookie.get(service_id)
        if name not in self.probers:
            return []
        actions = self.probers[name].hold((dpid, bytes(data)), now)
        if actions:
            frame = parse_frame(data)
            LOG.info("ftcp: %s: held a %s from the primary to %s:%s; probing (later ones join it)", name,
                     "FIN" if purpose == HOLD_FIN else "RST", frame.dst if frame else "?",
                     frame.dport if frame else "?")
        return self._probe_actions(actions)

    def _arp_answer(self, ip: str) -> Optional[str]:
        """The MAC the controller answers ARP with: the probe address, and the address
        of a service whose primary is gone (the backup answers with the service's MAC)."""
        conf = self._config()
        if conf.probe and ip == conf.probe.address:
            return conf.probe.mac
        moved = (ServiceStatus.FAILED_OVER, ServiceStatus.FAILOVER_FAILED)
        for svc in conf.services:
            if svc.address == ip and (self._status(svc.name)[0] in moved or self._serving(svc.name) != PRIMARY):
                return svc.primary.mac
        return None

    # --- numbers for /metrics -------------------------------------------------------------------

    def counters(self) -> dict:
        probes = {"alive": 0, "rst": 0, "timeout": 0, "held": 0, "released": 0}
        for prober in self.probers.values():
            probes["alive"] += prober.stats["alive"]
            probes["rst"] += prober.stats["dead"]
            probes["timeout"] += prober.stats["missed"]
            probes["held"] += prober.stats["held"]
            probes["released"] += prober.stats["released"]
        return probes

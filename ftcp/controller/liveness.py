"""Is the primary alive? The controller core's probes, held FIN/RST and ARP answers
(part of ftcp.controller.core.Controller; the prober itself is ftcp/controller/prober.py).

Probes go out of every switch that carries the service; their answers, ARP requests for
the probe address (and for a failed-over service's address) and the FIN/RST segments a
primary's switch port holds come back as packet-ins.
"""
from __future__ import annotations

import logging
from typing import Optional

from ftcp.controller.of import flows
from ftcp.controller.effects import Send
from ftcp.common.statuses import ServiceStatus
from ftcp.controller.prober import ReadPort, Release, SendProbe, Verdict
from ftcp.controller.switches import with_xid

LOG = logging.getLogger("ftcp.controller.core")


class Liveness:
    """Probes, held segments and ARP: mixed into the Controller."""

    # --- probes, held segments, ARP ------------------------------------------------------

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
                    out.append(Send(sw.dpid, with_xid(flows.port_stats_request(None, plan.primary_port), xid)))
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
        if probe is None or frame.dst != probe.address or parts is None or parts[1] != flows.PROBE_REPLY:
            return []   # an answer to a probe comes only by the primary's probe-reply flow
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
            moved = (ServiceStatus.FAILED_OVER, ServiceStatus.FAILOVER_FAILED)
            if svc.address == ip and self.failovers[svc.name].status in moved:
                return svc.primary.mac
        return None

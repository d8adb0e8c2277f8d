"""The only module that builds OpenFlow 1.3 messages (OFPMatch, FlowMod, ...).

Every flow, packet-out and request the controller sends is built here, next to the
priority layout the flows share. A flow set is a function of the service's plan on one
switch and of the hosts in each role (the host serving, the hosts protecting it), not
of which host the services file lists first. Messages carry no datapath: the shim
gives each one its switch when it sends it.

This module is long because every message the controller sends is here: one place
says how ftcp uses OpenFlow.
"""
from __future__ import annotations

from typing import Optional

from ryu.lib.packet import ether_types, in_proto
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ftcp.controller.of.cookies import (DEFAULT, FENCE, HOLD_FIN, HOLD_RST, MASK_ALL_FTCP, MIRROR_C2S, MIRROR_PORT_DROP,
                                        MIRROR_S2C, NOT_A_CLIENT_DROP, PROBE_ARP, PROBE_REPLY, REDIRECT_C2S,
                                        REDIRECT_S2C, SERVICE_ARP, cookie)
from ftcp.controller.of.packets import TCP_FIN, TCP_RST, TCP_SYN, arp_reply_frame, tcp_frame
from ftcp.controller.placement import HostPorts, ServicePlan

# Priorities: the NORMAL default at the bottom, mirrors above it; drops of anything
# a backup sends from its mirror iface above all, so it can never inject traffic.
PRIO_DEFAULT = 0
PRIO_MIRROR = 1000
PRIO_MIRROR_PORT_DROP = 2000
# Segments for the service from its own hosts' ports: they are not clients of it.
PRIO_NOT_A_CLIENT = 1200
# After a failover: redirects win over the mirrors, the fence over everything.
PRIO_REDIRECT = 1500
PRIO_FENCE = 3000
# FIN/RST from the serving host go to the controller instead of the client (above the
# mirror); answers to probes and ARP for the probe address too (above everything but
# the fence).
PRIO_HOLD = 1100
PRIO_PROBE = 2500
# A backup serving: its FIN/RST are held above its redirect (whose rewrite they would take).
PRIO_HOLD_REDIRECTED = 1600


def add(cookie_value: int, priority: int, match, actions):
    """An OFPFC_ADD of one flow applying ``actions`` (none: drop)."""
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    return parser.OFPFlowMod(None, cookie=cookie_value, command=ofp.OFPFC_ADD, priority=priority,
                             match=match, instructions=inst)


def delete_by_cookie(cookie_value: int, mask: int):
    """Delete, in every table, the flows whose cookie matches under mask."""
    return parser.OFPFlowMod(None, cookie=cookie_value, cookie_mask=mask, table_id=ofp.OFPTT_ALL,
                             command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)


def delete_strict(cookie_value: int, priority: int, match):
    """Remove exactly one flow (its priority, match and cookie)."""
    return parser.OFPFlowMod(None, cookie=cookie_value, cookie_mask=0xFFFFFFFFFFFFFFFF, table_id=0,
                             command=ofp.OFPFC_DELETE_STRICT, priority=priority, match=match,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)


def default_flow():
    """Everything not matched above: OVS's own L2 learning switch."""
    return add(cookie(0, DEFAULT), PRIO_DEFAULT, parser.OFPMatch(), [parser.OFPActionOutput(ofp.OFPP_NORMAL)])


def tcp_match(**fields):
    """A match on IPv4/TCP fields with their OF1.3 prerequisites (OVS rejects the flow
    with OFPBMC_BAD_PREREQ without them)."""
    return parser.OFPMatch(eth_type=ether_types.ETH_TYPE_IP, ip_proto=in_proto.IPPROTO_TCP, **fields)


def service_flows(plan: ServicePlan, serving: HostPorts, protectors: tuple, probe_ip: Optional[str] = None) -> list:
    """The steady-state flows of a protected service: ``serving`` serves it, each of
    ``protectors`` gets a copy of its traffic on its mirror port. With ``probe_ip``
    also the FIN/RST hold (only probes can release what it holds) and the way the
    serving host's answers to probes come back."""
    svc = plan.service
    sid = svc.cookie_id
    mirrors = [parser.OFPActionOutput(h.mirror_port) for h in protectors]
    if serving.name is not None:
        # a backup serves: the clients are redirected to it, and the copies are taken on
        # the clients' side of the rewrite (the service's own addresses, as the primary had)
        flows = redirect_flows(plan, serving, plan.primary.mac, protectors)
    else:
        flows = [
            # client -> service: to the serving host and a copy to every protector's mirror iface
            add(cookie(sid, MIRROR_C2S), PRIO_MIRROR, tcp_match(ipv4_dst=svc.address, tcp_dst=svc.port),
                [parser.OFPActionOutput(serving.data_port)] + mirrors),
            # service -> client, only as sent from the serving host's port: normal forwarding plus the copy
            add(cookie(sid, MIRROR_S2C), PRIO_MIRROR,
                tcp_match(in_port=serving.data_port, ipv4_src=svc.address, tcp_src=svc.port),
                [parser.OFPActionOutput(ofp.OFPP_NORMAL)] + mirrors),
        ]
    flows += mirror_port_drops(plan) + not_a_client_drops(plan)
    if probe_ip is not None:
        flows += hold_flows(plan, serving) + probe_flows(plan, serving, probe_ip)
    return flows


def fence_flow(plan: ServicePlan, host: HostPorts):
    """Nothing ``host`` sends for the service reaches anyone any more."""
    svc = plan.service
    return add(cookie(svc.cookie_id, FENCE), PRIO_FENCE,
               tcp_match(in_port=host.data_port, ipv4_src=host.address, tcp_src=svc.port), [])


def redirect_s2c_flow(plan: ServicePlan, to: HostPorts, service_mac: str, mirrors: tuple = ()):
    """What ``to`` sends from the service port leaves with the service's address and
    MAC (and, rewritten, a copy to each of ``mirrors``' mirror ports). Installed from
    the fence on: a rebuilt socket that retransmits before the client is redirected
    reaches it from the service's address, never its own."""
    svc = plan.service
    return add(cookie(svc.cookie_id, REDIRECT_S2C), PRIO_REDIRECT,
               tcp_match(in_port=to.data_port, ipv4_src=to.address, tcp_src=svc.port),
               [parser.OFPActionSetField(ipv4_src=svc.address), parser.OFPActionSetField(eth_src=service_mac),
                parser.OFPActionOutput(ofp.OFPP_NORMAL)] + [parser.OFPActionOutput(h.mirror_port) for h in mirrors])


def redirect_flows(plan: ServicePlan, to: HostPorts, service_mac: str, mirrors: tuple = ()) -> list:
    """Client->service goes to ``to`` (addresses rewritten; OVS fixes the checksums);
    its answers leave with the service's address and MAC. Each of ``mirrors`` (the
    hosts protecting ``to``) gets a copy of both directions as the client sees them:
    the client's segment before the rewrite, the answer after it."""
    svc = plan.service
    sid = svc.cookie_id
    return [
        add(cookie(sid, REDIRECT_C2S), PRIO_REDIRECT, tcp_match(ipv4_dst=svc.address, tcp_dst=svc.port),
            [parser.OFPActionOutput(h.mirror_port) for h in mirrors]
            + [parser.OFPActionSetField(eth_dst=to.mac), parser.OFPActionSetField(ipv4_dst=to.address),
               parser.OFPActionOutput(to.data_port)]),
        redirect_s2c_flow(plan, to, service_mac, mirrors),
        # The fenced host no longer answers ARP for the service address: the controller
        # does, so clients whose ARP cache expired can still open new connections.
        add(cookie(sid, SERVICE_ARP), PRIO_REDIRECT,
            parser.OFPMatch(eth_type=ether_types.ETH_TYPE_ARP, arp_tpa=svc.address), _to_controller()),
    ]


def mirror_port_drops(plan: ServicePlan) -> list:
    """Anything a host's mirror iface sends is dropped: it can never inject."""
    return [add(cookie(plan.service.cookie_id, MIRROR_PORT_DROP), PRIO_MIRROR_PORT_DROP,
                parser.OFPMatch(in_port=h.mirror_port), []) for h in plan.hosts if h.mirror_port is not None]


def not_a_client_drops(plan: ServicePlan) -> list:
    """The client side is every port but the service's own: segments for the service
    entering from one of its hosts' data ports are dropped, so neither the switch nor a
    protector's tracker ever sees them as a client's (OpenFlow matches cannot say "any
    port but these": one drop each, above the mirror)."""
    svc = plan.service
    return [add(cookie(svc.cookie_id, NOT_A_CLIENT_DROP), PRIO_NOT_A_CLIENT,
                tcp_match(in_port=h.data_port, ipv4_dst=svc.address, tcp_dst=svc.port), [])
            for h in plan.hosts if h.data_port is not None]


def _to_controller():
    # The whole packet (no buffering in the switch): a held FIN may carry data, and
    # releasing it means sending it back out byte for byte.
    return [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]


def hold_flows(plan: ServicePlan, serving: HostPorts) -> list:
    """Segments with FIN or RST from the serving host go to the controller (tcp_flags
    is an OpenFlow 1.3 ONF extension field; OVS supports it)."""
    svc = plan.service
    priority = PRIO_HOLD if serving.name is None else PRIO_HOLD_REDIRECTED
    return [add(cookie(svc.cookie_id, purpose), priority,
                tcp_match(in_port=serving.data_port, ipv4_src=serving.address, tcp_src=svc.port,
                          tcp_flags=(flag, flag)), _to_controller())
            for purpose, flag in ((HOLD_FIN, TCP_FIN), (HOLD_RST, TCP_RST))]


def probe_flows(plan: ServicePlan, serving: HostPorts, probe_ip: str) -> list:
    """Answers to this service's probes, and ARP requests for the probe address, to
    the controller -- only as they come from the serving host's switch port: nobody
    else can answer a probe (or flood the controller with answers)."""
    svc = plan.service
    return [
        add(cookie(svc.cookie_id, PROBE_REPLY), PRIO_PROBE,
            tcp_match(in_port=serving.data_port, ipv4_src=serving.address, tcp_src=svc.port, ipv4_dst=probe_ip),
            _to_controller()),
        # one per serving port, whichever service it is for (the same flow for each)
        add(cookie(0, PROBE_ARP), PRIO_PROBE,
            parser.OFPMatch(in_port=serving.data_port, eth_type=ether_types.ETH_TYPE_ARP, arp_tpa=probe_ip),
            _to_controller()),
    ]


# --- requests ---------------------------------------------------------------------------

def flow_stats_request(xid: Optional[int] = None):
    """Every ftcp flow the switch holds (cookie mask on the 'ftcp' magic)."""
    msg = parser.OFPFlowStatsRequest(None, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                     cookie(0, 0), MASK_ALL_FTCP, parser.OFPMatch())
    msg.xid = xid
    return msg


def role_request(generation: int):
    """Claim the master role (OpenFlow 1.3 roles): the switch makes every other
    controller a slave, and refuses a request with an older generation id."""
    return parser.OFPRoleRequest(None, ofp.OFPCR_ROLE_MASTER, generation)


def port_desc_request():
    return parser.OFPPortDescStatsRequest(None, 0)


def barrier(xid: Optional[int] = None):
    msg = parser.OFPBarrierRequest(None)
    msg.xid = xid
    return msg


def port_stats_request(port_no: int, xid: Optional[int] = None):
    """The counters of one port (the prober's liveness reading of the serving host's port)."""
    msg = parser.OFPPortStatsRequest(None, 0, port_no)
    msg.xid = xid
    return msg


# --- packet-outs -------------------------------------------------------------------------

def _packet_out(data: bytes, actions):
    return parser.OFPPacketOut(None, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                               actions=actions, data=data)


def probe_syn(plan: ServicePlan, host: HostPorts, probe, sport: int, seq: int):
    """A SYN from the probe address to the service, straight out of ``host``'s port."""
    frame = tcp_frame(probe.mac, host.mac or "ff:ff:ff:ff:ff:ff", probe.address, host.address,
                      sport, plan.service.port, seq, 0, TCP_SYN)
    return _packet_out(frame, [parser.OFPActionOutput(host.data_port)])


def probe_rst(plan: ServicePlan, host: HostPorts, probe, sport: int, seq: int):
    """Close the half-open connection a SYN-ACK answer left on ``host``."""
    frame = tcp_frame(probe.mac, host.mac or "ff:ff:ff:ff:ff:ff", probe.address, host.address,
                      sport, plan.service.port, seq, 0, TCP_RST)
    return _packet_out(frame, [parser.OFPActionOutput(host.data_port)])


def arp_reply(in_port: int, request, mac: str):
    """The answer to an ARP request (a packets.Frame of kind "arp") for an address we own."""
    return _packet_out(arp_reply_frame(request, mac), [parser.OFPActionOutput(in_port)])


def release(data: bytes, protectors: tuple, rewrite: Optional[tuple] = None):
    """A held FIN/RST goes on: normal forwarding and the protectors' mirrors, as it would
    have; from a backup serving, with the service's (address, MAC) ``rewrite`` first, as
    its redirect does."""
    actions = [parser.OFPActionSetField(ipv4_src=rewrite[0]), parser.OFPActionSetField(eth_src=rewrite[1])] \
        if rewrite else []
    return _packet_out(data, actions + [parser.OFPActionOutput(ofp.OFPP_NORMAL)] +
                       [parser.OFPActionOutput(h.mirror_port) for h in protectors])


def describe(msg) -> str:
    """One log line for a FlowMod: cookie, priority, match and actions."""
    match = ",".join(f"{k}={v}" for k, v in msg.match.items()) or "*"
    actions = []
    for inst in msg.instructions:
        for act in getattr(inst, "actions", []):
            if isinstance(act, parser.OFPActionSetField):
                actions.append(f"set:{act.key}={act.value}")
                continue
            port = getattr(act, "port", None)
            actions.append({ofp.OFPP_NORMAL: "NORMAL", ofp.OFPP_CONTROLLER: "CONTROLLER"}.get(port, f"output:{port}"))
    return f"cookie={msg.cookie:#x} priority={msg.priority} {match} -> {','.join(actions) or 'drop'}"

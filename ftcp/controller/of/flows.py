"""The only module that builds OpenFlow 1.3 messages (OFPMatch, FlowMod, ...).

Every flow carries a cookie: ``'ftcp'`` in the high 32 bits, the service's 24-bit
cookie id, and an 8-bit purpose, so the app can find, count and delete the flows
of one service (cookie/cookie_mask, as ryu's rest_router does).

This module is long because it is the only one that speaks OpenFlow (DESIGN §11):
every flow, packet-out and request the controller sends is built here, next to the
cookie and priority layout they share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ryu.lib.packet import arp, ether_types, ethernet, in_proto, ipv4, packet, tcp
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ftcp.controller.plan import ServicePlan

COOKIE_MAGIC = 0x66746370  # "ftcp"
MASK_ALL_FTCP = 0xFFFFFFFF << 32
MASK_SERVICE = MASK_ALL_FTCP | (0xFFFFFF << 8)

# Purposes (low byte of the cookie).
DEFAULT = 0x00
MIRROR_C2S = 0x01
MIRROR_S2C = 0x02
MIRROR_PORT_DROP = 0x03
NOT_A_CLIENT_DROP = 0x04
FENCE = 0x10
REDIRECT_C2S = 0x11
REDIRECT_S2C = 0x12
HOLD_FIN = 0x20
HOLD_RST = 0x21
PROBE_REPLY = 0x22
PROBE_ARP = 0x23
SERVICE_ARP = 0x13

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

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
# FIN/RST from the primary go to the controller instead of the client (above the mirror);
# answers to probes and ARP for the probe address too (above everything but the fence).
PRIO_HOLD = 1100
PRIO_PROBE = 2500


def cookie(service_id: int, purpose: int) -> int:
    return (COOKIE_MAGIC << 32) | ((service_id & 0xFFFFFF) << 8) | (purpose & 0xFF)


def cookie_parts(value: int):
    """(service_id, purpose) of an ftcp cookie, or None for a foreign cookie."""
    if value >> 32 != COOKIE_MAGIC:
        return None
    return (value >> 8) & 0xFFFFFF, value & 0xFF


def _add(dp, cookie_value, priority, match, actions):
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    return parser.OFPFlowMod(
        dp, cookie=cookie_value, command=ofp.OFPFC_ADD, priority=priority,
        match=match, instructions=inst,
    )


def delete_by_cookie(dp, cookie_value: int, mask: int):
    """Delete, in every table, the flows whose cookie matches under mask."""
    return parser.OFPFlowMod(
        dp, cookie=cookie_value, cookie_mask=mask, table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
    )


def delete_all_ftcp(dp):
    return delete_by_cookie(dp, cookie(0, 0), MASK_ALL_FTCP)


def delete_service(dp, service_id: int):
    return delete_by_cookie(dp, cookie(service_id, 0), MASK_SERVICE)


def default_flow(dp):
    """Everything not matched above: OVS's own L2 learning switch."""
    return _add(dp, cookie(0, DEFAULT), PRIO_DEFAULT, parser.OFPMatch(),
                [parser.OFPActionOutput(ofp.OFPP_NORMAL)])


def _tcp_match(**fields):
    # tcp_* and ipv4_* fields need their prerequisites in OF1.3 (OVS rejects the
    # flow with OFPBMC_BAD_PREREQ otherwise).
    return parser.OFPMatch(eth_type=ether_types.ETH_TYPE_IP, ip_proto=in_proto.IPPROTO_TCP, **fields)


def service_flows(dp, plan: ServicePlan, probe_ip: Optional[str] = None) -> list:
    """The steady-state flows of one protected service (DESIGN §3); with ``probe_ip``
    also the FIN/RST hold (only probes can release what it holds) and the way the
    primary's answers to probes come back."""
    svc = plan.service
    sid = svc.cookie_id
    mirrors = [parser.OFPActionOutput(p) for p in plan.mirror_ports]
    flows = [
        # client -> service: to the primary and a copy to every backup's mirror iface.
        _add(dp, cookie(sid, MIRROR_C2S), PRIO_MIRROR,
             _tcp_match(ipv4_dst=svc.address, tcp_dst=svc.port),
             [parser.OFPActionOutput(plan.primary_port)] + mirrors),
        # service -> client, only as sent from the primary's port: normal forwarding
        # plus the copy.
        _add(dp, cookie(sid, MIRROR_S2C), PRIO_MIRROR,
             _tcp_match(in_port=plan.primary_port, ipv4_src=svc.address, tcp_src=svc.port),
             [parser.OFPActionOutput(ofp.OFPP_NORMAL)] + mirrors),
    ]
    flows += mirror_port_drops(dp, plan) + not_a_client_drops(dp, plan)
    if probe_ip is not None:
        flows += hold_flows(dp, plan) + probe_flows(dp, plan, probe_ip)
    return flows


# --- what a switch holds, and the messages that make it hold what is wanted -----------

@dataclass(frozen=True)
class Installed:
    """One ftcp flow as the switch holds it (from a flow-stats reply or our own add)."""
    cookie: int
    priority: int
    match: object          # OFPMatch
    actions: tuple         # actions_key() of its instructions

    @property
    def key(self) -> tuple:
        return flow_key(self.priority, self.match)


def _norm(value):
    return value.lower() if isinstance(value, str) else tuple(value) if isinstance(value, (list, tuple)) else value


def flow_key(priority: int, match) -> tuple:
    """A flow's identity in its table: priority and match (OpenFlow's own rule: an ADD
    with the same pair replaces the flow)."""
    return priority, tuple(sorted((k, _norm(v)) for k, v in match.items()))


def actions_key(instructions) -> tuple:
    """What a flow does, comparable between our FlowMods and a switch's flow stats."""
    out = []
    for inst in instructions:
        acts = []
        for act in getattr(inst, "actions", []):
            if isinstance(act, parser.OFPActionSetField):
                acts.append(("set", act.key, _norm(act.value)))
            elif isinstance(act, parser.OFPActionOutput):
                acts.append(("output", act.port))
            else:
                acts.append((type(act).__name__,))
        out.append((inst.type, tuple(acts)))
    return tuple(out)


def installed(flow) -> Installed:
    """An Installed from a FlowMod or an OFPFlowStats entry."""
    return Installed(flow.cookie, flow.priority, flow.match, actions_key(flow.instructions))


def is_ftcp(cookie_value: int) -> bool:
    return cookie_value >> 32 == COOKIE_MAGIC


def flow_stats_request(dp=None, xid: Optional[int] = None):
    """Every ftcp flow the switch holds (cookie mask on the 'ftcp' magic)."""
    msg = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                     cookie(0, 0), MASK_ALL_FTCP, parser.OFPMatch())
    msg.xid = xid
    return msg


def delete_strict(dp, flow: Installed):
    """Remove exactly this flow (its priority, match and cookie)."""
    return parser.OFPFlowMod(dp, cookie=flow.cookie, cookie_mask=0xFFFFFFFFFFFFFFFF, table_id=0,
                             command=ofp.OFPFC_DELETE_STRICT, priority=flow.priority, match=flow.match,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)


def reconcile(current: dict, desired: list, keep=frozenset()) -> tuple:
    """The messages that turn a switch's ftcp flows (``current``: key -> Installed) into
    ``desired`` (FlowMods), and the table that results. Adds first, highest priority
    first (a fence before anything it guards), then deletes: never delete-then-add, so
    no packet meets a table without the flow that should stop or carry it. An ADD with
    the same priority and match replaces a flow in place. Flows of the services in
    ``keep`` (cookie ids) that are not desired are left alone (their ports are
    missing now; they may come back)."""
    want = {}
    for mod in desired:
        want[flow_key(mod.priority, mod.match)] = mod
    adds = [mod for key, mod in want.items()
            if key not in current or (current[key].cookie, current[key].actions)
            != (mod.cookie, actions_key(mod.instructions))]
    adds.sort(key=lambda mod: -mod.priority)
    table = dict(current)
    deletes = []
    for key, flow in current.items():
        if key not in want and (cookie_parts(flow.cookie) or (None,))[0] not in keep:
            deletes.append(delete_strict(None, flow))
            del table[key]
    for mod in adds:
        table[flow_key(mod.priority, mod.match)] = installed(mod)
    return adds + deletes, table


def role_request(dp, generation: int):
    """Claim the master role (OpenFlow 1.3 roles): the switch makes every other
    controller a slave, and refuses a request with an older generation id."""
    return parser.OFPRoleRequest(dp, ofp.OFPCR_ROLE_MASTER, generation)


def port_desc_request(dp):
    return parser.OFPPortDescStatsRequest(dp, 0)


def barrier(dp):
    return parser.OFPBarrierRequest(dp)


def port_stats_request(dp, port_no: int):
    """The counters of one port (the prober's liveness reading of the primary's port)."""
    return parser.OFPPortStatsRequest(dp, 0, port_no)


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


def fence_flow(dp, plan: ServicePlan):
    """Nothing the old primary sends for the service reaches anyone any more."""
    svc = plan.service
    return _add(dp, cookie(svc.cookie_id, FENCE), PRIO_FENCE,
                _tcp_match(in_port=plan.primary_port, ipv4_src=svc.address, tcp_src=svc.port), [])


def _backup_port(plan: ServicePlan, backup_name: str):
    svc = plan.service
    index = next(i for i, b in enumerate(svc.backups) if b.name == backup_name)
    return svc.backups[index], plan.data_ports[index]


def redirect_s2c_flow(dp, plan: ServicePlan, backup_name: str, service_mac: str):
    """What the backup sends from the service port leaves with the service's address
    and MAC. Installed from the fence on: a rebuilt socket that retransmits before
    the client is redirected reaches it from the service's address, never its own."""
    svc = plan.service
    backup, port = _backup_port(plan, backup_name)
    return _add(dp, cookie(svc.cookie_id, REDIRECT_S2C), PRIO_REDIRECT,
                _tcp_match(in_port=port, ipv4_src=backup.address, tcp_src=svc.port),
                [parser.OFPActionSetField(ipv4_src=svc.address), parser.OFPActionSetField(eth_src=service_mac),
                 parser.OFPActionOutput(ofp.OFPP_NORMAL)])


def redirect_flows(dp, plan: ServicePlan, backup_name: str, service_mac: str) -> list:
    """Client->service goes to the backup (addresses rewritten; OVS fixes the
    checksums); the backup's answers leave with the service's address and MAC."""
    svc = plan.service
    backup, port = _backup_port(plan, backup_name)
    sid = svc.cookie_id
    return [
        _add(dp, cookie(sid, REDIRECT_C2S), PRIO_REDIRECT,
             _tcp_match(ipv4_dst=svc.address, tcp_dst=svc.port),
             [parser.OFPActionSetField(eth_dst=backup.mac), parser.OFPActionSetField(ipv4_dst=backup.address),
              parser.OFPActionOutput(port)]),
        redirect_s2c_flow(dp, plan, backup_name, service_mac),
        # The primary no longer answers ARP for the service address: the controller
        # does, so clients whose ARP cache expired can still open new connections.
        _add(dp, cookie(sid, SERVICE_ARP), PRIO_REDIRECT,
             parser.OFPMatch(eth_type=ether_types.ETH_TYPE_ARP, arp_tpa=svc.address), _to_controller()),
    ]


def mirror_port_drops(dp, plan: ServicePlan) -> list:
    """Anything a backup's mirror iface sends is dropped: it can never inject."""
    return [_add(dp, cookie(plan.service.cookie_id, MIRROR_PORT_DROP), PRIO_MIRROR_PORT_DROP,
                 parser.OFPMatch(in_port=port), []) for port in plan.mirror_ports]


def not_a_client_drops(dp, plan: ServicePlan) -> list:
    """The client side is every port but the service's own: segments for the service
    entering from its primary's or a backup's data port are dropped, so neither the
    switch nor the backup's tracker ever sees them as a client's (OpenFlow matches
    cannot say "any port but these": one drop each, above the mirror)."""
    svc = plan.service
    ports = ([plan.primary_port] if plan.primary_port is not None else []) + list(plan.data_ports)
    return [_add(dp, cookie(svc.cookie_id, NOT_A_CLIENT_DROP), PRIO_NOT_A_CLIENT,
                 _tcp_match(in_port=port, ipv4_dst=svc.address, tcp_dst=svc.port), [])
            for port in ports]


def _to_controller():
    # The whole packet (no buffering in the switch): a held FIN may carry data, and
    # releasing it means sending it back out byte for byte.
    return [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]


def hold_flows(dp, plan: ServicePlan) -> list:
    """Segments with FIN or RST from the primary go to the controller (tcp_flags is
    an OpenFlow 1.3 ONF extension field; OVS supports it)."""
    svc = plan.service
    sid = svc.cookie_id
    return [_add(dp, cookie(sid, purpose), PRIO_HOLD,
                 _tcp_match(in_port=plan.primary_port, ipv4_src=svc.address, tcp_src=svc.port,
                            tcp_flags=(flag, flag)), _to_controller())
            for purpose, flag in ((HOLD_FIN, TCP_FIN), (HOLD_RST, TCP_RST))]


def probe_flows(dp, plan: ServicePlan, probe_ip: str) -> list:
    """Answers to this service's probes, and ARP requests for the probe address, to
    the controller -- only as they come from the primary's switch port: nobody else
    can answer a probe (or flood the controller with answers)."""
    svc = plan.service
    return [
        _add(dp, cookie(svc.cookie_id, PROBE_REPLY), PRIO_PROBE,
             _tcp_match(in_port=plan.primary_port, ipv4_src=svc.address, tcp_src=svc.port, ipv4_dst=probe_ip),
             _to_controller()),
        # one per primary port, whichever service it is for (the same flow for each)
        _add(dp, cookie(0, PROBE_ARP), PRIO_PROBE,
             parser.OFPMatch(in_port=plan.primary_port, eth_type=ether_types.ETH_TYPE_ARP, arp_tpa=probe_ip),
             _to_controller()),
    ]


def _packet_out(dp, data: bytes, actions):
    return parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                               actions=actions, data=data)


def _tcp_frame(eth_src, eth_dst, ip_src, ip_dst, sport, dport, seq, ack, bits) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=eth_dst, src=eth_src, ethertype=ether_types.ETH_TYPE_IP))
    pkt.add_protocol(ipv4.ipv4(src=ip_src, dst=ip_dst, proto=in_proto.IPPROTO_TCP, ttl=64))
    pkt.add_protocol(tcp.tcp(src_port=sport, dst_port=dport, seq=seq, ack=ack, bits=bits, window_size=1024))
    pkt.serialize()
    return bytes(pkt.data)


def probe_syn(dp, plan: ServicePlan, probe, sport: int, seq: int):
    """A SYN from the probe address to the service, straight out of the primary's port."""
    svc = plan.service
    frame = _tcp_frame(probe.mac, svc.primary.mac or "ff:ff:ff:ff:ff:ff", probe.address, svc.address,
                       sport, svc.port, seq, 0, TCP_SYN)
    return _packet_out(dp, frame, [parser.OFPActionOutput(plan.primary_port)])


def probe_rst(dp, plan: ServicePlan, probe, sport: int, seq: int):
    """Close the half-open connection a SYN-ACK answer left on the primary."""
    svc = plan.service
    frame = _tcp_frame(probe.mac, svc.primary.mac or "ff:ff:ff:ff:ff:ff", probe.address, svc.address,
                       sport, svc.port, seq, 0, TCP_RST)
    return _packet_out(dp, frame, [parser.OFPActionOutput(plan.primary_port)])


def arp_reply(dp, in_port: int, request, mac: str):
    """The answer to an ARP request (a Frame of kind "arp") for an address we own."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=request.src_mac, src=mac, ethertype=ether_types.ETH_TYPE_ARP))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=mac, src_ip=request.dst,
                             dst_mac=request.src_mac, dst_ip=request.src))
    pkt.serialize()
    return _packet_out(dp, bytes(pkt.data), [parser.OFPActionOutput(in_port)])


@dataclass(frozen=True)
class Frame:
    """What the controller needs of a packet-in: an ARP request or a TCP segment."""
    kind: str                 # "arp" (requests only) or "tcp"
    src: str                  # sender IPv4 address
    dst: str                  # target IPv4 address
    src_mac: str = ""
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0


def parse_frame(data: bytes) -> Optional[Frame]:
    """An ARP request or an IPv4/TCP segment, else None (never raises on junk)."""
    try:
        pkt = packet.Packet(data)
    except Exception:   # ryu's parsers raise anything on truncated input
        return None
    req = pkt.get_protocol(arp.arp)
    if req is not None:
        if req.opcode != arp.ARP_REQUEST:
            return None
        return Frame("arp", req.src_ip, req.dst_ip, src_mac=req.src_mac)
    ip, seg = pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(tcp.tcp)
    if ip is None or seg is None:
        return None
    return Frame("tcp", ip.src, ip.dst, sport=seg.src_port, dport=seg.dst_port, seq=seg.seq, ack=seg.ack,
                 flags=seg.bits)


def release(dp, plan: ServicePlan, data: bytes):
    """A held FIN/RST goes on: normal forwarding and the mirror, as it would have."""
    return _packet_out(dp, data, [parser.OFPActionOutput(ofp.OFPP_NORMAL)] +
                       [parser.OFPActionOutput(p) for p in plan.mirror_ports])

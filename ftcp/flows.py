"""The only module that builds OpenFlow 1.3 messages (OFPMatch, FlowMod, ...).

Every flow carries a cookie: ``'ftcp'`` in the high 32 bits, the service's 24-bit
cookie id, and an 8-bit purpose, so the app can find, count and delete the flows
of one service (cookie/cookie_mask, as ryu's rest_router does).
"""
from __future__ import annotations

from ryu.lib.packet import ether_types, in_proto
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ftcp.plan import ServicePlan

COOKIE_MAGIC = 0x66746370  # "ftcp"
MASK_ALL_FTCP = 0xFFFFFFFF << 32
MASK_SERVICE = MASK_ALL_FTCP | (0xFFFFFF << 8)

# Purposes (low byte of the cookie).
DEFAULT = 0x00
MIRROR_C2S = 0x01
MIRROR_S2C = 0x02
MIRROR_PORT_DROP = 0x03
FENCE = 0x10
REDIRECT_C2S = 0x11
REDIRECT_S2C = 0x12

# Priorities: the NORMAL default at the bottom, mirrors above it; drops of anything
# a backup sends from its mirror iface above all, so it can never inject traffic.
PRIO_DEFAULT = 0
PRIO_MIRROR = 1000
PRIO_MIRROR_PORT_DROP = 2000
# After a failover: redirects win over the mirrors, the fence over everything.
PRIO_REDIRECT = 1500
PRIO_FENCE = 3000


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


def service_flows(dp, plan: ServicePlan) -> list:
    """The steady-state flows of one protected service (DESIGN §3)."""
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
    for port in plan.mirror_ports:
        flows.append(_add(dp, cookie(sid, MIRROR_PORT_DROP), PRIO_MIRROR_PORT_DROP,
                          parser.OFPMatch(in_port=port), []))
    return flows


def port_desc_request(dp):
    return parser.OFPPortDescStatsRequest(dp, 0)


def barrier(dp):
    return parser.OFPBarrierRequest(dp)


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
            actions.append("NORMAL" if port == ofp.OFPP_NORMAL else f"output:{port}")
    return f"cookie={msg.cookie:#x} priority={msg.priority} {match} -> {','.join(actions) or 'drop'}"


def fence_flow(dp, plan: ServicePlan):
    """Nothing the old primary sends for the service reaches anyone any more."""
    svc = plan.service
    return _add(dp, cookie(svc.cookie_id, FENCE), PRIO_FENCE,
                _tcp_match(in_port=plan.primary_port, ipv4_src=svc.address, tcp_src=svc.port), [])


def redirect_flows(dp, plan: ServicePlan, backup_name: str, service_mac: str) -> list:
    """Client->service goes to the backup (addresses rewritten; OVS fixes the
    checksums); the backup's answers leave with the service's address and MAC."""
    svc = plan.service
    index = next(i for i, b in enumerate(svc.backups) if b.name == backup_name)
    backup, port = svc.backups[index], plan.data_ports[index]
    sid = svc.cookie_id
    return [
        _add(dp, cookie(sid, REDIRECT_C2S), PRIO_REDIRECT,
             _tcp_match(ipv4_dst=svc.address, tcp_dst=svc.port),
             [parser.OFPActionSetField(eth_dst=backup.mac), parser.OFPActionSetField(ipv4_dst=backup.address),
              parser.OFPActionOutput(port)]),
        _add(dp, cookie(sid, REDIRECT_S2C), PRIO_REDIRECT,
             _tcp_match(in_port=port, ipv4_src=backup.address, tcp_src=svc.port),
             [parser.OFPActionSetField(ipv4_src=svc.address), parser.OFPActionSetField(eth_src=service_mac),
              parser.OFPActionOutput(ofp.OFPP_NORMAL)]),
    ]

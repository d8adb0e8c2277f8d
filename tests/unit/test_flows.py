"""The flow factory: serialize every FlowMod to OpenFlow 1.3 bytes, parse the bytes
back, and check cookie, priority, match and actions. No switch needed."""
import dataclasses

import pytest
from ryu.ofproto import ofproto_parser
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ftcp.common import config
from ftcp.controller.of import cookies, messages
from ftcp.controller.placement import plan_switch

CONF = config.parse({
    "services": [{
        "name": "web", "address": "10.0.0.10", "port": 80,
        "primary": {"port": "s1-eth3", "mac": "00:00:00:00:00:10"},
        "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": "s1-eth4", "mirror_port": "s1-eth5",
                     "mac": "00:00:00:00:00:20"}],
    }],
})
PORTS = {"s1-eth1": 1, "s1-eth2": 2, "s1-eth3": 3, "s1-eth4": 4, "s1-eth5": 5}


class FakeDatapath:
    ofproto = ofp
    ofproto_parser = parser
    id = 1


def wire(msg):
    """Serialize as the switch would receive it, and parse those bytes back."""
    msg.datapath = FakeDatapath()   # as the shim gives each message its switch
    msg.set_xid(7)
    msg.serialize()
    version, msg_type, msg_len, xid = ofproto_parser.header(bytes(msg.buf))
    assert (version, msg_type, msg_len, xid) == (ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, len(msg.buf), 7)
    return ofproto_parser.msg(FakeDatapath(), version, msg_type, msg_len, xid, bytes(msg.buf))


def _flows_of(plan):
    return messages.service_flows(plan, plan.primary, plan.backups)


def outputs(mod):
    return [a.port for inst in mod.instructions for a in inst.actions]


def match(mod):
    return dict(mod.match.items())


@pytest.fixture
def service_mods():
    plan, = plan_switch(CONF, PORTS)
    return [wire(m) for m in messages.service_flows(plan, plan.primary, plan.backups)]


def test_cookie_layout():
    c = cookies.cookie(0xABCDEF, cookies.MIRROR_S2C)
    assert c == 0x66746370_ABCDEF_02
    assert cookies.cookie_parts(c) == (0xABCDEF, cookies.MIRROR_S2C)
    assert cookies.cookie_parts(0x1234) is None


def test_client_to_service_goes_to_primary_and_mirror(service_mods):
    mod = service_mods[0]
    sid = CONF.services[0].cookie_id
    assert mod.cookie == cookies.cookie(sid, cookies.MIRROR_C2S)
    assert mod.command == ofp.OFPFC_ADD and mod.priority == messages.PRIO_MIRROR
    assert match(mod) == {"eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "10.0.0.10", "tcp_dst": 80}
    assert outputs(mod) == [3, 5]


def test_service_to_client_from_primary_port_is_forwarded_and_mirrored(service_mods):
    mod = service_mods[1]
    assert cookies.cookie_parts(mod.cookie) == (CONF.services[0].cookie_id, cookies.MIRROR_S2C)
    assert match(mod) == {"in_port": 3, "eth_type": 0x0800, "ip_proto": 6, "ipv4_src": "10.0.0.10", "tcp_src": 80}
    assert outputs(mod) == [ofp.OFPP_NORMAL, 5]


def test_nothing_enters_from_the_mirror_port(service_mods):
    mod = service_mods[2]
    assert cookies.cookie_parts(mod.cookie)[1] == cookies.MIRROR_PORT_DROP
    assert match(mod) == {"in_port": 5}
    assert mod.instructions == [] and mod.priority > messages.PRIO_MIRROR
    assert len(service_mods) == 5


def test_the_services_own_hosts_are_not_its_clients(service_mods):
    drops = service_mods[3:]
    assert [cookies.cookie_parts(m.cookie)[1] for m in drops] == [cookies.NOT_A_CLIENT_DROP] * 2
    assert [match(m) for m in drops] == [
        {"in_port": port, "eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "10.0.0.10", "tcp_dst": 80} for port in (3, 4)]
    assert all(m.instructions == [] and messages.PRIO_MIRROR < m.priority < messages.PRIO_REDIRECT for m in drops)


def test_every_service_flow_carries_the_service_cookie(service_mods):
    sid = CONF.services[0].cookie_id
    assert {cookies.cookie_parts(m.cookie)[0] for m in service_mods} == {sid}


def test_default_flow_is_normal_at_priority_zero():
    mod = wire(messages.default_flow())
    assert mod.priority == 0 and match(mod) == {} and outputs(mod) == [ofp.OFPP_NORMAL]
    assert cookies.cookie_parts(mod.cookie) == (0, cookies.DEFAULT)


def test_delete_all_ftcp_matches_only_our_magic():
    mod = wire(messages.delete_by_cookie(cookies.cookie(0, 0), cookies.MASK_ALL_FTCP))
    assert mod.command == ofp.OFPFC_DELETE and mod.table_id == ofp.OFPTT_ALL
    assert mod.cookie_mask == 0xFFFFFFFF_00000000 and mod.cookie >> 32 == cookies.COOKIE_MAGIC
    assert (mod.out_port, mod.out_group) == (ofp.OFPP_ANY, ofp.OFPG_ANY)


def test_delete_service_matches_service_id_any_purpose():
    sid = CONF.services[0].cookie_id
    mod = wire(messages.delete_by_cookie(cookies.cookie(sid, 0), cookies.MASK_SERVICE))
    assert mod.cookie == cookies.cookie(sid, 0) and mod.cookie_mask == 0xFFFFFFFF_FFFFFF00


def test_two_backups_mirror_to_both():
    """The flows take any number of backups (the services file allows one for now:
    ftcp/common/config.py says why)."""
    def with_backup(name, address, data_port, mirror_port):
        return config.parse({"services": [{
            "name": "s", "address": "10.0.0.10", "port": 80, "primary": {"port": 3, "mac": "00:00:00:00:00:10"},
            "backups": [{"name": name, "address": address, "data_port": data_port, "mirror_port": mirror_port,
                         "mac": "00:00:00:00:00:20"}]}]})
    one, two = with_backup("b1", "10.0.0.20", 4, 5), with_backup("b2", "10.0.0.21", 6, 7)
    both = one.services[0].backups + two.services[0].backups
    conf = dataclasses.replace(one, services=(dataclasses.replace(one.services[0], backups=both),))
    plan, = plan_switch(conf, {f"p{i}": i for i in range(1, 8)})
    mods = [wire(m) for m in messages.service_flows(plan, plan.primary, plan.backups)]
    assert outputs(mods[0]) == [3, 5, 7]
    assert outputs(mods[1]) == [ofp.OFPP_NORMAL, 5, 7]
    assert sorted(match(m)["in_port"] for m in mods[2:4]) == [5, 7]
    assert sorted(match(m)["in_port"] for m in mods[4:]) == [3, 4, 6]


def test_describe_is_one_readable_line(service_mods):
    line = messages.describe(_flows_of(plan_switch(CONF, PORTS)[0])[0])
    assert "ipv4_dst=10.0.0.10" in line and line.endswith("-> output:3,output:5")


MAC_CONF = config.parse({
    "services": [{
        "name": "web", "address": "10.0.0.10", "port": 80,
        "primary": {"port": "s1-eth3", "mac": "00:00:00:00:00:10"},
        "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": "s1-eth4", "mirror_port": "s1-eth5",
                     "mac": "00:00:00:00:00:20"}],
    }],
})


def set_fields(mod):
    return [(a.key, a.value) for inst in mod.instructions for a in inst.actions
            if isinstance(a, parser.OFPActionSetField)]


def test_fence_drops_the_primarys_service_traffic_above_everything():
    plan, = plan_switch(MAC_CONF, PORTS)
    mod = wire(messages.fence_flow(plan, plan.primary))
    assert match(mod) == {"in_port": 3, "eth_type": 0x0800, "ip_proto": 6, "ipv4_src": "10.0.0.10", "tcp_src": 80}
    assert mod.instructions == [] and mod.priority > messages.PRIO_MIRROR_PORT_DROP
    assert cookies.cookie_parts(mod.cookie)[1] == cookies.FENCE


def test_redirect_rewrites_both_directions():
    plan, = plan_switch(MAC_CONF, PORTS)
    c2s, s2c, arp = [wire(m) for m in messages.redirect_flows(plan, plan.host("b1"), "00:00:00:00:00:10")]
    assert match(arp) == {"eth_type": 0x0806, "arp_tpa": "10.0.0.10"}
    assert [a.port for i in arp.instructions for a in i.actions] == [ofp.OFPP_CONTROLLER]
    assert match(c2s) == {"eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "10.0.0.10", "tcp_dst": 80}
    assert set_fields(c2s) == [("eth_dst", "00:00:00:00:00:20"), ("ipv4_dst", "10.0.0.20")]
    assert [a.port for i in c2s.instructions for a in i.actions if hasattr(a, "port")] == [4]
    assert match(s2c) == {"in_port": 4, "eth_type": 0x0800, "ip_proto": 6, "ipv4_src": "10.0.0.20", "tcp_src": 80}
    assert set_fields(s2c) == [("ipv4_src", "10.0.0.10"), ("eth_src", "00:00:00:00:00:10")]
    assert c2s.priority == s2c.priority == messages.PRIO_REDIRECT > messages.PRIO_MIRROR

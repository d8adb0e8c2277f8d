"""The fake flow table (tests/support/fake_oftable.py), checked against the real
flows of ftcp.controller.of.messages: what a packet hits, where it goes, how deletes and adds
behave, and that matches parsed from the wire compare equal to built ones."""
import struct

import pytest
from ryu.ofproto import ofproto_parser
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ftcp.common import config
from ftcp.controller.of import cookies, messages, packets
from ftcp.controller.placement import plan_switch
from tests.support.fake_oftable import FakeOFTable, Flow

CONF = config.parse({"services": [
    {"name": "web", "address": "10.0.0.10", "port": 80,
     "primary": {"port": 3, "mac": "00:00:00:00:00:10"},
     "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": 4, "mirror_port": 5,
                  "mac": "00:00:00:00:00:20"}]},
    {"name": "db", "address": "10.0.0.30", "port": 5432, "primary": {"port": 6, "mac": "00:00:00:00:00:10"},
     "backups": [{"name": "b2", "address": "10.0.0.40", "data_port": 7, "mirror_port": 8, "mac": "00:00:00:00:00:20"}]},
]})
PORTS = {f"s1-eth{i}": i for i in range(1, 9)}
WEB, DB = plan_switch(CONF, PORTS)
PROBE_IP = "10.0.0.99"
WEB_ID, DB_ID = WEB.service.cookie_id, DB.service.cookie_id
SERVICE_MAC = "00:00:00:00:00:10"

CLIENT = dict(in_port=1, eth_type=0x0800, ip_proto=6, eth_src="00:00:00:00:00:01", eth_dst=SERVICE_MAC,
              ipv4_src="10.0.0.1", ipv4_dst="10.0.0.10", tcp_src=5000, tcp_dst=80, tcp_flags=packets.TCP_ACK)
PRIMARY = dict(in_port=3, eth_type=0x0800, ip_proto=6, eth_src=SERVICE_MAC, eth_dst="00:00:00:00:00:01",
               ipv4_src="10.0.0.10", ipv4_dst="10.0.0.1", tcp_src=80, tcp_dst=5000, tcp_flags=packets.TCP_ACK)


class FakeDatapath:
    ofproto = ofp
    ofproto_parser = parser
    id = 1


DP = FakeDatapath()


def wire(msg):
    """The message as the switch receives it: serialized, and parsed back."""
    msg.datapath = DP   # as the shim gives each message its switch
    msg.set_xid(7)
    msg.serialize()
    return ofproto_parser.msg(DP, *ofproto_parser.header(bytes(msg.buf)), bytes(msg.buf))


def flow_stats_reply(stats, xid=9):
    """An OFPMP_FLOW multipart reply as a switch sends it, parsed by Ryu."""
    body = bytearray()
    for s in stats:
        entry = bytearray(ofp.OFP_FLOW_STATS_0_SIZE)
        s.match.serialize(entry, len(entry))
        for inst in s.instructions:
            inst.serialize(entry, len(entry))
        struct.pack_into(ofp.OFP_FLOW_STATS_0_PACK_STR, entry, 0, len(entry), s.table_id, s.duration_sec,
                         s.duration_nsec, s.priority, s.idle_timeout, s.hard_timeout, s.flags, s.cookie,
                         s.packet_count, s.byte_count)
        body += entry
    head = struct.pack(ofp.OFP_MULTIPART_REPLY_PACK_STR, ofp.OFPMP_FLOW, 0)
    length = ofp.OFP_HEADER_SIZE + len(head) + len(body)
    buf = struct.pack(ofp.OFP_HEADER_PACK_STR, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, length, xid) + head + body
    return ofproto_parser.msg(DP, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, length, xid, buf)


def steady_mods():
    return ([messages.default_flow()] + messages.service_flows(WEB, WEB.primary, WEB.backups, probe_ip=PROBE_IP)
            + messages.service_flows(DB, DB.primary, DB.backups))


def table_of(mods):
    table = FakeOFTable()
    for m in mods:
        table.apply(m)
    return table


@pytest.fixture
def table():
    return table_of(steady_mods())


def purpose(flow):
    return cookies.cookie_parts(flow.cookie)


def test_client_packet_goes_to_primary_and_mirror(table):
    assert purpose(table.lookup(**CLIENT)) == (WEB_ID, cookies.MIRROR_C2S)
    assert table.forward(**CLIENT) == [(3, CLIENT), (5, CLIENT)]


def test_primary_reply_is_forwarded_normally_and_mirrored(table):
    assert table.forward(**PRIMARY) == [(ofp.OFPP_NORMAL, PRIMARY), (5, PRIMARY)]
    # The same segment from any other port is not the primary's: plain NORMAL.
    assert table.forward(**{**PRIMARY, "in_port": 2}) == [(ofp.OFPP_NORMAL, {**PRIMARY, "in_port": 2})]


def test_probe_answers_reach_the_controller_only_from_the_primary_s_port(table):
    answer = {**PRIMARY, "ipv4_dst": PROBE_IP, "tcp_dst": 41234, "tcp_flags": packets.TCP_RST | packets.TCP_ACK}
    assert purpose(table.lookup(**answer)) == (WEB_ID, cookies.PROBE_REPLY)
    assert table.forward(**answer) == [(ofp.OFPP_CONTROLLER, answer)]
    forged = {**answer, "in_port": 2}            # the same segment from a client's port
    assert table.forward(**forged) == [(ofp.OFPP_NORMAL, forged)]
    arp = {"in_port": 3, "eth_type": 0x0806, "arp_tpa": PROBE_IP}
    assert table.forward(**arp) == [(ofp.OFPP_CONTROLLER, arp)]
    assert table.forward(**{**arp, "in_port": 2}) == [(ofp.OFPP_NORMAL, {**arp, "in_port": 2})]


def test_fin_and_rst_from_the_primary_are_held(table):
    fin = {**PRIMARY, "tcp_flags": packets.TCP_FIN | packets.TCP_ACK}
    rst = {**PRIMARY, "tcp_flags": packets.TCP_RST}
    assert purpose(table.lookup(**fin)) == (WEB_ID, cookies.HOLD_FIN)
    assert table.forward(**fin) == [(ofp.OFPP_CONTROLLER, fin)]
    assert purpose(table.lookup(**rst)) == (WEB_ID, cookies.HOLD_RST)
    # db has no hold: its FIN goes on.
    db_fin = {**fin, "in_port": 6, "ipv4_src": "10.0.0.30", "tcp_src": 5432}
    assert table.forward(**db_fin) == [(ofp.OFPP_NORMAL, db_fin), (8, db_fin)]


def test_mirror_port_traffic_is_dropped_not_missed(table):
    from_backup = {**CLIENT, "in_port": 5}
    assert purpose(table.lookup(**from_backup)) == (WEB_ID, cookies.MIRROR_PORT_DROP)
    assert table.forward(**from_backup) == []


def test_other_traffic_hits_the_normal_default_and_an_empty_table_misses(table):
    arp = dict(in_port=2, eth_type=0x0806, arp_tpa="10.0.0.77")
    assert table.forward(**arp) == [(ofp.OFPP_NORMAL, arp)]
    assert purpose(table.lookup(eth_type=0x0806, arp_tpa=PROBE_IP, in_port=3)) == (0, cookies.PROBE_ARP)
    assert FakeOFTable().lookup(**CLIENT) is None and FakeOFTable().forward(**CLIENT) == []


def test_fence_drops_the_primarys_segments(table):
    table.apply(messages.fence_flow(WEB, WEB.primary))
    for flags in (packets.TCP_ACK, packets.TCP_FIN, packets.TCP_RST):
        assert purpose(table.lookup(**{**PRIMARY, "tcp_flags": flags})) == (WEB_ID, cookies.FENCE)
        assert table.forward(**{**PRIMARY, "tcp_flags": flags}) == []
    assert table.forward(**CLIENT) == [(3, CLIENT), (5, CLIENT)]


def test_redirect_rewrites_to_the_backup(table):
    table.apply(messages.fence_flow(WEB, WEB.primary))
    for m in messages.redirect_flows(WEB, WEB.host("b1"), SERVICE_MAC):
        table.apply(m)
    (port, out), = table.forward(**CLIENT)
    assert port == 4 and out == {**CLIENT, "eth_dst": "00:00:00:00:00:20", "ipv4_dst": "10.0.0.20"}
    reply = {**PRIMARY, "in_port": 4, "ipv4_src": "10.0.0.20", "eth_src": "00:00:00:00:00:20"}
    assert table.forward(**reply) == [(ofp.OFPP_NORMAL, {**reply, "ipv4_src": "10.0.0.10", "eth_src": SERVICE_MAC})]
    arp = dict(in_port=1, eth_type=0x0806, arp_tpa="10.0.0.10")
    assert table.forward(**arp) == [(ofp.OFPP_CONTROLLER, arp)]


def test_delete_service_removes_only_that_services_flows(table):
    before = table.flows()
    table.apply(messages.delete_by_cookie(cookies.cookie(WEB_ID, 0), cookies.MASK_SERVICE))
    after = table.flows()
    assert after == [f for f in before if purpose(f)[0] != WEB_ID]
    assert {purpose(f)[0] for f in before} == {0, WEB_ID, DB_ID}
    assert table.forward(**CLIENT) == [(ofp.OFPP_NORMAL, CLIENT)]
    table.apply(messages.delete_by_cookie(cookies.cookie(0, 0), cookies.MASK_ALL_FTCP))
    assert table.flows() == []


def test_delete_strict_removes_exactly_one(table):
    c2s = messages.service_flows(WEB, WEB.primary, WEB.backups)[0]
    table.apply(messages.fence_flow(WEB, WEB.primary))
    table.apply(messages.redirect_flows(WEB, WEB.host("b1"), SERVICE_MAC)[0])  # same match as c2s, higher priority
    count = len(table.flows())

    def strict(priority):
        return parser.OFPFlowMod(DP, command=ofp.OFPFC_DELETE_STRICT, priority=priority, match=c2s.match,
                                 table_id=ofp.OFPTT_ALL, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)

    table.apply(strict(messages.PRIO_MIRROR + 1))
    assert len(table.flows()) == count
    table.apply(strict(messages.PRIO_MIRROR))
    assert len(table.flows()) == count - 1
    assert purpose(table.lookup(**CLIENT)) == (WEB_ID, cookies.REDIRECT_C2S)
    assert not [f for f in table.flows() if purpose(f) == (WEB_ID, cookies.MIRROR_C2S)]


def test_non_strict_delete_takes_every_more_specific_flow(table):
    table.apply(messages.fence_flow(WEB, WEB.primary))
    table.apply(parser.OFPFlowMod(DP, command=ofp.OFPFC_DELETE, match=parser.OFPMatch(in_port=3),
                                  table_id=ofp.OFPTT_ALL, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
    assert not [f for f in table.flows() if f.match.get("in_port") == 3]
    assert purpose(table.lookup(**CLIENT)) == (WEB_ID, cookies.MIRROR_C2S)  # no in_port in its match: kept
    assert purpose(table.lookup(**PRIMARY)) == (0, cookies.DEFAULT)


def test_add_with_same_priority_and_match_replaces(table):
    count = len(table.flows())
    new = messages.add(cookies.cookie(DB_ID, 0x77), messages.PRIO_MIRROR,
                     parser.OFPMatch(eth_type=0x0800, ip_proto=6, ipv4_dst="10.0.0.10", tcp_dst=80),
                     [parser.OFPActionOutput(9)])
    table.apply(new)
    assert len(table.flows()) == count
    assert table.lookup(**CLIENT).cookie == cookies.cookie(DB_ID, 0x77)
    assert table.forward(**CLIENT) == [(9, CLIENT)]
    # Same match at another priority is another flow.
    table.apply(messages.add(1, messages.PRIO_MIRROR - 1, new.match, []))
    assert len(table.flows()) == count + 1


def test_modify_changes_actions_of_the_cookies_flows_only(table):
    drop_all = parser.OFPFlowMod(DP, command=ofp.OFPFC_MODIFY, cookie=cookies.cookie(DB_ID, 0),
                                 cookie_mask=cookies.MASK_SERVICE, match=parser.OFPMatch(), instructions=[])
    table.apply(drop_all)
    db_client = {**CLIENT, "ipv4_dst": "10.0.0.30", "tcp_dst": 5432}
    assert table.forward(**db_client) == [] and table.lookup(**db_client) is not None
    assert table.forward(**CLIENT) == [(3, CLIENT), (5, CLIENT)]
    strict = parser.OFPFlowMod(DP, command=ofp.OFPFC_MODIFY_STRICT, priority=messages.PRIO_MIRROR,
                               match=messages.service_flows(WEB, WEB.primary, WEB.backups)[0].match,
                               instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                                          [parser.OFPActionOutput(4)])])
    table.apply(strict)
    assert table.forward(**CLIENT) == [(4, CLIENT)]


def test_a_tie_at_the_top_priority_is_an_error():
    table = table_of([messages.add(1, 10, parser.OFPMatch(in_port=1), []),
                      messages.add(2, 10, parser.OFPMatch(eth_type=0x0800), [])])
    assert table.lookup(in_port=2, eth_type=0x0800).cookie == 2
    with pytest.raises(AssertionError, match="ambiguous"):
        table.lookup(**CLIENT)


def test_masked_fields_compare_under_their_mask():
    table = table_of([messages.add(1, 10, parser.OFPMatch(eth_type=0x0800, ipv4_dst=("10.0.0.0", "255.255.255.0")),
                                 [parser.OFPActionOutput(1)])])
    assert table.lookup(eth_type=0x0800, ipv4_dst="10.0.0.200").cookie == 1
    assert table.lookup(eth_type=0x0800, ipv4_dst="10.0.1.1") is None


def test_set_fields_apply_only_to_the_outputs_after_them():
    table = table_of([messages.add(1, 10, parser.OFPMatch(in_port=1), [
        parser.OFPActionOutput(2), parser.OFPActionSetField(ipv4_dst="10.0.0.20"),
        parser.OFPActionSetField(eth_dst="00:00:00:00:00:20"), parser.OFPActionOutput(3)])])
    assert table.forward(**CLIENT) == [
        (2, CLIENT), (3, {**CLIENT, "ipv4_dst": "10.0.0.20", "eth_dst": "00:00:00:00:00:20"})]
    assert CLIENT["ipv4_dst"] == "10.0.0.10"


def test_other_messages_are_ignored_and_flowmods_logged_in_order(table):
    mods = steady_mods()
    assert [(m.cookie, m.priority) for m in table.log] == [(m.cookie, m.priority) for m in mods]
    before = table.flows()
    for msg in (messages.barrier(), messages.port_desc_request(), messages.port_stats_request(3),
                messages.release(b"\0" * 60, WEB.backups), parser.OFPFlowStatsRequest(DP)):
        table.apply(msg)
    assert table.flows() == before and len(table.log) == len(mods)


def test_flows_are_sorted_by_priority():
    prios = [f.priority for f in table_of(steady_mods()).flows()]
    assert prios == sorted(prios, reverse=True) and isinstance(table_of(steady_mods()).flows()[0], Flow)


def test_flow_stats_filter_by_cookie_and_keep_the_match_object():
    applied = steady_mods()
    table = table_of(applied)
    stats = table.flow_stats(cookies.cookie(DB_ID, 0), cookies.MASK_SERVICE)
    assert sorted(s.cookie for s in stats) == sorted(m.cookie for m in applied
                                                     if cookies.cookie_parts(m.cookie)[0] == DB_ID)
    for s in stats:
        mod, = [m for m in applied if m.cookie == s.cookie and m.match is s.match]
        assert s.priority == mod.priority and s.table_id == 0
    assert len(table.flow_stats()) == len(table.flows())


def test_wire_parsed_flows_behave_and_compare_like_built_ones():
    built, parsed = table_of(steady_mods()), table_of(wire(m) for m in steady_mods())
    assert [(f.cookie, f.priority, f.match) for f in parsed.flows()] == \
           [(f.cookie, f.priority, f.match) for f in built.flows()]
    fin = {**PRIMARY, "tcp_flags": packets.TCP_FIN}
    for pkt in (CLIENT, PRIMARY, fin, {**CLIENT, "in_port": 5}):
        assert parsed.forward(**pkt) == built.forward(**pkt)
    # A built ADD replaces its wire-parsed twin (same priority, equal match).
    for m in steady_mods():
        parsed.apply(m)
    assert len(parsed.flows()) == len(built.flows())


def test_flow_stats_round_trip_through_a_reply_from_the_wire(table):
    table.apply(messages.fence_flow(WEB, WEB.primary))
    for m in messages.redirect_flows(WEB, WEB.host("b1"), SERVICE_MAC):
        table.apply(m)
    reply = flow_stats_reply(table.flow_stats())
    assert isinstance(reply, parser.OFPFlowStatsReply) and len(reply.body) == len(table.flows())
    rebuilt = table_of(parser.OFPFlowMod(DP, cookie=s.cookie, priority=s.priority, match=s.match,
                                         instructions=s.instructions) for s in reply.body)
    assert [(f.cookie, f.priority, f.match) for f in rebuilt.flows()] == \
           [(f.cookie, f.priority, f.match) for f in table.flows()]
    for pkt in (CLIENT, PRIMARY, {**PRIMARY, "in_port": 4, "ipv4_src": "10.0.0.20"}):
        assert rebuilt.forward(**pkt) == table.forward(**pkt)
    # Deleting with the matches read back takes the original flows.
    for s in reply.body:
        table.apply(parser.OFPFlowMod(DP, command=ofp.OFPFC_DELETE_STRICT, priority=s.priority, match=s.match,
                                      cookie=s.cookie, cookie_mask=(1 << 64) - 1))
    assert table.flows() == []

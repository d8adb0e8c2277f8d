"""The controller core against fake switches: what a packet would hit, step by step,
through failovers, controller restarts, switch reconnects, lost barriers and
acknowledgements (tests/support/switch_rig.py). Long because the core is one
state machine over every switch and service: its scenarios stay together."""
import pytest
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ftcp.common import config
from ftcp.controller.of import cookies, messages, packets
from ftcp.common.statuses import ServiceStatus
from ftcp.controller.core import Refusal
from ftcp.controller.effects import Event, Send
from tests.support.fake_oftable import FakeOFTable
from tests.support.switch_rig import PORTS, Rig

SERVICE = {"name": "web", "address": "10.0.0.10", "port": 80,
           "primary": {"port": "s1-eth3", "mac": "00:00:00:00:00:10"},
           "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": "s1-eth4", "mirror_port": "s1-eth5",
                        "mac": "00:00:00:00:00:20"}]}
CONF = config.parse({"services": [SERVICE],
                     "probe": {"address": "10.0.0.254", "interval": 0.05, "misses": 3}})
CLIENT = dict(in_port=1, eth_type=0x0800, ip_proto=6, ipv4_src="10.0.0.1", ipv4_dst="10.0.0.10",
              tcp_src=5000, tcp_dst=80, tcp_flags=packets.TCP_ACK)
PRIMARY = dict(in_port=3, eth_type=0x0800, ip_proto=6, ipv4_src="10.0.0.10", ipv4_dst="10.0.0.1",
               tcp_src=80, tcp_dst=5000, tcp_flags=packets.TCP_ACK)
BACKUP = dict(PRIMARY, in_port=4, ipv4_src="10.0.0.20")
NORMAL, CONTROLLER = ofp.OFPP_NORMAL, ofp.OFPP_CONTROLLER


def ports_of(table, **pkt):
    return [port for port, _ in table.forward(**pkt)]


def up(conf=CONF, records=None, **kw):
    """A controller with its state restored and switch 1 connected and reconciled."""
    rig = Rig(conf, **kw)
    rig.restore(records)
    rig.connect(1)
    rig.beat("b1")
    return rig


def fail_over(rig):
    """Link down on the primary's port; the agent answers everything at once."""
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    epoch = rig.core.failovers["web"].epoch
    rig.call("control", {"cmd": "ready", "service": "web", "epoch": epoch, "backup": "b1", "taken": ["x"],
                         "failed": {}})
    rig.call("control", {"cmd": "gone", "service": "web", "epoch": epoch, "backup": "b1"})
    return epoch


def test_fresh_switch_gets_the_steady_flows_and_the_service_is_protected_after_the_barrier():
    rig = Rig(CONF)
    rig.restore({})
    table = rig.connect(1)
    assert ports_of(table, **CLIENT) == [3, 5]                  # to the primary and the mirror
    assert ports_of(table, **PRIMARY) == [NORMAL, 5]
    assert ports_of(table, **dict(PRIMARY, tcp_flags=packets.TCP_FIN)) == [CONTROLLER]   # held
    assert ports_of(table, **dict(CLIENT, in_port=5)) == []      # the mirror port cannot inject
    assert ports_of(table, **dict(CLIENT, in_port=3)) == []      # nor the service's own hosts,
    assert ports_of(table, **dict(CLIENT, in_port=4)) == []      # as clients of it
    assert ("web", ServiceStatus.PROTECTED) == rig.last_record("web")[:2]
    assert ("flows_installed", {"service": "web", "dpid": "0000000000000001", "flows": 9}) in rig.events


def test_no_switch_is_touched_before_the_state_is_read_from_redis():
    rig = Rig(CONF)
    old = FakeOFTable()
    old.apply(messages.fence_flow(_plan(), _plan().primary))
    rig.connect(1, old)
    assert old.log[1:] == [] and rig.core.switches.get(1).flows is not None
    rig.restore({"web": {"status": "failed-over", "epoch": "2", "backup": "b1", "step": "done"}})
    assert ports_of(old, **CLIENT) == [4]


def _plan():
    from ftcp.controller.placement import plan_switch
    return plan_switch(CONF, {name: no for name, (no, _) in PORTS.items()})[0]


def test_failover_order_fence_then_takeover_then_redirect_then_go():
    rig = up()
    table = rig.tables[1]
    rig.hold.add(1)                        # the switch has not answered the fence's barrier yet
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    assert rig.core.failovers["web"].status == ServiceStatus.FAILING_OVER
    assert ports_of(table, **PRIMARY) == []            # fenced at once
    assert ports_of(table, **BACKUP) == [NORMAL]       # a rebuilt socket's retransmission leaves as the service
    assert table.forward(**BACKUP)[0][1]["ipv4_src"] == "10.0.0.10"
    assert ports_of(table, **CLIENT) == [3, 5]         # still mirrored: the agent drains up to now
    assert rig.cmds() == []                            # no takeover before the barrier
    rig.hold.clear()
    rig.settle()
    assert rig.cmds() == [("takeover", 1)]
    rig.hold.add(1)
    rig.call("control", {"cmd": "ready", "service": "web", "epoch": 1, "backup": "b1", "taken": ["x"],
                         "failed": {}})
    assert ports_of(table, **CLIENT) == [4] and table.forward(**CLIENT)[0][1]["ipv4_dst"] == "10.0.0.20"
    assert rig.cmds() == [("takeover", 1)]             # no go before the redirect's barrier
    rig.hold.clear()
    rig.settle()
    assert rig.cmds() == [("takeover", 1), ("go", 1)]
    rig.call("control", {"cmd": "gone", "service": "web", "epoch": 1, "backup": "b1"})
    name, status, fields = rig.last_record("web")
    assert status == ServiceStatus.FAILED_OVER and fields["step"] == "done" and "timeline_ms" in fields
    assert ports_of(table, **PRIMARY) == []


def test_a_controller_restart_after_a_failover_keeps_fence_and_redirect_and_touches_nothing():
    rig = up()
    fail_over(rig)
    table = rig.tables[1]
    record = rig.stored("web")
    before = len(table.log)
    again = Rig(CONF)
    again.restore({"web": record})
    again.connect(1, table)
    assert table.log[before:] == []                    # nothing deleted, nothing re-added
    assert ports_of(table, **CLIENT) == [4] and ports_of(table, **PRIMARY) == []
    assert again.cmds() == []


def test_a_controller_that_starts_during_a_failover_finishes_it_with_the_same_epoch():
    rig = up()
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    record = rig.stored("web")
    assert record["status"] == ServiceStatus.FAILING_OVER
    again = Rig(CONF)
    again.restore({"web": record})
    again.connect(1, rig.tables[1])
    assert again.cmds() == [("takeover", 1)]           # asked again; the agent answers what it prepared
    again.call("control", {"cmd": "ready", "service": "web", "epoch": 1, "backup": "b1", "taken": [],
                           "failed": {}})
    assert again.cmds()[-1] == ("go", 1)
    assert ports_of(again.tables[1], **CLIENT) == [4]


def test_a_restart_between_redirect_and_gone_sends_go_again():
    rig = up()
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    rig.call("control", {"cmd": "ready", "service": "web", "epoch": 1, "backup": "b1", "taken": [], "failed": {}})
    record = rig.stored("web")
    again = Rig(CONF)
    again.restore({"web": record})
    again.connect(1, rig.tables[1])
    assert again.cmds() == [("go", 1)]


def test_a_fence_lost_with_the_switch_is_confirmed_by_the_reconcile_after_it_reconnects():
    rig = up()
    rig.hold.add(1)
    rig.call("control", {"cmd": "ready", "service": "web", "epoch": 0, "backup": "b1"})   # nothing awaited
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    rig.call("control", {"cmd": "ready", "service": "web", "epoch": 1, "backup": "b1"})   # not yet asked
    assert rig.core.failovers["web"].status == ServiceStatus.FAILING_OVER
    rig.disconnect(1)
    rig.hold.clear()
    fresh = FakeOFTable()          # the switch restarted and lost its flows
    rig.connect(1, fresh)
    assert ports_of(fresh, **PRIMARY) == [] and rig.cmds() == [("takeover", 1)]


def test_switch_lost_between_redirect_and_barrier_gets_go_after_it_reconnects():
    rig = up()
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    rig.hold.add(1)
    rig.call("control", {"cmd": "ready", "service": "web", "epoch": 1, "backup": "b1", "taken": [], "failed": {}})
    rig.disconnect(1)
    rig.hold.clear()
    assert rig.cmds() == [("takeover", 1)]
    rig.connect(1)
    assert rig.cmds() == [("takeover", 1), ("go", 1)]
    assert ports_of(rig.tables[1], **CLIENT) == [4]


def test_reconnect_reconciles_by_diff_never_delete_all():
    rig = up()
    table = rig.tables[1]
    stale = messages.service_flows(_plan(), _plan().primary, _plan().backups)[0]
    stale.cookie = cookies.cookie(0x123456, cookies.MIRROR_C2S)   # a service no longer configured
    stale.match = messages.tcp_match(ipv4_dst="10.0.0.99", tcp_dst=9)
    table.apply(stale)
    before = len(table.log)
    rig.disconnect(1)
    rig.connect(1, table)
    changes = table.log[before:]
    assert [m.command for m in changes] == [ofp.OFPFC_DELETE_STRICT]
    assert changes[0].cookie == stale.cookie
    assert all(m.command != ofp.OFPFC_DELETE for m in table.log)


def test_a_service_added_or_replaced_on_a_synced_switch_is_recorded_protected_once_its_flows_are_confirmed():
    rig = up()
    db = config.parse_service(dict(SERVICE, name="db", port=5432))
    rig.call("apply_service", db)            # the rig answers the reconcile's barrier
    assert rig.stored("db")["status"] == ServiceStatus.PROTECTED and rig.stored("db")["flows"] == "9"
    assert [r[1] for r in rig.records if r[0] == "db"] == ["configured", ServiceStatus.PROTECTED]
    rig.call("apply_service", config.parse_service(dict(SERVICE, port=8080)))   # a replacement
    assert [r[1] for r in rig.records if r[0] == "web"][-2:] == ["configured", ServiceStatus.PROTECTED]


def test_replacing_a_service_moves_its_flows_without_a_gap():
    rig = up()
    table = rig.tables[1]
    before = len(table.log)
    moved = config.parse_service(dict(SERVICE, port=8080))
    rig.call("apply_service", moved)
    changes = table.log[before:]
    commands = [m.command for m in changes]
    assert commands == sorted(commands)                # every add before any delete
    assert ofp.OFPFC_DELETE not in commands
    assert ports_of(table, **dict(CLIENT, tcp_dst=8080)) == [3, 5]
    assert ports_of(table, **CLIENT) == [NORMAL]
    assert ("service", None) in [(m["cmd"], m.get("epoch")) for m in rig.published]


def test_failover_deadline_redirects_so_clients_are_reset_and_aborts_the_agent():
    rig = up(takeover_timeout=1.0)
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    rig.tick(rig.now + 0.5)
    assert rig.cmds().count(("takeover", 1)) == 3      # resent every 0.25 s while no ready comes
    rig.tick(rig.now + 0.6)
    assert rig.core.failovers["web"].status == ServiceStatus.FAILOVER_FAILED
    assert ports_of(rig.tables[1], **CLIENT) == [4]    # the backup's kernel resets them: nobody hangs
    assert rig.cmds()[-1] == ("abort", 1)
    rig.call("control", {"cmd": "aborted", "service": "web", "epoch": 1, "backup": "b1"})
    assert rig.last_record("web")[2]["step"] == "aborted"
    effects, state = rig.core.start_failover("web", "retry", None, rig.now)   # retried over REST
    rig.run(effects)
    rig.settle()
    assert state["epoch"] == 2 and state["status"] == ServiceStatus.FAILING_OVER and rig.cmds()[-1] == ("takeover", 2)


def test_no_live_agent_means_no_fence():
    rig = up()
    rig.core.heartbeats.clear()
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    assert rig.core.failovers["web"].status == ServiceStatus.PROTECTED
    assert ports_of(rig.tables[1], **PRIMARY) == [NORMAL, 5]
    assert rig.events[-1][0] == "failover_refused"
    rig.now += 10
    rig.core.agent_heartbeat("b1", {"heartbeat": str(rig.now - 4), "control": "1"}, rig.now)
    assert not rig.core.alive("b1", rig.now)           # an old heartbeat is no agent
    rig.core.agent_heartbeat("b1", {"heartbeat": str(rig.now), "control": "1", "stopped": "1"}, rig.now)
    assert not rig.core.alive("b1", rig.now)           # nor is one that stopped


def test_requests_the_core_will_not_carry_out_are_typed_refusals_and_change_nothing():
    rig = up()
    rig.core.heartbeats.clear()
    before = (rig.core.failovers["web"].status, rig.core.failovers["web"].epoch, len(rig.published))
    with pytest.raises(Refusal) as refused:
        rig.core.start_failover("web", "over REST", None, rig.now)
    assert (refused.value.status, refused.value.reason, refused.value.field) == \
        (409, "service web cannot fail over now: no live backup agent", "name")
    assert [e.kind for e in refused.value.effects if isinstance(e, Event)] == ["failover_refused"]
    assert (rig.core.failovers["web"].status, rig.core.failovers["web"].epoch, len(rig.published)) == before
    rig = up()
    fail_over(rig)
    with pytest.raises(Refusal) as refused:
        rig.core.start_failover("web", "over REST", None, rig.now)
    assert (refused.value.status, refused.value.reason) == (409, "service web is failed-over, not protected: "
                                                                 "nothing to move")
    rig.run(rig.core.demote(rig.now))
    for call in (lambda: rig.core.start_failover("web", "over REST", None, rig.now),
                 lambda: rig.core.remove_service("web", rig.now),
                 lambda: rig.core.apply_service(config.parse_service(SERVICE), rig.now)):
        with pytest.raises(Refusal) as refused:
            call()
        assert refused.value.status == 503 and "standby" in refused.value.reason
    assert [s.name for s in rig.core.conf.services] == ["web"]


def test_a_service_removed_and_defined_again_goes_on_from_its_last_epoch():
    rig = up()
    fail_over(rig)
    assert rig.core.failovers["web"].epoch == 1
    rig.call("remove_service", "web")
    rig.call("apply_service", config.parse_service(SERVICE))
    assert rig.core.failovers["web"].epoch == 1
    assert rig.last_record("web")[2]["epoch"] == 1                 # recorded (and so in ftcp:epochs) at once
    rig.call("port_status", 1, 3, "s1-eth3", True, "modify")
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    assert rig.core.failovers["web"].epoch == 2 and rig.cmds()[-1] == ("takeover", 2)


def test_a_new_controller_takes_the_last_epochs_from_redis_for_a_service_with_no_record():
    rig = Rig(CONF)
    rig.restore({}, epochs={"web": 7, "gone": 3})
    rig.connect(1)
    rig.beat("b1")
    assert rig.core.failovers["web"].epoch == 7
    assert rig.last_record("web")[2]["epoch"] == 7
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    assert rig.cmds()[-1] == ("takeover", 8)


TWO_BACKUPS = config.parse({"services": [dict(SERVICE, backups=SERVICE["backups"] + [
    {"name": "b2", "address": "10.0.0.30", "data_port": "s1-eth6", "mirror_port": "s1-eth7",
     "mac": "00:00:00:00:00:30"}])], "probe": {"address": "10.0.0.254", "interval": 0.05, "misses": 3}})


def test_with_two_backups_both_get_the_mirror_and_a_dead_first_one_is_passed_over():
    rig = up(TWO_BACKUPS)
    rig.beat("b2")
    assert ports_of(rig.tables[1], **CLIENT) == [3, 5, 7] and ports_of(rig.tables[1], **PRIMARY) == [NORMAL, 5, 7]
    rig.core.heartbeats.pop("b1")                      # b1's agent is gone: b2 protects alone
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    f = rig.core.failovers["web"]
    assert (f.status, f.backup) == ("failing-over", "b2") and rig.published[-1]["cmd"] == "takeover"
    rig.call("control", {"cmd": "ready", "service": "web", "epoch": 1, "backup": "b2", "taken": ["x"], "failed": {}})
    assert ports_of(rig.tables[1], **CLIENT) == [5, 6]  # redirected to b2, b1 (not fenced) keeps its copy
    assert [p["cmd"] for p in rig.published] == ["takeover", "go"]


B1 = dict(in_port=4, eth_type=0x0800, ip_proto=6, ipv4_src="10.0.0.20", ipv4_dst="10.0.0.1", tcp_src=80, tcp_dst=5000,
          tcp_flags=packets.TCP_ACK)


def test_after_a_failover_the_next_backup_protects_and_the_next_failure_fails_over_again():
    """Roles, not hosts: p1 fails, b1 serves and b2 protects it (a copy of both
    directions as the client sees them); then b1 fails, and b2 takes over."""
    rig = up(TWO_BACKUPS)
    rig.beat("b2")
    epoch = fail_over(rig)
    f = rig.core.failovers["web"]
    assert (f.status, f.serving, f.fenced, f.backup) == ("protected", "b1", ("primary",), None)
    assert rig.last_record("web")[1:] == ("protected", {"step": "reprotected", "backup": "", "serving": "b1",
                                                         "fenced": '["primary"]', "epoch": epoch})
    table = rig.tables[1]
    assert ports_of(table, **CLIENT) == [7, 4]          # b2's copy (not rewritten), then to b1
    assert ports_of(table, **PRIMARY) == []             # p1 stays fenced
    assert ports_of(table, **B1) == [NORMAL, 7]         # b1's answers: rewritten, and b2's copy
    hold = dict(B1, tcp_flags=packets.TCP_ACK | packets.TCP_FIN)
    assert ports_of(table, **hold) == [CONTROLLER]      # b1's FIN is held until a probe says
    # the probes go to b1's own address out of b1's port; its answers count
    rig.now += 0.06
    out = rig.run(rig.core.tick(rig.now))
    syns = [e for e in out if isinstance(e, Send) and isinstance(e.msg, parser.OFPPacketOut)]
    assert syns and all(a.port == 4 for e in syns for a in e.msg.actions)
    assert {packets.parse_frame(e.msg.data).dst for e in syns} == {"10.0.0.20"}
    # b1 fails: b2 takes over (epoch 2), b1 fenced too
    rig.call("port_status", 1, 4, "s1-eth4", False, "modify")
    assert (f.status, f.backup, f.serving) == ("failing-over", "b2", "b1") and rig.cmds()[-1] == ("takeover", 2)
    assert ports_of(table, **B1) == []
    rig.call("control", {"cmd": "ready", "service": "web", "epoch": 2, "backup": "b2", "taken": ["x"], "failed": {}})
    assert ports_of(table, **CLIENT) == [6]
    rig.call("control", {"cmd": "gone", "service": "web", "epoch": 2, "backup": "b2"})
    assert (f.status, f.step) == ("failed-over", "done")   # nobody is left to protect it
    assert ports_of(table, **PRIMARY) == [] and ports_of(table, **B1) == []


def test_the_host_serving_stays_among_the_backups_and_a_definition_without_it_fences_all():
    rig = up(TWO_BACKUPS)
    rig.beat("b2")
    fail_over(rig)                                      # b1 serves, b2 protects
    only_b2 = config.parse_service(dict(SERVICE, backups=TWO_BACKUPS.services[0].to_dict()["backups"][1:]))
    with pytest.raises(config.ConfigError) as refused:
        rig.core.apply_service(only_b2, rig.now)
    assert refused.value.problem == "service web is served by b1: keep b1 among its backups"
    # a controller that starts with a services file that lost b1 (renamed while it was down)
    again = Rig(config.parse({"services": [only_b2.to_dict()],
                              "probe": {"address": "10.0.0.254", "interval": 0.05, "misses": 3}}))
    again.restore({"web": rig.stored("web")})
    again.connect(1, rig.tables[1])
    again.beat("b2")
    again.tick(again.now + 0.2)                          # probes, link reads: nothing trips on the gone host
    # redirected nowhere and mirrored to nobody, as for a backup the definition lost
    assert ports_of(rig.tables[1], **CLIENT) == [NORMAL] and ports_of(rig.tables[1], **PRIMARY) == []


def test_roles_are_restored_from_redis_by_a_new_controller():
    rig = up(TWO_BACKUPS)
    rig.beat("b2")
    fail_over(rig)
    again = Rig(TWO_BACKUPS)
    again.restore({"web": rig.stored("web")})
    again.connect(1, rig.tables[1])
    f = again.core.failovers["web"]
    assert (f.status, f.serving, f.fenced) == ("protected", "b1", ("primary",))
    assert rig.tables[1].log[-1:] != [] and ports_of(rig.tables[1], **CLIENT) == [7, 4]


def test_a_deleted_primary_port_fails_over_and_the_redirect_stays():
    rig = up()
    rig.call("port_status", 1, 3, "s1-eth3", False, "delete")
    rig.call("control", {"cmd": "ready", "service": "web", "epoch": 1, "backup": "b1", "taken": [], "failed": {}})
    table = rig.tables[1]
    assert rig.cmds() == [("takeover", 1), ("go", 1)]
    assert ports_of(table, **CLIENT) == [4]
    rig.disconnect(1)                                  # and a later reconnect keeps it
    ports = {k: v for k, v in PORTS.items() if k != "s1-eth3"}
    rig.connect(1, table, ports)
    assert ports_of(table, **CLIENT) == [4] and ports_of(table, **BACKUP) == [NORMAL]


def test_a_primary_already_down_at_start_is_failed_over_if_it_was_protected_before():
    rig = Rig(CONF)
    rig.beat("b1")
    rig.restore({"web": {"status": "protected", "epoch": "4"}})
    rig.connect(1, ports=dict(PORTS, **{"s1-eth3": (3, False)}))
    assert rig.core.failovers["web"].status == ServiceStatus.FAILING_OVER and rig.core.failovers["web"].epoch == 5
    fresh = Rig(CONF)                                  # never seen alive: waits for it
    fresh.beat("b1")
    fresh.restore({})
    fresh.connect(1, ports=dict(PORTS, **{"s1-eth3": (3, False)}))
    assert fresh.core.failovers["web"].status == ServiceStatus.PROTECTED


def test_a_primary_whose_server_is_dead_at_start_is_condemned_by_the_first_rst():
    conf = config.parse({"services": [SERVICE], "probe": {"address": "10.0.0.254", "refusals": 1}})
    rig = up(conf, records={"web": {"status": "protected", "epoch": "1"}})
    rig.tick(rig.now + 0.05)
    sport, (seq, _) = next(iter(rig.core.liveness.probers["web"].outstanding.items()))
    rst = _segment("10.0.0.10", "10.0.0.254", 80, sport, ack=seq + 1, flags=packets.TCP_RST | packets.TCP_ACK)
    # the same answer by any other flow (a client's port: NORMAL, cookie 0) is not an answer
    rig.call("packet_in", 1, 1, 0, rst)
    rig.call("packet_in", 1, 1, cookies.cookie(0, cookies.SERVICE_ARP), rst)
    assert rig.core.failovers["web"].status == ServiceStatus.PROTECTED
    rig.call("packet_in", 1, 3, cookies.cookie(0, cookies.PROBE_REPLY), rst)
    assert rig.core.failovers["web"].status == ServiceStatus.FAILING_OVER


def test_a_malformed_epoch_is_dropped_not_raised():
    rig = up()
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    rig.call("control", {"cmd": "ready", "service": "web", "epoch": "x1", "backup": "b1"})
    rig.call("control", {"cmd": "ready", "service": "nope", "epoch": 1, "backup": "b1"})
    epoch = rig.core.failovers["web"].epoch
    for shape in ({"taken": 3}, {"failed": ["x"]}, {"id": 7}):
        rig.call("control", {"cmd": "ready", "service": "web", "epoch": epoch, "backup": "b1", **shape})
    rig.call("control", {"cmd": "invalid", "why": "bad signature", "raw": "{}"})
    assert rig.core.failovers["web"].status == ServiceStatus.FAILING_OVER


def test_arp_for_the_service_is_answered_only_after_the_failover():
    rig = up()
    req = _arp("10.0.0.1", "10.0.0.10")
    rig.published.clear()
    assert rig.core.packet_in(1, 1, cookies.cookie(0, cookies.SERVICE_ARP), req, rig.now) == []
    fail_over(rig)
    sends = rig.core.packet_in(1, 1, cookies.cookie(0, cookies.SERVICE_ARP), req, rig.now)
    assert len(sends) == 1 and b"\x00\x00\x00\x00\x00\x10" in bytes(sends[0].msg.data)


def _segment(src, dst, sport, dport, ack=0, flags=0):
    from scapy.all import IP, TCP, Ether
    return bytes(Ether(src="00:00:00:00:00:10", dst="00:00:00:00:00:fe") / IP(src=src, dst=dst)
                 / TCP(sport=sport, dport=dport, ack=ack, flags=flags))


def _arp(src, dst):
    from scapy.all import ARP, Ether
    return bytes(Ether(src="00:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
                 / ARP(op=1, psrc=src, pdst=dst, hwsrc="00:00:00:00:00:01"))


@pytest.mark.parametrize("junk", [b"", b"\x00" * 10, b"\xff" * 60])
def test_junk_packet_in_is_ignored(junk):
    rig = up()
    assert rig.core.packet_in(1, 1, 0, junk, rig.now) == []


def test_a_link_flap_shorter_than_link_confirm_does_not_fail_over():
    conf = config.parse({"services": [SERVICE], "probe": {"address": "10.0.0.254", "link_confirm": 0.1}})
    rig = up(conf)
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    rig.tick(rig.now + 0.05)
    rig.call("port_status", 1, 3, "s1-eth3", True, "modify")
    rig.tick(rig.now + 0.2)
    assert rig.core.failovers["web"].status == ServiceStatus.PROTECTED and ("link_flap", {"dpid": "0000000000000001",
                                                                          "port": 3}) in rig.events
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    rig.tick(rig.now + 0.09)
    assert rig.core.failovers["web"].status == ServiceStatus.PROTECTED
    rig.tick(rig.now + 0.02)
    assert rig.core.failovers["web"].status == ServiceStatus.FAILING_OVER


def test_one_refused_probe_is_confirmed_by_a_second_before_the_verdict():
    rig = up(records={"web": {"status": "protected", "epoch": "1"}})
    rig.tick(rig.now + 0.05)

    def refuse_latest():
        sport, (seq, _) = max(rig.core.liveness.probers["web"].outstanding.items(), key=lambda kv: kv[1][1])
        rst = _segment("10.0.0.10", "10.0.0.254", 80, sport, ack=seq + 1, flags=packets.TCP_RST | packets.TCP_ACK)
        rig.call("packet_in", 1, 3, cookies.cookie(0, cookies.PROBE_REPLY), rst)
    refuse_latest()
    assert rig.core.failovers["web"].status == ServiceStatus.PROTECTED
    refuse_latest()
    assert rig.core.failovers["web"].status == ServiceStatus.FAILING_OVER


def test_an_agents_answer_is_recorded_without_its_envelope():
    rig = up()
    fail_over(rig)
    name, status, fields = rig.last_record("web")
    assert status == ServiceStatus.FAILED_OVER and "cmd" not in fields and "service" not in fields


def test_a_standby_sends_nothing_until_promoted_then_claims_the_switch_and_carries_on():
    from ryu.ofproto import ofproto_v1_3_parser as parser
    master = up()
    master.call("port_status", 1, 3, "s1-eth3", False, "modify")     # failing over when the master dies
    table = master.tables[1]
    standby = Rig(CONF, active=False)
    standby.beat("b1")
    assert standby.run(standby.core.switch_connected(1, standby.now)) == []
    standby.tables[1], standby.ports[1] = table, dict(PORTS)
    before = len(table.log)
    standby.call("port_status", 1, 3, "s1-eth3", False, "modify")
    standby.tick(standby.now + 0.5)
    assert table.log[before:] == [] and standby.published == []
    effects = standby.run(standby.core.promote({"web": master.stored("web")}, 7, standby.now))
    roles = [e.msg for e in effects if isinstance(getattr(e, "msg", None), parser.OFPRoleRequest)]
    assert [(r.role, r.generation_id) for r in roles] == [(ofp.OFPCR_ROLE_MASTER, 7)]
    standby.settle()
    assert standby.cmds() == [("takeover", 1)]                        # the same failover, finished
    standby.run(standby.core.demote(standby.now))
    standby.tick(standby.now + 1.0)
    assert standby.cmds() == [("takeover", 1)]                        # demoted: no more resends


def test_a_silent_primary_after_a_restart_is_condemned_with_an_honest_silence():
    rig = up(records={"web": {"status": "protected", "epoch": "1"}})
    start = rig.now
    while rig.core.failovers["web"].status == ServiceStatus.PROTECTED and rig.now < start + 1:
        rig.tick(rig.now + 0.01)      # the primary answers nothing; nothing moves on its port:
        for _, xid in rig.core.liveness.port_reads():
            rig.call("port_stats", 1, xid, 0)
    assert rig.core.failovers["web"].status == ServiceStatus.FAILING_OVER
    # the silence is counted from the restart (the last sign of life the controller
    # has), and it is condemned on the tick that completes misses intervals of it
    probe = CONF.probe
    assert rig.now == pytest.approx(start + probe.misses * probe.interval, abs=1e-6)
    assert rig.stored("web")["reason"] == (f"no answer to {probe.misses} probes in "
                                           f"{probe.misses * probe.interval:.3f} s, "
                                           f"and nothing from the primary's port")


def test_ready_during_a_reconnects_reconcile_waits_for_a_barrier_after_the_redirect():
    """The barrier of a reconcile computed before ready must not confirm the redirect."""
    from ryu.ofproto import ofproto_v1_3_parser as parser
    rig = up()
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    table = rig.tables[1]
    rig.disconnect(1)
    rig.hold.add(1)
    rig.connect(1, table)
    queue = rig.queue[1]
    while queue and not isinstance(queue[0], parser.OFPBarrierRequest):
        rig.run(rig._answer(1, queue.popleft()))      # the reconcile (fenced) is out, its barrier pending
    rig.run(rig.core.control({"cmd": "ready", "service": "web", "epoch": 1, "backup": "b1", "taken": [],
                              "failed": {}}, rig.now))
    rig.hold.clear()
    rig.settle()
    assert rig.cmds()[-1] == ("go", 1)
    assert ports_of(table, **CLIENT) == [4]           # go only once the redirect is in


def test_a_reconcile_during_link_confirm_waits_for_it():
    conf = config.parse({"services": [SERVICE], "probe": {"address": "10.0.0.254", "link_confirm": 1.0}})
    rig = up(conf, records={"web": {"status": "protected", "epoch": "0"}})
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    rig.call("port_status", 1, 8, "s1-eth8", True, "add")    # any reconcile meanwhile
    assert rig.core.failovers["web"].status == ServiceStatus.PROTECTED
    rig.tick(rig.now + 1.0)
    assert rig.core.failovers["web"].status == ServiceStatus.FAILING_OVER


def test_a_failed_over_service_cannot_lose_its_backup_and_a_restored_one_without_it_does_not_wedge():
    rig = up()
    fail_over(rig)
    b2 = dict(SERVICE["backups"][0], name="b2")
    with pytest.raises(config.ConfigError) as err:
        rig.core.apply_service(config.parse_service(dict(SERVICE, backups=[b2])), rig.now)
    assert err.value.field == "backups" and "b1" in err.value.problem
    conf2 = config.parse({"services": [dict(SERVICE, backups=[b2])]})
    again = Rig(conf2)
    again.restore({"web": rig.stored("web")})          # recorded failed over to b1, b1 is gone now
    table = again.connect(1)
    again.call("port_status", 1, 8, "s1-eth8", True, "add")
    assert again.core.switches.get(1).synced and ports_of(table, **PRIMARY) == []   # fenced, still reconciling


def test_messages_carry_the_failover_id_and_an_answer_for_another_one_is_ignored():
    rig = up()
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    fid = rig.published[-1]["id"]
    assert fid and rig.stored("web")["failover_id"] == fid
    rig.call("control", {"cmd": "ready", "service": "web", "epoch": 1, "backup": "b1", "id": "1@other",
                         "taken": [], "failed": {}})
    # an answer to a failover that is not this one
    assert rig.core.failovers["web"].status == ServiceStatus.FAILING_OVER
    again = up(records={"web": {"status": "protected", "epoch": "0"}})   # its record never reached Redis
    again.now += 2.0                                                       # a later controller
    again.beat("b1")
    again.call("port_status", 1, 3, "s1-eth3", False, "modify")
    assert again.published[-1]["epoch"] == 1 and again.published[-1]["id"] != fid


def test_orders_to_an_agent_name_the_run_its_heartbeat_showed():
    """A takeover, go or abort carries the agent's "started" from its last heartbeat: a
    sealed order replayed to the agent after it restarted names the old run, and the
    agent ignores it (ftcp/agent/main.py handle)."""
    rig = up()
    rig.core.agent_heartbeat("b1", {"heartbeat": str(rig.now), "control": "1", "started": "1700000000.250000"},
                             rig.now)
    rig.call("port_status", 1, 3, "s1-eth3", False, "modify")
    rig.settle()
    takeover, = [m for m in rig.published if m["cmd"] == "takeover"]
    assert takeover["boot"] == "1700000000.250000"

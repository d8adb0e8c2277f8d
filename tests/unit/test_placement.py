"""Resolving a service's attachment points against a switch's port list."""
from ftcp.common import config
from ftcp.controller.placement import plan_switch, switch_applies


def conf(primary="s1-eth3", mirror=5, dpid=None):
    return config.parse({
        "switch": {"dpid": dpid},
        "services": [{"name": "web", "address": "10.0.0.10", "port": 80,
                      "primary": {"port": primary, "mac": "00:00:00:00:00:10"},
                      "backups": [{"name": "b1", "address": "10.0.0.20", "data_port": "s1-eth4",
                                   "mirror_port": mirror, "mac": "00:00:00:00:00:20"}]}]})


PORTS = {"s1-eth3": 3, "s1-eth4": 4, "s1-eth5": 5}


def test_names_and_numbers_resolve():
    plan, = plan_switch(conf(), PORTS)
    assert plan.ok and (plan.primary_port, plan.mirror_ports, plan.data_ports) == (3, (5,), (4,))


def test_unknown_primary_is_not_a_crash_and_leaves_the_backups_resolved():
    """A failed-over service still needs its backup's ports when its primary's port is gone."""
    plan, = plan_switch(conf(primary="eth9"), PORTS)
    assert plan.ok and plan.primary_port is None and plan.data_ports == (4,)
    assert plan.primary_problem == "primary.port eth9 is not a port of this switch"


def test_number_absent_from_switch_is_a_problem():
    plan, = plan_switch(conf(mirror=9), PORTS)
    assert plan.problem == "backups[b1].mirror_port 9 is not a port of this switch"


def test_switch_applies():
    assert switch_applies(conf(), 42)
    assert switch_applies(conf(dpid=1), 1) and not switch_applies(conf(dpid=1), 2)

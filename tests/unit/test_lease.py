"""ftcp/controller/lease.py: when a controller sharing its switches may act, on a fake clock."""
from ftcp.controller.lease import DEMOTE, PROMOTE, STAY, UNKNOWN, Lease


def test_acts_only_within_the_safe_part_of_a_lease_after_the_renewal_was_asked():
    lease = Lease(1.5)
    assert not lease.may_act(100.0)                        # never renewed
    assert lease.answered(100.0, (3, True), active=False, now=100.4) == PROMOTE
    assert lease.generation == 3
    assert lease.may_act(100.0 + 0.6 * 1.5 - 0.001)
    assert not lease.may_act(100.0 + 0.6 * 1.5)          # measured from the ask, not the answer


def test_a_renewal_of_a_lease_held_keeps_acting_and_a_standby_that_holds_it_promotes():
    lease = Lease(1.5)
    assert lease.answered(10.0, (4, False), active=True, now=10.1) == STAY
    assert lease.answered(10.3, (4, False), active=False, now=10.4) == PROMOTE


def test_another_holder_demotes_at_once():
    lease = Lease(1.5)
    lease.answered(10.0, (4, True), active=True, now=10.0)
    assert lease.answered(10.3, None, active=True, now=10.3) == DEMOTE
    assert lease.answered(10.6, None, active=False, now=10.6) == STAY   # already a standby


def test_an_unanswered_renewal_demotes_only_once_the_safe_time_is_past():
    lease = Lease(1.5)
    lease.answered(10.0, (4, True), active=True, now=10.0)
    assert lease.answered(10.3, UNKNOWN, active=True, now=10.8) == STAY
    assert lease.may_act(10.8)
    assert lease.answered(10.6, UNKNOWN, active=True, now=10.9) == DEMOTE
    assert lease.renewed == 10.0                          # an unanswered ask renews nothing


def test_one_controller_alone_always_acts_and_the_ask_is_paced_by_the_length():
    alone = Lease(1.5, ha=False)
    assert alone.may_act(0.0)
    assert (Lease(1.5).interval, Lease(1.5).timeout) == (0.3, 0.5)

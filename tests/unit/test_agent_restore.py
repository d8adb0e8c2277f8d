"""A restarted agent rebuilds its connections from what the previous run stored
(Conn.from_state + Tracker.adopt): protected again only once a segment shows the
connection continues exactly where it was stored."""
from ftcp.agent.coordinator import cannot_take
from ftcp.agent.tracker import Conn, Tracker
from ftcp.agent.writer import redis_fields
from ftcp.common.schema import decode_conn
from tests.support.wire import SERVICES, STREAM, Link

NOW = 50.0


def stored_then_restarted(sent=10, sdata=7):
    """A connection that carried client and server bytes, stored as Redis holds it, and a
    fresh tracker (the restarted agent) that adopted it."""
    old = Tracker(SERVICES, log_cap=1 << 20)
    link = Link(old)
    conn = link.handshake()
    link.data(0, sent)
    link.sdata(0, sdata, cack=sent)
    link.cack(sdata, coff=sent)
    conn.take_c2s()
    state = decode_conn({k: str(v) for k, v in redis_fields(conn.to_state()).items()})
    state["c2s_stored"] = conn.c2s_logged
    new = Tracker(SERVICES, log_cap=1 << 20)
    again = Conn.from_state(state, NOW)
    assert new.adopt(again)
    link.t = new
    return link, again, conn


def test_rebuilt_state_equals_the_stored_one_but_for_restored():
    link, again, old = stored_then_restarted()
    want = dict(old.to_state(), restored=True, first_seen=old.first_seen, last_seen=NOW)
    assert dict(again.to_state(), last_seen=NOW) == want
    assert cannot_take(again) == "not seen since the agent restarted: its stored state may be stale"


def test_a_connection_that_continues_where_it_was_is_protected_and_logs_on():
    link, again, _ = stored_then_restarted(sent=10)
    link.data(10, 5, sack=7)
    assert (again.restored, again.status, again.c2s_logged) == (False, "protected", 15)
    assert again.take_c2s() == STREAM[10:15] and cannot_take(again) is None


def test_a_server_segment_at_the_stored_numbers_also_verifies():
    link, again, _ = stored_then_restarted(sent=10, sdata=7)
    link.sdata(7, 3, cack=10)
    assert (again.restored, again.status) == (False, "protected")


def test_client_bytes_sent_while_the_agent_was_down_unprotect_it():
    link, again, _ = stored_then_restarted(sent=10)
    link.data(14, 3, sack=7)          # 4 bytes went by unlogged
    assert again.status == "unprotected" and "moved while the agent was down" in again.reason


def test_server_bytes_sent_while_the_agent_was_down_unprotect_it():
    link, again, _ = stored_then_restarted(sent=10, sdata=7)
    link.cack(9, coff=10)             # the client acknowledges server bytes nobody saw
    assert again.status == "unprotected"


def test_a_retransmission_decides_nothing():
    link, again, _ = stored_then_restarted(sent=10)
    link.data(5, 5, sack=7)           # old bytes again
    assert again.restored and again.status == "protected"


def test_a_log_shorter_than_what_the_server_acknowledged_is_unprotected_at_once():
    old = Tracker(SERVICES, log_cap=1 << 20)
    link = Link(old)
    conn = link.handshake()
    link.data(0, 10)
    link.sack(10)
    state = decode_conn({k: str(v) for k, v in redis_fields(conn.to_state()).items()})
    state["c2s_stored"] = 6            # the previous run died before its last flush
    new = Tracker(SERVICES, log_cap=1 << 20)
    again = Conn.from_state(state, NOW)
    new.adopt(again)
    assert again.status == "unprotected" and "4 client bytes the log lacks" in again.reason


def test_a_new_connection_on_the_tuple_of_a_rebuilt_one_that_never_came_back_is_new():
    link, ghost, _ = stored_then_restarted()      # it closed while the agent was down
    new = Link(link.t, isn_c=0x00100000, isn_s=0x00900000)
    conn = new.handshake()
    new.data(0, 10)
    assert conn is not ghost and conn.isn_c == 0x00100000 and cannot_take(conn) is None


def test_a_rebuilt_connection_never_seen_again_expires():
    link, ghost, _ = stored_then_restarted()
    t = link.t
    t.expire(NOW + t.half_closed_timeout - 1)
    assert ghost.state == "established"
    t.expire(NOW + t.half_closed_timeout + 1)
    assert ghost.state == "closed"

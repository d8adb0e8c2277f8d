"""The words ftcp writes are its contract with Redis, REST and /metrics readers:
pinned here, and they behave as the plain strings they replace."""
import json

from ftcp.common.statuses import ConnState, ConnStatus, Reason, ServiceStatus


def test_the_written_words():
    assert [s.value for s in ServiceStatus] == ["configured", "protected", "unprotected", "failing-over",
                                                "failed-over", "failover-failed"]
    assert [s.value for s in ConnStatus] == ["protected", "unprotected"]
    assert [s.value for s in ConnState] == ["syn_sent", "syn_received", "established", "closing", "closed"]


def test_they_are_plain_strings_where_they_go():
    assert json.dumps({"status": ServiceStatus.FAILING_OVER}) == '{"status": "failing-over"}'
    assert f"{ConnStatus.UNPROTECTED}" == "unprotected" and ConnStatus.PROTECTED == "protected"


def test_a_reason_is_its_text_then_what_happened():
    assert Reason.CAPTURE_GAP.because("server acked 5 bytes not seen") == "capture gap: server acked 5 bytes not seen"
    assert Reason.NO_SYN.because() == "no SYN seen (connection predates capture)"
    assert Reason.label_of(Reason.OOO_OVERFLOW.because("9 segments")) == "reassembly_overflow"
    assert Reason.label_of("something else") == "other"

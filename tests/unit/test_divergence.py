"""The divergence rules (ftcp/agent/divergence.py)."""
import zlib

from ftcp.agent.divergence import ALIGNED, STRICT, differing, expectation, settle

DATE_1 = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 01 Dec 2026 23:59:59 GMT\r\nContent-Length: 5\r\n\r\nhello"
DATE_2 = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 02 Dec 2026 00:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello"


def test_strict_keeps_a_crc_and_refuses_any_difference():
    assert expectation(STRICT, memoryview(DATE_1)) == zlib.crc32(DATE_1)
    assert differing(expectation(STRICT, DATE_1), DATE_1) == 0
    assert differing(expectation(STRICT, DATE_1), DATE_2) is None


def test_aligned_tolerates_a_date_written_at_another_time():
    expected = expectation(ALIGNED, memoryview(DATE_1))
    assert expected == DATE_1 and isinstance(expected, bytes)
    assert differing(expected, DATE_1) == 0
    assert differing(expected, memoryview(DATE_2)) == sum(a != b for a, b in zip(DATE_1, DATE_2)) == 10


def test_aligned_refuses_a_field_that_changed_width():
    shorter = DATE_1.replace(b"Content-Length: 5", b"Content-Length: 50")[:len(DATE_1)]
    assert differing(DATE_1, shorter) is None


def test_aligned_refuses_a_digit_for_a_letter_or_a_changed_delimiter():
    assert differing(b"token=3fa9", b"token=3fb9") == 1        # letter for letter
    assert differing(b"token=3fa9", b"token=3f09") is None     # digit for letter: a hex token
    assert differing(b"ID: Ab", b"ID: ab") is None             # case is shape
    assert differing(b"a,b", b"a;b") is None                   # punctuation must be equal


def test_settle_puts_the_primary_s_bytes_into_the_replica_s_output():
    buf = bytearray(b"xx" + DATE_2 + b"yy")
    assert settle(DATE_1, buf, 2, len(DATE_1)) == 10
    assert buf == b"xx" + DATE_1 + b"yy"
    assert settle(DATE_1, buf, 2, len(DATE_1)) == 0
    refused = bytearray(b"abc1")
    assert settle(b"abc:", refused, 0, 4) is None and refused == b"abc1"   # left as it was
    assert settle(zlib.crc32(b"abc1"), refused, 0, 4) == 0

"""Sealed control messages (ftcp/control.py)."""
import json

import pytest

from ftcp import control
from ftcp.control import ControlError, seal, unseal

KEY = b"k" * 32
CH = "ftcp:ctl:agent:b1"
MSG = {"cmd": "takeover", "service": "web", "epoch": 3, "id": "3@1.0"}


def test_without_a_key_messages_go_bare():
    assert json.loads(seal(None, CH, MSG, 100.0)) == MSG
    assert unseal(None, CH, json.dumps(MSG), 100.0) == MSG


def test_a_sealed_message_opens_with_the_key_only():
    raw = seal(KEY, CH, MSG, 100.0)
    assert unseal(KEY, CH, raw, 130.0) == MSG
    with pytest.raises(ControlError, match="bad signature"):
        unseal(b"x" * 32, CH, raw, 100.0)
    with pytest.raises(ControlError, match="not signed"):
        unseal(KEY, CH, json.dumps(MSG), 100.0)                    # what anyone could publish


def test_a_changed_message_or_time_is_refused():
    env = json.loads(seal(KEY, CH, MSG, 100.0))
    forged = dict(env, m=json.dumps(dict(MSG, epoch=4)))
    with pytest.raises(ControlError, match="bad signature"):
        unseal(KEY, CH, json.dumps(forged), 100.0)
    with pytest.raises(ControlError, match="bad signature"):
        unseal(KEY, CH, json.dumps(dict(env, t="160.000000")), 160.0)


def test_an_old_message_replayed_is_refused():
    raw = seal(KEY, CH, MSG, 100.0)
    with pytest.raises(ControlError, match="replay"):
        unseal(KEY, CH, raw, 100.0 + control.MAX_AGE + 1)


@pytest.mark.parametrize("raw", [b"\xff", "[1]", "null", json.dumps({"m": 1, "t": "1", "s": "x"})])
def test_junk_is_refused_not_raised_otherwise(raw):
    with pytest.raises(ControlError):
        unseal(KEY, CH, raw, 1.0)


def test_key_files(tmp_path):
    assert control.load_key(None) is None
    good = tmp_path / "key"
    good.write_bytes(b"0123456789abcdef0123\n")
    assert control.load_key(str(good)) == b"0123456789abcdef0123"
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    with pytest.raises(ControlError, match="shorter"):
        control.load_key(str(short))
    with pytest.raises(ControlError, match="cannot read"):
        control.load_key(str(tmp_path / "missing"))


def test_a_message_sealed_for_one_channel_is_nothing_on_another():
    raw = seal(KEY, CH, MSG, 100.0)
    with pytest.raises(ControlError, match="bad signature"):
        unseal(KEY, "ftcp:ctl:agent:b2", raw, 100.0)


@pytest.mark.parametrize("raw", ['{"m": "x", "t": "1", "s": "\u00e9"}', "[" * 200000, '{"m": "[1]", "t": "x", "s": "' + "0" * 64 + '"}'])
def test_hostile_envelopes_are_refused_never_raised(raw):
    with pytest.raises(ControlError):
        unseal(KEY, CH, raw, 1.0)

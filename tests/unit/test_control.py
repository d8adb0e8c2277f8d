"""Sealed control messages (ftcp/common/control.py)."""
import json

import pytest

from ftcp.common import control
from ftcp.common.control import ControlError, Keyring, agent_key, seal, unseal

MASTER = b"k" * 32
CTL = Keyring(MASTER)                              # the controller's: the master key
B1 = Keyring(agent_key(MASTER, "b1"), agent="b1")  # agent b1's: its own key only
KEY = CTL
CH = "ftcp:ctl:agent:b1"
MSG = {"cmd": "takeover", "service": "web", "epoch": 3, "id": "3@1.0"}
ANSWER_CH = "ftcp:ctl:controller"
ANSWER = {"cmd": "ready", "service": "web", "epoch": 3, "id": "3@1.0", "backup": "b1"}


def to_b1(message=MSG, now=100.0):
    return seal(CTL, CH, message, now, peer="b1")


def test_without_a_key_messages_go_bare():
    assert json.loads(seal(None, CH, MSG, 100.0)) == MSG
    assert unseal(None, CH, json.dumps(MSG), 100.0) == MSG


def test_a_sealed_message_opens_with_the_key_only():
    raw = to_b1(now=100.0)
    assert unseal(B1, CH, raw, 130.0) == MSG
    with pytest.raises(ControlError, match="bad signature"):
        unseal(Keyring(b"x" * 32, agent="b1"), CH, raw, 100.0)
    with pytest.raises(ControlError, match="not signed"):
        unseal(B1, CH, json.dumps(MSG), 100.0)                    # what anyone could publish


def test_a_changed_message_or_time_is_refused():
    env = json.loads(to_b1(now=100.0))
    forged = dict(env, m=json.dumps(dict(MSG, epoch=4)))
    with pytest.raises(ControlError, match="bad signature"):
        unseal(B1, CH, json.dumps(forged), 100.0)
    with pytest.raises(ControlError, match="bad signature"):
        unseal(B1, CH, json.dumps(dict(env, t="160.000000")), 160.0)


def test_an_old_message_replayed_is_refused():
    raw = to_b1(now=100.0)
    with pytest.raises(ControlError, match="replay"):
        unseal(B1, CH, raw, 100.0 + control.MAX_AGE + 1)


@pytest.mark.parametrize("raw", [b"\xff", "[1]", "null", json.dumps({"m": 1, "t": "1", "s": "x"})])
def test_junk_is_refused_not_raised_otherwise(raw):
    with pytest.raises(ControlError):
        unseal(B1, CH, raw, 1.0)


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
    raw = to_b1(now=100.0)
    with pytest.raises(ControlError, match="bad signature"):
        unseal(B1, "ftcp:ctl:agent:b2", raw, 100.0)


@pytest.mark.parametrize("raw", ['{"m": "x", "t": "1", "s": "\u00e9"}', "[" * 200000,
                                 '{"m": "[1]", "t": "x", "s": "' + "0" * 64 + '"}'])
def test_hostile_envelopes_are_refused_never_raised(raw):
    with pytest.raises(ControlError):
        unseal(B1, CH, raw, 1.0)


def test_each_agent_has_its_own_key():
    """b1's key opens what the controller sends b1, not what it sends b2; the
    controller takes b1's answers, signed with b1's key, only for backup b1."""
    b2 = Keyring(agent_key(MASTER, "b2"), agent="b2")
    assert agent_key(MASTER, "b1") != agent_key(MASTER, "b2") and len(agent_key(MASTER, "b1")) == 64
    with pytest.raises(ControlError, match="bad signature"):
        unseal(b2, CH, to_b1(), 100.0)
    answer = seal(B1, ANSWER_CH, ANSWER, 100.0)
    assert unseal(CTL, ANSWER_CH, answer, 100.0) == ANSWER
    with pytest.raises(ControlError, match="signed by agent 'b1' for backup 'b2'"):
        unseal(CTL, ANSWER_CH, seal(B1, ANSWER_CH, dict(ANSWER, backup="b2"), 100.0), 100.0)
    env = json.loads(answer)
    with pytest.raises(ControlError, match="bad signature"):          # b1's signature, claimed by b2
        unseal(CTL, ANSWER_CH, json.dumps(dict(env, a="b2", m=json.dumps(dict(ANSWER, backup="b2")))), 100.0)


def test_an_agent_cannot_speak_for_the_controller():
    """An agent's key signs nothing another agent takes: what b1 seals for b2's channel
    carries b1's name, and agents take messages from the controller only."""
    forged = seal(B1, "ftcp:ctl:agent:b2", MSG, 100.0)
    b2 = Keyring(agent_key(MASTER, "b2"), agent="b2")
    with pytest.raises(ControlError, match="only the controller talks to an agent"):
        unseal(b2, "ftcp:ctl:agent:b2", forged, 100.0)
    unsigned_by_agent = json.loads(forged)
    del unsigned_by_agent["a"]
    with pytest.raises(ControlError, match="bad signature"):
        unseal(b2, "ftcp:ctl:agent:b2", json.dumps(unsigned_by_agent), 100.0)


def test_the_agent_key_command(tmp_path, capsys):
    master = tmp_path / "master"
    master.write_bytes(MASTER + b"\n")
    assert control.main(["agent-key", "--backup", "b1", "--master", str(master)]) == 0
    assert capsys.readouterr().out == agent_key(MASTER, "b1").decode() + "\n"
    with pytest.raises(SystemExit):
        control.main(["agent-key", "--backup", "../x", "--master", str(master)])

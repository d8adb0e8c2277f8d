"""Control messages between the controller and the agents, sealed (pure).

The messages travel over Redis pub/sub (ftcp/common/store.py), where anyone who can reach
Redis can publish. The controller holds a master key (a file: ``[ftcp]
control_key_file`` / ``FTCP_CONTROL_KEY_FILE``); each agent holds only its own key,
derived from the master key and its backup name (``agent_key``; ``python -m
ftcp.common.control agent-key --backup b1`` prints it from the master key file), in its
``--control-key-file``. A message between the controller and agent ``b1`` is sealed
with b1's key: an envelope ``{"m": <message as JSON>, "t": <time sent>, "a": <the
sending agent, on answers>, "s": <HMAC-SHA256 of channel, t, a and m>}``. A receiver
takes only envelopes whose signature checks out and that are at most ``MAX_AGE``
seconds old, and the controller takes only answers that name the agent that signed them:
an agent's key cannot speak for the controller to another agent, nor for another
agent to the controller. A replay later than ``MAX_AGE`` is refused; one within it is
harmless (every message is idempotent per epoch and failover id, docs/failover.md).
Without keys the messages go bare, and the controller and the agents say at start
that their control channel is not authenticated.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Optional

MAX_AGE = 60.0          # seconds; the controller's and the agents' clocks must agree this well
MIN_KEY_BYTES = 16


class ControlError(ValueError):
    """A message that is not to be obeyed (bad signature, too old, not a message)."""


def load_key(path: Optional[str]) -> Optional[bytes]:
    """The key in ``path`` (surrounding whitespace ignored), or None without a path."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as e:
        raise ControlError(f"cannot read the control key file {path}: {e.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ControlError(f"the control key in {path} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def agent_key(master: bytes, backup: str) -> bytes:
    """Agent ``backup``'s key: what it seals and checks its messages with (hex, so it
    can be written to a key file as it is)."""
    return hmac.new(master, b"ftcp agent key\n" + backup.encode(), hashlib.sha256).hexdigest().encode()


@dataclass(frozen=True)
class Keyring:
    """The keys of one side: the controller's (``agent`` None: the master key, from
    which it derives each agent's) or one agent's (its own key only)."""
    key: bytes
    agent: Optional[str] = None

    def for_peer(self, peer: Optional[str]) -> bytes:
        """The key of the messages between this side and ``peer`` (an agent's name, or
        None for the controller)."""
        if self.agent is None:
            if peer is None:
                raise ControlError("not signed by an agent")
            return agent_key(self.key, peer)
        if peer is not None:
            raise ControlError(f"signed by agent {peer!r}: only the controller talks to an agent")
        return self.key


def _mac(key: bytes, channel: str, sent: str, sender: str, body: str) -> str:
    return hmac.new(key, f"{channel}\n{sent}\n{sender}\n{body}".encode(), hashlib.sha256).hexdigest()


_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")   # a backup's name (ftcp/common/config.py NAME_RE)


def seal(keys: Optional[Keyring], channel: str, message: dict, now: float, peer: Optional[str] = None) -> str:
    """The message as it goes on the wire to ``channel``, for ``peer`` (the agent the
    controller writes to; None when an agent writes to the controller)."""
    body = json.dumps(message)
    if keys is None:
        return body
    sent, sender = f"{now:.6f}", keys.agent or ""
    envelope = {"m": body, "t": sent, "s": _mac(keys.for_peer(peer), channel, sent, sender, body)}
    if sender:
        envelope["a"] = sender
    return json.dumps(envelope)


def unseal(keys: Optional[Keyring], channel: str, raw, now: float) -> dict:
    """The message in ``raw``, received on ``channel``, if it is to be obeyed; else
    ControlError saying why (and never any other exception: anyone can publish)."""
    try:
        return _unseal(keys, channel, raw, now)
    except ControlError:
        raise
    except Exception as e:   # RecursionError on deep nesting, anything else junk may cause
        raise ControlError(f"unreadable ({type(e).__name__})") from None


def _unseal(keys, channel, raw, now) -> dict:
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        raise ControlError("not JSON") from None
    if not isinstance(data, dict):
        raise ControlError("not a JSON object")
    if keys is None:
        return data
    body, sent, mac, sender = data.get("m"), data.get("t"), data.get("s"), data.get("a", "")
    if not (isinstance(body, str) and isinstance(sent, str) and isinstance(mac, str)):
        raise ControlError("not signed (this side has a control key)")
    if not isinstance(sender, str) or (sender and not _NAME.fullmatch(sender)):
        raise ControlError("bad sender")
    key = keys.for_peer(sender or None)
    if not _HEX64.fullmatch(mac) or not hmac.compare_digest(mac, _mac(key, channel, sent, sender, body)):
        raise ControlError("bad signature")
    try:
        age = now - float(sent)
    except ValueError:
        raise ControlError("bad time") from None
    if not -MAX_AGE <= age <= MAX_AGE:
        raise ControlError(f"sent {age:.0f} s from now: a replay, or clocks {MAX_AGE:.0f} s apart")
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ControlError("not a JSON object")
    if sender and message.get("backup") != sender:
        raise ControlError(f"signed by agent {sender!r} for backup {message.get('backup')!r}")
    return message


def key_from_env(name: str = "FTCP_CONTROL_KEY_FILE") -> Optional[str]:
    return os.environ.get(name) or None


def main(argv=None) -> int:
    """``python -m ftcp.common.control agent-key --backup NAME [--master FILE]``: the key file
    content for agent NAME (the master key file defaults to FTCP_CONTROL_KEY_FILE)."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m ftcp.common.control", description="ftcp control keys")
    sub = ap.add_subparsers(dest="command", required=True)
    derive = sub.add_parser("agent-key", help="print an agent's key, derived from the controller's master key")
    derive.add_argument("--backup", required=True, help="the backup's name in the services file")
    derive.add_argument("--master", default=key_from_env(), help="the master key file (default: "
                        "FTCP_CONTROL_KEY_FILE)")
    args = ap.parse_args(argv)
    if not _NAME.fullmatch(args.backup):
        ap.error(f"--backup: not a backup name: {args.backup!r}")
    try:
        master = load_key(args.master)
    except ControlError as e:
        ap.error(str(e))
    if master is None:
        ap.error("--master (or FTCP_CONTROL_KEY_FILE) is required")
    sys.stdout.write(agent_key(master, args.backup).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Control messages between the controller and the agents, sealed with a shared key (pure).

The messages travel over Redis pub/sub (ftcp/store.py), where anyone who can reach
Redis can publish. With a control key (a file both sides read: ``[ftcp]
control_key_file`` / ``FTCP_CONTROL_KEY_FILE`` for the controller, ``--control-key-file``
for the agent) every message is an envelope ``{"m": <message as JSON>, "t": <time
sent>, "s": <HMAC-SHA256 of t and m>}``; a receiver takes only envelopes whose
signature checks out and that are at most ``MAX_AGE`` seconds old (a replay later than
that is refused; one within it is harmless: every message is idempotent per epoch and
failover id, docs/failover.md). Without a key the messages go bare, and the controller
and the agent say at start that their control channel is not authenticated.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
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


def _mac(key: bytes, channel: str, sent: str, body: str) -> str:
    return hmac.new(key, f"{channel}\n{sent}\n{body}".encode(), hashlib.sha256).hexdigest()


_HEX64 = re.compile(r"[0-9a-f]{64}")


def seal(key: Optional[bytes], channel: str, message: dict, now: float) -> str:
    """The message as it goes on the wire to ``channel``."""
    body = json.dumps(message)
    if key is None:
        return body
    sent = f"{now:.6f}"
    return json.dumps({"m": body, "t": sent, "s": _mac(key, channel, sent, body)})


def unseal(key: Optional[bytes], channel: str, raw, now: float) -> dict:
    """The message in ``raw``, received on ``channel``, if it is to be obeyed; else
    ControlError saying why (and never any other exception: anyone can publish)."""
    try:
        return _unseal(key, channel, raw, now)
    except ControlError:
        raise
    except Exception as e:   # RecursionError on deep nesting, anything else junk may cause
        raise ControlError(f"unreadable ({type(e).__name__})") from None


def _unseal(key, channel, raw, now) -> dict:
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        raise ControlError("not JSON") from None
    if not isinstance(data, dict):
        raise ControlError("not a JSON object")
    if key is None:
        return data
    body, sent, mac = data.get("m"), data.get("t"), data.get("s")
    if not (isinstance(body, str) and isinstance(sent, str) and isinstance(mac, str)):
        raise ControlError("not signed (this side has a control key)")
    if not _HEX64.fullmatch(mac) or not hmac.compare_digest(mac, _mac(key, channel, sent, body)):
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
    return message


def key_from_env(name: str = "FTCP_CONTROL_KEY_FILE") -> Optional[str]:
    return os.environ.get(name) or None

"""What a REST request may carry, judged (pure): the parsed request, its query
parameters, JSON bodies, connection ids, service names and client filters. Each
refusal is an ``ApiError`` naming the field it is about; ftcp/api/routes.py routes requests
and answers them.
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from ftcp.common.config import NAME_RE

MAX_BODY = 64 * 1024
# [0-9], not \d: for str patterns \d also matches non-ASCII digits.
CONN_ID_RE = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,3}){3}):([0-9]{1,5})-([0-9]{1,3}(?:\.[0-9]{1,3}){3}):([0-9]{1,5})")


class ApiError(Exception):
    """A request the API refuses: HTTP status, message, and the field it is about."""

    def __init__(self, status: int, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclass(frozen=True)
class Request:
    method: str
    params: dict = field(default_factory=dict)      # path parameters
    query: dict = field(default_factory=dict)       # name -> value, or list of values
    body: bytes = b""
    authorization: Optional[str] = None             # the Authorization header, as sent


def query(req: Request, allowed: tuple) -> dict:
    """The query parameters, each given once and each one of ``allowed``."""
    out = {}
    for name, value in req.query.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if name not in allowed:
            raise ApiError(400, f"unknown query parameter (allowed: {', '.join(allowed) or 'none'})", name)
        if len(values) != 1:
            raise ApiError(400, "must be given once", name)
        out[name] = values[0]
    return out

def integer(query: dict, name: str, default: int, low: int, high: int) -> int:
    """A query parameter that is a plain decimal integer from ``low`` to ``high``."""
    text = query.get(name)
    if text is None:
        return default
    # Not int(text) alone: it also takes " 5", "+5", "5_0" and non-ASCII digits.
    if not re.fullmatch(r"[0-9]{1,10}", text) or not low <= int(text) <= high:
        raise ApiError(400, f"must be an integer from {low} to {high}, got {text!r}", name)
    return int(text)

def json_body(body: bytes) -> Any:
    """The body as JSON: present, at most MAX_BODY bytes, well formed."""
    if len(body) > MAX_BODY:
        raise ApiError(413, f"the body is over {MAX_BODY} bytes", "body")
    if not body.strip():
        raise ApiError(400, "a JSON body is required", "body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:   # UnicodeDecodeError is a ValueError
        raise ApiError(400, f"malformed JSON: {e}", "body") from None

def action_body(req: Request, required: tuple, optional: tuple = ()) -> dict:
    """A small JSON object of strings (an action's arguments); empty means {}."""
    data = json_body(req.body) if req.body.strip() or required else {}
    if not isinstance(data, dict):
        raise ApiError(400, "must be a JSON object", "body")
    for name in data:
        if name not in required + optional:
            raise ApiError(400, f"unknown field (allowed: {', '.join(required + optional) or 'none'})", name)
    for name in required:
        if name not in data:
            raise ApiError(400, "is required", name)
    for name, value in data.items():
        if not isinstance(value, str):
            raise ApiError(400, f"must be a string, got {json.dumps(value)}", name)
    return data


def client_filter(text: str):
    """``10.0.0.1`` or ``10.0.0.1:40000`` -> a predicate on a connection row."""
    host, sep, port = text.partition(":")
    try:
        ip = str(ipaddress.IPv4Address(host))
        number = int(port) if sep else None
        if sep and not (port.isascii() and port.isdigit() and 1 <= number <= 65535):
            raise ValueError
    except ValueError:
        raise ApiError(400, f"must be an IPv4 address or address:port like 10.0.0.1:40000, got {text!r}",
                       "client") from None
    return lambda row: row.get("client_ip") == ip and (number is None or row.get("client_port") == number)


def conn_id(text: str) -> str:
    """A connection id like 10.0.0.1:40000-10.0.0.10:7000."""
    match = CONN_ID_RE.fullmatch(text)
    try:
        if match is None:
            raise ValueError
        ipaddress.IPv4Address(match.group(1)), ipaddress.IPv4Address(match.group(3))
    except ValueError:
        raise ApiError(400, f"must be a connection id like 10.0.0.1:40000-10.0.0.10:7000, got {text!r}",
                       "id") from None
    return text


def service_name(text: str) -> str:
    """A name a new service may have."""
    if not NAME_RE.fullmatch(text):
        raise ApiError(400, "must be 1-32 letters, digits, '_', '.', '-' starting with a letter or digit", "name")
    return text

"""What the controller's core returns for the Ryu shim to carry out (ftcp/controller/core.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ftcp.common.config import Service


@dataclass(frozen=True)
class Send:
    dpid: int
    msg: object


@dataclass(frozen=True)
class Publish:
    channel: str
    message: dict


@dataclass(frozen=True)
class RecordService:
    service: Service
    status: str
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ForgetService:
    name: str


@dataclass(frozen=True)
class Event:
    kind: str
    fields: dict = field(default_factory=dict)

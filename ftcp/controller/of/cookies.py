"""The cookie every ftcp flow carries, and what it says (pure: no Ryu).

``'ftcp'`` in the high 32 bits, the service's 24-bit cookie id, an 8-bit purpose: the
controller finds, counts and deletes the flows of one service with cookie/cookie_mask
(as ryu's rest_router does), and a packet-in's cookie says which flow sent it.
"""
from __future__ import annotations

from typing import Optional

COOKIE_MAGIC = 0x66746370  # "ftcp"
MASK_ALL_FTCP = 0xFFFFFFFF << 32
MASK_SERVICE = MASK_ALL_FTCP | (0xFFFFFF << 8)

# Purposes (low byte of the cookie).
DEFAULT = 0x00
MIRROR_C2S = 0x01
MIRROR_S2C = 0x02
MIRROR_PORT_DROP = 0x03
NOT_A_CLIENT_DROP = 0x04
FENCE = 0x10
REDIRECT_C2S = 0x11
REDIRECT_S2C = 0x12
SERVICE_ARP = 0x13
HOLD_FIN = 0x20
HOLD_RST = 0x21
PROBE_REPLY = 0x22
PROBE_ARP = 0x23


def cookie(service_id: int, purpose: int) -> int:
    return (COOKIE_MAGIC << 32) | ((service_id & 0xFFFFFF) << 8) | (purpose & 0xFF)


def cookie_parts(value: int) -> Optional[tuple]:
    """(service_id, purpose) of an ftcp cookie, or None for a foreign cookie."""
    if value >> 32 != COOKIE_MAGIC:
        return None
    return (value >> 8) & 0xFFFFFF, value & 0xFF


def is_ftcp(cookie_value: int) -> bool:
    return cookie_value >> 32 == COOKIE_MAGIC

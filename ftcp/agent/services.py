"""What this backup protects, from the service definitions (pure): the tables the
tracker and the replica pool look things up in."""
from __future__ import annotations

from ftcp.agent.packet import ip_int


def _mine(services, backup: str | None):
    """(service, its backup entry for this agent) for each service this backup protects
    (every service, with its first backup, when ``backup`` is None)."""
    for svc in services:
        entry = next((b for b in svc.backups if backup is None or b.name == backup), None)
        if entry is not None:
            yield svc, entry


def tracked_services(services, backup: str | None) -> dict:
    """(server ip int, port) -> service name."""
    return {(ip_int(svc.address), svc.port): svc.name for svc, _ in _mine(services, backup)}


def primary_macs(services, backup: str | None) -> dict:
    """(server ip int, port) -> the primary's MAC (6 bytes)."""
    return {(ip_int(svc.address), svc.port): bytes.fromhex(svc.primary.mac.replace(":", ""))
            for svc, _ in _mine(services, backup) if svc.primary.mac}


def replicas(services, backup: str | None) -> dict:
    """service name -> (address, port) of its replica on this backup."""
    return {svc.name: (entry.address, svc.port) for svc, entry in _mine(services, backup)}


def divergence(services) -> dict:
    """service name -> its divergence rule."""
    return {svc.name: svc.divergence for svc in services}

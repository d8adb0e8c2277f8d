"""Pure decisions: which services a switch can protect, with which port numbers.

The Ryu shim feeds in the switch's port list (name -> OpenFlow port number); this
module says, per configured service, either the resolved ports or why not.
No Ryu, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ftcp.common.config import Config, Service


@dataclass(frozen=True)
class ServicePlan:
    service: Service
    primary_port: Optional[int] = None   # None: the primary's port is not on the switch (now)
    mirror_ports: tuple = ()
    data_ports: tuple = ()
    problem: Optional[str] = None  # set when the backups' ports are not all here

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def primary_problem(self) -> str:
        return f"primary.port {self.service.primary.port} is not a port of this switch"


def switch_applies(config: Config, dpid: int) -> bool:
    """Whether services are installed on this switch (no dpid = every switch)."""
    return config.dpid is None or config.dpid == dpid



def plan_service(service: Service, ports_by_name: dict, port_numbers: set) -> ServicePlan:
    """Resolve a service's attachment points against one switch's ports. A missing
    primary port is not a problem of the plan: a failed-over service still needs its
    backups' ports (its primary's tap may be gone for good)."""
    refs = []
    for b in service.backups:
        refs += [(f"backups[{b.name}].data_port", b.data_port), (f"backups[{b.name}].mirror_port", b.mirror_port)]
    resolved = {}
    for what, ref in refs:
        number = ref.resolve(ports_by_name)
        if number is None or number not in port_numbers:
            return ServicePlan(service, problem=f"{what} {ref} is not a port of this switch")
        resolved[what] = number
    primary = service.primary.port.resolve(ports_by_name)
    return ServicePlan(
        service,
        primary_port=primary if primary in port_numbers else None,
        mirror_ports=tuple(resolved[f"backups[{b.name}].mirror_port"] for b in service.backups),
        data_ports=tuple(resolved[f"backups[{b.name}].data_port"] for b in service.backups),
    )


def plan_switch(config: Config, ports_by_name: dict) -> list:
    """One ServicePlan per configured service, in config order."""
    numbers = set(ports_by_name.values())
    return [plan_service(s, ports_by_name, numbers) for s in config.services]

"""Pure decisions: which services a switch can protect, with which port numbers.

The Ryu shim feeds in the switch's port list (name -> OpenFlow port number); this
module says, per configured service, either the resolved ports or why not.
No Ryu, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ftcp.common.config import Config, Service
from ftcp.common.statuses import PRIMARY


@dataclass(frozen=True)
class HostPorts:
    """One host of a service as attached to this switch: where it serves from (its
    data port) and, for a host that can protect, where its agent captures the mirror."""
    name: Optional[str]                # None: the primary (the services file does not name it)
    address: str
    mac: Optional[str]
    data_port: Optional[int]           # None: not a port of this switch (now)
    mirror_port: Optional[int] = None


@dataclass(frozen=True)
class ServicePlan:
    """A service on one switch: its hosts in order (the primary first, then its
    backups), each with its resolved ports, or the problem that leaves it unprotected."""
    service: Service
    hosts: tuple = ()
    problem: Optional[str] = None  # set when the backups' ports are not all here

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def primary(self) -> HostPorts:
        return self.hosts[0]

    @property
    def backups(self) -> tuple:
        return self.hosts[1:]

    def host(self, name: str) -> HostPorts:
        """A host by its name (the primary's is ``failover.PRIMARY``)."""
        if name == PRIMARY:
            return self.hosts[0]
        return next(h for h in self.hosts if h.name == name)

    @property
    def primary_port(self) -> Optional[int]:
        return self.hosts[0].data_port if self.hosts else None

    @property
    def mirror_ports(self) -> tuple:
        return tuple(h.mirror_port for h in self.backups)

    @property
    def data_ports(self) -> tuple:
        return tuple(h.data_port for h in self.backups)

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
    hosts = [HostPorts(None, service.address, service.primary.mac, primary if primary in port_numbers else None)]
    hosts += [HostPorts(b.name, b.address, b.mac, resolved[f"backups[{b.name}].data_port"],
                        resolved[f"backups[{b.name}].mirror_port"]) for b in service.backups]
    return ServicePlan(service, hosts=tuple(hosts))


def plan_switch(config: Config, ports_by_name: dict) -> list:
    """One ServicePlan per configured service, in config order."""
    numbers = set(ports_by_name.values())
    return [plan_service(s, ports_by_name, numbers) for s in config.services]

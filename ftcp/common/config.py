"""Load and validate the ftcp service configuration (YAML).

Everything is checked at load time; the first problem raises ConfigError naming
the field (``services[0].backups[0].mirror_port``) so the controller never starts
half-configured. The result is a tree of frozen dataclasses.

This module is long because it is one validator per field of the services file, each
naming the field it refuses, and the cross-service checks that need them all.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml

DEFAULT_REDIS_URL = "unix:///run/ftcp/redis.sock"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
MAC_RE = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
# OpenFlow 1.3 physical/logical port numbers stop below the reserved range (OFPP_MAX).
OFPP_MAX = 0xFFFFFF00
# a service's "divergence": how far its backup's replica may differ (ftcp/agent/divergence.py)
DIVERGENCE_MODES = ("strict", "aligned")


class ConfigError(ValueError):
    """A configuration problem; ``field`` is the dotted path of the culprit."""

    def __init__(self, field_path: str, problem: str):
        self.field = field_path
        self.problem = problem
        super().__init__(f"{field_path}: {problem}" if field_path else problem)


@dataclass(frozen=True)
class PortRef:
    """A switch port given by number (``3``) or by interface name (``s1-eth3``)."""

    number: Optional[int] = None
    name: Optional[str] = None

    def __str__(self) -> str:
        return str(self.number) if self.number is not None else str(self.name)

    def resolve(self, ports_by_name: dict) -> Optional[int]:
        """The OpenFlow port number, using the switch's port list for names."""
        if self.number is not None:
            return self.number
        return ports_by_name.get(self.name)


@dataclass(frozen=True)
class Primary:
    port: PortRef
    mac: Optional[str] = None


@dataclass(frozen=True)
class Backup:
    name: str
    address: str
    data_port: PortRef
    mirror_port: PortRef
    mac: Optional[str] = None


@dataclass(frozen=True)
class Service:
    name: str
    address: str
    port: int
    primary: Primary
    backups: tuple
    # how much the backup's replica may differ from the primary (ftcp/agent/divergence.py)
    divergence: str = "strict"

    @property
    def key(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def cookie_id(self) -> int:
        """24-bit id carried in the cookie of every flow of this service."""
        return service_cookie_id(self.name)

    def to_dict(self) -> dict:
        """The service as it would be written in the services file (parse() round-trips it)."""
        def port(ref):
            return ref.number if ref.number is not None else ref.name
        primary = {"port": port(self.primary.port)}
        if self.primary.mac:
            primary["mac"] = self.primary.mac
        backups = []
        for b in self.backups:
            item = {"name": b.name, "address": b.address, "data_port": port(b.data_port),
                    "mirror_port": port(b.mirror_port)}
            if b.mac:
                item["mac"] = b.mac
            backups.append(item)
        return {"name": self.name, "address": self.address, "port": self.port, "primary": primary,
                "backups": backups, "divergence": self.divergence}


def service_cookie_id(name: str) -> int:
    # 0 is reserved for flows that belong to no service (the NORMAL default).
    return (zlib.crc32(name.encode()) & 0xFFFFFF) or 1


@dataclass(frozen=True)
class Probe:
    """In-band liveness probes: SYNs from ``address`` (a free address in the service's
    subnet that the controller answers ARP for) every ``interval`` seconds; ``misses``
    unanswered in a row, and no packet from the primary's port, = the host is gone."""

    address: str
    mac: str = "02:66:74:63:70:01"
    interval: float = 0.05
    # 3 x 50 ms + 50 ms <= 200 ms to detect a silent host. Probe answers alone would
    # give a false verdict when a saturated ovs-vswitchd answers them > 150 ms late, so
    # the prober also reads the primary port's counters before it condemns (probe.py).
    misses: int = 3
    # A RST to a probe condemns only when this many probes in a row were refused: each
    # refusal sends the next probe at once, so a confirmation costs one probe's round
    # trip (docs/reliability.md). 1 = the first RST condemns.
    refusals: int = 2
    # A primary's link that goes down fails over only if it is still down after this
    # long (seconds); 0 = at once. The wait adds to every link failure's stall.
    link_confirm: float = 0.0


@dataclass(frozen=True)
class Config:
    services: tuple
    dpid: Optional[int] = None
    redis_url: str = DEFAULT_REDIS_URL
    source: str = field(default="<memory>", compare=False)
    probe: Optional[Probe] = None

    def service(self, name: str) -> Optional[Service]:
        return next((s for s in self.services if s.name == name), None)


# --- field checkers: each takes (value, path) and returns the clean value ----------


def _mapping(value: Any, path: str, required: set, optional: set) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a mapping, got {_kind(value)}")
    unknown = sorted(set(map(str, value)) - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise ConfigError(_join(path, unknown[0]), f"unknown field (allowed: {allowed})")
    for key in sorted(required):
        if key not in value:
            raise ConfigError(_join(path, key), "is required")
    return value


def _name(value: Any, path: str) -> str:
    # fullmatch: with match(), "$" also matches before a trailing newline ("web\n").
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ConfigError(
            path,
            f"must be 1-32 characters of letters, digits, '_', '.', '-' "
            f"starting with a letter or digit, got {value!r}",
        )
    return value


def _ipv4(value: Any, path: str) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(path, f"must be an IPv4 address like 10.0.0.10, got {value!r}") from None
    if addr.is_multicast or addr.is_unspecified or addr == ipaddress.IPv4Address("255.255.255.255"):
        raise ConfigError(path, f"must be a unicast host address, got {value}")
    return str(addr)


def _int_in(value: Any, path: str, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(path, f"must be {what} ({low}..{high}), got {value!r}")
    return value


def _choice(value: Any, path: str, choices: tuple) -> str:
    if not isinstance(value, str) or value not in choices:
        shown = repr(value[:40]) if isinstance(value, str) else _kind(value)
        raise ConfigError(path, f"must be one of {', '.join(choices)}, not {shown}")
    return value


def _tcp_port(value: Any, path: str) -> int:
    return _int_in(value, path, 1, 65535, "a TCP port number")


def _switch_port(value: Any, path: str) -> PortRef:
    if isinstance(value, str) and value.strip():
        # isdigit() alone is true for non-ASCII digits too ("²", "٣"), which int()
        # rejects or silently converts.
        if value.isascii() and value.isdigit():
            return PortRef(number=_int_in(int(value), path, 1, OFPP_MAX - 1, "a switch port"))
        return PortRef(name=value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        return PortRef(number=_int_in(value, path, 1, OFPP_MAX - 1, "a switch port number"))
    raise ConfigError(path, f"must be a switch port number or interface name, got {value!r}")


def _mac(value: Any, path: str, required: bool = False) -> Optional[str]:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not MAC_RE.fullmatch(value):
        raise ConfigError(path, f"must be a MAC address like 00:00:00:00:00:0a, got {value!r}")
    return value.lower()


def _dpid(value: Any, path: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value.replace(":", ""), 16)
        except ValueError:
            raise ConfigError(path, f"must be an integer or a hex datapath id, got {value!r}") from None
    return _int_in(value, path, 0, 2**64 - 1, "a datapath id")


SENTINEL_URL_RE = re.compile(r"^redis\+sentinel://(?:[^@/]*@)?([^/@]+)/([A-Za-z0-9_.-]+)(?:/([0-9]+))?$")


def _redis_url(value: Any, path: str) -> str:
    if not isinstance(value, str) or not re.match(r"^(unix|redis|rediss)://.+", value) and \
            not SENTINEL_URL_RE.match(value):
        raise ConfigError(path, "must be a unix://, redis://, rediss:// or "
                                "redis+sentinel://[:password@]host:port[,host:port...]/master[/db] URL")
    if value.startswith("redis+sentinel://"):
        for host in SENTINEL_URL_RE.match(value).group(1).split(","):
            if not re.match(r"^[^:,]+:[0-9]{1,5}$", host):
                raise ConfigError(path, f"sentinel {host!r} is not host:port")
    return value


def _redis(value: Any, path: str) -> str:
    """``redis:`` as a URL, or as a Sentinel set: ``sentinels: [host:port, ...]`` and
    ``master: name`` (one URL either way: redis+sentinel://h:p,h:p/name)."""
    value = value or {}
    _mapping(value, path, set(), {"url", "sentinels", "master"})
    if "sentinels" not in value and "master" not in value:
        return _redis_url(value.get("url", DEFAULT_REDIS_URL), path + ".url")
    if "url" in value:
        raise ConfigError(path, "give either url or sentinels + master, not both")
    sentinels, master = value.get("sentinels"), value.get("master")
    if not isinstance(sentinels, list) or not sentinels or not all(isinstance(h, str) for h in sentinels):
        raise ConfigError(path + ".sentinels", "must be a non-empty list of host:port")
    if not isinstance(master, str):
        raise ConfigError(path + ".master", "must be the name the sentinels monitor")
    return _redis_url(f"redis+sentinel://{','.join(sentinels)}/{master}", path + ".sentinels")


def _primary(value: Any, path: str) -> Primary:
    # the MAC is required: the backup's answers leave with it after a failover, and a
    # failover is no time to find out it is missing
    _mapping(value, path, {"port", "mac"}, set())
    return Primary(port=_switch_port(value["port"], path + ".port"),
                   mac=_mac(value["mac"], path + ".mac", required=True))


def _backup(value: Any, path: str) -> Backup:
    _mapping(value, path, {"name", "address", "data_port", "mirror_port", "mac"}, set())
    backup = Backup(
        name=_name(value["name"], path + ".name"),
        address=_ipv4(value["address"], path + ".address"),
        data_port=_switch_port(value["data_port"], path + ".data_port"),
        mirror_port=_switch_port(value["mirror_port"], path + ".mirror_port"),
        mac=_mac(value["mac"], path + ".mac", required=True),
    )
    if backup.mirror_port == backup.data_port:
        raise ConfigError(path + ".mirror_port", "must differ from data_port: the mirror iface carries no IP traffic")
    return backup


def _service(value: Any, path: str) -> Service:
    _mapping(value, path, {"name", "address", "port", "primary", "backups"}, {"divergence"})
    backups_raw = value["backups"]
    if not isinstance(backups_raw, list) or not backups_raw:
        raise ConfigError(path + ".backups", "must be a non-empty list of backups")
    service = Service(
        name=_name(value["name"], path + ".name"),
        address=_ipv4(value["address"], path + ".address"),
        port=_tcp_port(value["port"], path + ".port"),
        primary=_primary(value["primary"], path + ".primary"),
        backups=tuple(_backup(b, f"{path}.backups[{i}]") for i, b in enumerate(backups_raw)),
        divergence=_choice(value.get("divergence", "strict"), path + ".divergence", DIVERGENCE_MODES),
    )
    _check_service_ports(service, path)
    return service


def _check_service_ports(service: Service, path: str) -> None:
    seen = {service.primary.port: path + ".primary.port"}
    for i, backup in enumerate(service.backups):
        for attr in ("data_port", "mirror_port"):
            ref = getattr(backup, attr)
            here = f"{path}.backups[{i}].{attr}"
            if ref in seen:
                raise ConfigError(here, f"switch port {ref} is already used by {seen[ref]}")
            seen[ref] = here
        if backup.address == service.address:
            raise ConfigError(f"{path}.backups[{i}].address", "must differ from the service address")
        for k, other in enumerate(service.backups[:i]):
            if other.name == backup.name:
                raise ConfigError(f"{path}.backups[{i}].name", f"duplicate backup name {backup.name!r} "
                                                              f"(also backups[{k}])")
            if other.address == backup.address:
                raise ConfigError(f"{path}.backups[{i}].address", f"{backup.address} is already backups[{k}]'s")


def _float_in(value: Any, path: str, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(path, f"must be {what} ({low}..{high}), got {value!r}")
    return float(value)


def _probe(value: Any, path: str) -> Optional[Probe]:
    if value is None:
        return None
    _mapping(value, path, {"address"}, {"mac", "interval", "misses", "refusals", "link_confirm"})
    return Probe(
        address=_ipv4(value["address"], path + ".address"),
        mac=_mac(value.get("mac", Probe.mac), path + ".mac"),
        interval=_float_in(value.get("interval", Probe.interval), path + ".interval", 0.005, 60.0, "seconds"),
        misses=_int_in(value.get("misses", Probe.misses), path + ".misses", 1, 100, "a count"),
        refusals=_int_in(value.get("refusals", Probe.refusals), path + ".refusals", 1, 10, "a count"),
        link_confirm=_float_in(value.get("link_confirm", Probe.link_confirm), path + ".link_confirm", 0.0, 10.0,
                               "seconds"),
    )


def parse(data: Any, source: str = "<memory>") -> Config:
    """Validate an already-decoded YAML document."""
    _mapping(data, "", {"services"}, {"switch", "redis", "probe"})
    switch = data.get("switch") or {}
    _mapping(switch, "switch", set(), {"dpid"})
    services_raw = data["services"]
    if not isinstance(services_raw, list) or not services_raw:
        raise ConfigError("services", "must be a non-empty list of services")
    services = tuple(_service(s, f"services[{i}]") for i, s in enumerate(services_raw))
    _check_unique(services)
    probe = _probe(data.get("probe"), "probe")
    if probe is not None:
        for i, svc in enumerate(services):
            if probe.address in {svc.address} | {b.address for b in svc.backups}:
                raise ConfigError("probe.address", f"{probe.address} is used by services[{i}]; pick a free address")
    return Config(
        services=services,
        dpid=_dpid(switch.get("dpid"), "switch.dpid"),
        redis_url=_redis(data.get("redis"), "redis"),
        source=source,
        probe=probe,
    )


def parse_service(data: Any, path: str = "service") -> Service:
    """Validate one service mapping (a REST body, say); field paths start at ``path``."""
    return _service(data, path)


def with_service(conf: Config, service: Service) -> Config:
    """conf with ``service`` added, or replacing the one of the same name; validated as
    a whole (unique names, addresses and cookies) so nothing is half-applied."""
    services = [s for s in conf.services if s.name != service.name] + [service]
    _check_unique(tuple(services))
    return dataclasses.replace(conf, services=tuple(services))


def without_service(conf: Config, name: str) -> Config:
    return dataclasses.replace(conf, services=tuple(s for s in conf.services if s.name != name))


def _check_unique(services: tuple) -> None:
    names, keys, cookies = {}, {}, {}
    for i, svc in enumerate(services):
        if svc.name in names:
            raise ConfigError(f"services[{i}].name",
                              f"duplicate service name {svc.name!r} (also services[{names[svc.name]}])")
        if svc.key in keys:
            raise ConfigError(f"services[{i}].port", f"{svc.key} is already protected by services[{keys[svc.key]}]")
        if svc.cookie_id in cookies:
            raise ConfigError(
                f"services[{i}].name",
                f"{svc.name!r} hashes to the same flow cookie as services[{cookies[svc.cookie_id]}]; rename one",
            )
        names[svc.name] = keys[svc.key] = cookies[svc.cookie_id] = i
    _check_port_roles(services)


# What a switch port is to a service. One port may play the same role for several
# services (one primary host, one backup host) but never two roles: a mirror port
# that is another service's primary or data port would copy that service's traffic
# out of it, and its drop flow would cut the other service off.
_ROLES = {"primary.port": "primary port", "data_port": "backup data port", "mirror_port": "backup mirror port"}


def _check_port_roles(services: tuple) -> None:
    roles = {}   # PortRef -> (role, where)
    for i, svc in enumerate(services):
        uses = [(svc.primary.port, "primary.port", f"services[{i}].primary.port")]
        uses += [(getattr(b, attr), attr, f"services[{i}].backups[{k}].{attr}")
                 for k, b in enumerate(svc.backups) for attr in ("data_port", "mirror_port")]
        for ref, role, here in uses:
            other = roles.setdefault(ref, (role, here))
            if other[0] != role:
                raise ConfigError(here, f"switch port {ref} is the {_ROLES[other[0]]} of {other[1].split('.')[0]} "
                                        f"({other[1]}); one port cannot be both")


def load(path: Union[str, os.PathLike]) -> Config:
    """Read and validate a YAML file; every failure is a ConfigError."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError("", f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError("", f"{path} is not valid YAML: {e}") from None
    if data is None:
        raise ConfigError("", f"{path} is empty")
    try:
        return parse(data, source=str(path))
    except ConfigError as e:
        raise ConfigError(e.field, f"{e.problem} (in {path})") from None


def redact_url(url: str) -> str:
    """A URL fit for a log line, an error or an open read: the password in its user
    part (everything up to the last '@': a password may hold '@' or '/') and the
    value of any query parameter that may carry a secret (redis-py takes
    ``?password=`` for unix sockets) replaced by '***'. The one redaction for every
    place a Redis URL can appear."""
    url = str(url)
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    if "@" in rest:
        user, _, after = rest.rpartition("@")
        name, colon, _ = user.partition(":")
        rest = (f"{name}:***" if colon else "***") + "@" + after
    rest = _QUERY_PARAM.sub(_redact_param, rest)
    return f"{head}{sep}{rest}"


_QUERY_PARAM = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")
_SECRET_NAME = re.compile(r"pass|pwd|auth|token|secret|key", re.I)


def _redact_param(m) -> str:
    # the name as the client library will read it (percent-decoded): %70assword is password
    secret = _SECRET_NAME.search(urllib.parse.unquote_plus(m.group(2)))
    return f"{m.group(1)}{m.group(2)}={'***' if secret else m.group(3)}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__

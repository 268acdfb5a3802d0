"""The topology model: hosts, links, addresses, routes, MPTCP settings, as frozen dataclasses.

The same model is built from TOML files (see `topology_file.py`) or directly in Python. It says *what* a lab is;
backends decide *how* to build it. Validation lives here so both ways of building get the same checks.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ENDPOINT_FLAGS = ("signal", "subflow", "backup", "fullmesh")
PathManager = Literal["kernel", "userspace"]


@dataclass(frozen=True, slots=True)
class Direction:
    """Shaping of one direction of a link. None/0 means 'not shaped'."""

    rate_bps: int | None = None
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    queue_packets: int = 1000
    reorder: float = 0.0

    @property
    def shaped(self) -> bool:
        """True when this direction needs any emulation at all."""
        return bool(self.rate_bps or self.delay_s or self.jitter_s or self.loss or self.reorder)


@dataclass(frozen=True, slots=True)
class LinkEnd:
    """One end of a link: the host, its interface name there, and the addresses on that interface."""

    host: str
    ifname: str
    addresses: tuple[IPInterface, ...] = ()


@dataclass(frozen=True, slots=True)
class Link:
    """A point-to-point link between two hosts, shaped per direction."""

    name: str
    a: LinkEnd
    b: LinkEnd
    a_to_b: Direction = Direction()
    b_to_a: Direction = Direction()
    mtu: int = 1500

    def end(self, host: str) -> LinkEnd:
        """The end of this link on `host`."""
        if self.a.host == host:
            return self.a
        if self.b.host == host:
            return self.b
        raise KeyError(host)

    def peer(self, host: str) -> LinkEnd:
        """The end of this link opposite `host`."""
        return self.b if self.a.host == host else self.a

    def direction_from(self, host: str) -> Direction:
        """The shaping of traffic sent by `host` over this link."""
        return self.a_to_b if self.a.host == host else self.b_to_a


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An MPTCP endpoint (`ip mptcp endpoint add ADDR [dev DEV] [id N] [port P] FLAGS`)."""

    address: IPAddress
    flags: frozenset[str] = frozenset({"subflow"})
    dev: str | None = None
    id: int | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class MptcpSettings:
    """Per-host MPTCP configuration."""

    enabled: bool = True
    path_manager: PathManager = "kernel"
    scheduler: str | None = None
    subflows: int | None = None
    add_addr_accepted: int | None = None
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """A static route; `to` is a prefix or 'default'."""

    to: str
    via: IPAddress | None = None
    dev: str | None = None
    metric: int | None = None


DEFAULT_SYSCTLS: dict[str, str] = {
    # The kernel's own default here is BBR; the lab measures with the most common default, CUBIC.
    "net.ipv4.tcp_congestion_control": "cubic",
    # Room for 1 Gbit/s x 100 ms without the socket buffer being the limit.
    "net.ipv4.tcp_rmem": "4096 131072 33554432",
    "net.ipv4.tcp_wmem": "4096 131072 33554432",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}


@dataclass(frozen=True, slots=True)
class Host:
    """A lab host: a namespace, a VM or a remote machine, depending on the backend."""

    name: str
    mptcp: MptcpSettings = MptcpSettings()
    sysctls: dict[str, str] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    forwarding: bool = False
    policy_routing: bool | None = None  # None: automatic, on for hosts with more than one link
    ssh: str | None = None  # for the SSH backend: user@host


@dataclass(frozen=True, slots=True)
class Topology:
    """A whole lab: hosts joined by links."""

    name: str
    hosts: tuple[Host, ...]
    links: tuple[Link, ...]
    description: str = ""
    source: str | None = None  # file it came from, for messages

    def host(self, name: str) -> Host:
        """The host called `name`."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def links_of(self, host: str) -> list[Link]:
        """Links with one end on `host`, in topology order."""
        return [link for link in self.links if host in (link.a.host, link.b.host)]

    def link(self, name: str) -> Link:
        """The link called `name`."""
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(name)

    def addresses_of(self, host: str) -> Iterator[tuple[str, IPInterface]]:
        """(ifname, address) for every address of `host`."""
        for link in self.links_of(host):
            end = link.end(host)
            for address in end.addresses:
                yield end.ifname, address

    def with_link(self, name: str, **changes: object) -> Topology:
        """A copy with link `name` changed, e.g. `with_link("path1", a_to_b=Direction(rate_bps=10**7))`."""
        links = tuple(dataclasses.replace(lk, **changes) if lk.name == name else lk for lk in self.links)  # type: ignore[arg-type]
        return dataclasses.replace(self, links=links)

    def with_host(self, name: str, **changes: object) -> Topology:
        """A copy with host `name` changed."""
        hosts = tuple(dataclasses.replace(h, **changes) if h.name == name else h for h in self.hosts)  # type: ignore[arg-type]
        return dataclasses.replace(self, hosts=hosts)


class ModelError(ValueError):
    """A semantic error in a topology; `path` is the field path, e.g. ('links', 0, 'a', 'host')."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def field_path_text(path: tuple[str | int, ...]) -> str:
    """('links', 0, 'rate') -> 'links[0].rate'."""
    text = ""
    for part in path:
        if isinstance(part, str) and not (part.isascii() and part.isprintable() and len(part) <= 40):
            part = ascii(part[:40])  # a hostile key must not put control characters into a message
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def validate(topology: Topology) -> None:
    """Check names, numbers, addresses, routes and MPTCP settings; raise ModelError naming the offending field.

    The checks live in `model_checks.py` (limits, kernel name rules, linear time); this is the stable entry point.
    """
    from mptcpkit.lab.model_checks import validate_topology

    validate_topology(topology)

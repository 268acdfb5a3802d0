"""Validation of a Topology before anything is created: names, numbers, addresses, routes, MPTCP settings.

Rule 1: everything the kernel would refuse, or that would reach outside the lab, is refused here, with the field
path of the first mistake (the file loader adds file:line). Backends may assume a validated topology.
Rule 2: sizes are capped (LIMITS below, documented in docs/topology.md) and every check is linear or n log n in
the size of the topology, so a hostile file is refused in milliseconds.
Rule 3: checks that need the target kernel (schedulers, path managers, congestion controls, sysctls that
exist) are not here but in `kernel_checks.py`, run at `lab up` before the first namespace is created.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from mptcpkit.lab.model import (
    ENDPOINT_FLAGS,
    Direction,
    Host,
    IPAddress,
    IPInterface,
    Link,
    ModelError,
    Topology,
)
from mptcpkit.lab.sysctl_rules import sysctl_key_problem, sysctl_value_problem

# -- limits (docs/topology.md, "Limits") --------------------------------------------------------------------
MAX_HOSTS = 1024
MAX_LINKS = 4096
MAX_ENDPOINTS = 64  # per host; the kernel's id space is 1..255
MAX_ROUTES = 256  # per host
MAX_SYSCTLS = 256  # per host
MAX_ADDRESSES = 64  # per link end
MAX_HOST_NAME = 20  # mkl-<id>-<host> stays a short namespace name
MAX_LINK_NAME = 64
MAX_TOPOLOGY_NAME = 100
MAX_DESCRIPTION = 10_000
MAX_MPTCP_LIMIT = 8  # subflows / add_addr_accepted: MPTCP_PM_ADDR_MAX
MAX_RATE_BPS = 32 * 2**30 * 8 - 1  # tbf's limit, as in emulation.shape.LinkShape
MAX_DELAY_S = 60.0
MAX_QUEUE_PACKETS = 100_000
MIN_MTU, MIN_MTU_IPV6, MAX_MTU = 68, 1280, 65535
MAX_METRIC = 2**32 - 1
IFNAMSIZ = 16  # the kernel's buffer, including the terminating NUL: names have at most 15 characters

_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_LINK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# ASCII subset of what dev_valid_name() accepts, without '%' (the kernel treats it as a name template)
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+=-]*")
_SCHEDULER = re.compile(r"[A-Za-z0-9_-]{1,15}")
_SSH_TARGET = re.compile(r"[A-Za-z0-9_.@:\[\]%-]+")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]*")
_RESERVED_IFNAMES = {"lo"}  # every namespace has it already


def host_name_problem(name: object) -> str | None:
    """Why `name` cannot be a host name (it becomes part of a namespace name), or None."""
    if not isinstance(name, str) or not _HOST_NAME.fullmatch(name) or len(name) > MAX_HOST_NAME:
        return (
            f"host names are 1..{MAX_HOST_NAME} ASCII letters, digits, '-' or '_', starting with a letter "
            f"or digit (got {_shown(name)})"
        )
    return None


def ifname_problem(name: object) -> str | None:
    """Why `name` cannot be a Linux interface name, or None (the kernel's dev_valid_name rules, ASCII only)."""
    if not isinstance(name, str) or not name:
        return "an interface name is a non-empty string"
    if len(name) >= IFNAMSIZ:
        return f"interface name {_shown(name)} is longer than {IFNAMSIZ - 1} characters"
    if name in _RESERVED_IFNAMES:
        return f"interface name '{name}' is reserved (every host already has a loopback 'lo')"
    if not _IFNAME.fullmatch(name):
        return (
            f"invalid interface name {_shown(name)}: use ASCII letters, digits and '_', '.', '-', '@', '+', '=' "
            "(no '/', ':', '%' or spaces; not '.' or '..')"
        )
    return None


def validate_topology(topology: Topology) -> None:
    """Check everything that does not need the target kernel; raise ModelError at the first mistake."""
    _check_sizes(topology)
    if not isinstance(topology.name, str) or not topology.name or len(topology.name) > MAX_TOPOLOGY_NAME:
        raise ModelError(("name",), f"a topology name has 1..{MAX_TOPOLOGY_NAME} characters")
    if not _PRINTABLE.fullmatch(topology.name):
        raise ModelError(("name",), "a topology name has no control characters")
    if len(topology.description) > MAX_DESCRIPTION:
        raise ModelError(("description",), f"description is longer than {MAX_DESCRIPTION} characters")
    names: set[str] = set()
    for host in topology.hosts:
        problem = host_name_problem(host.name)
        if problem:
            raise ModelError(("hosts", host.name), problem)
        if host.name in names:
            raise ModelError(("hosts", host.name), f"host '{host.name}' is defined twice")
        names.add(host.name)
    # Links per host, in topology order, computed once (Topology.links_of is linear per call).
    links_of: dict[str, list[tuple[int, Link]]] = {name: [] for name in names}
    link_names: set[str] = set()
    owner: dict[IPAddress, str] = {}
    for li, link in enumerate(topology.links):
        _check_link(li, link, names, link_names, owner)
        links_of[link.a.host].append((li, link))
        links_of[link.b.host].append((li, link))
    _check_subnets(topology.links)
    for host in topology.hosts:
        _check_host(host, links_of[host.name])


def _check_sizes(topology: Topology) -> None:
    if not topology.hosts:
        raise ModelError(("hosts",), "a topology needs at least one host")
    if len(topology.hosts) > MAX_HOSTS:
        raise ModelError(("hosts",), f"{len(topology.hosts)} hosts; at most {MAX_HOSTS} are supported")
    if len(topology.links) > MAX_LINKS:
        raise ModelError(("links",), f"{len(topology.links)} links; at most {MAX_LINKS} are supported")


def _check_link(
    li: int, link: Link, names: set[str], link_names: set[str], owner: dict[IPAddress, str]
) -> None:
    if (
        not isinstance(link.name, str)
        or not _LINK_NAME.fullmatch(link.name)
        or len(link.name) > MAX_LINK_NAME
    ):
        raise ModelError(
            ("links", li, "name"),
            f"link names are 1..{MAX_LINK_NAME} ASCII letters, digits, '-', '_' or '.' (got {_shown(link.name)})",
        )
    if link.name in link_names:
        raise ModelError(("links", li, "name"), f"link name '{link.name}' is used twice")
    link_names.add(link.name)
    _check_int(("links", li, "mtu"), link.mtu, MIN_MTU, MAX_MTU, "MTU")
    has_v6 = any(a.version == 6 for a in (*link.a.addresses, *link.b.addresses))
    if has_v6 and link.mtu < MIN_MTU_IPV6:
        raise ModelError(
            ("links", li, "mtu"), f"IPv6 needs an MTU of at least {MIN_MTU_IPV6}, got {link.mtu}"
        )
    for side, end in (("a", link.a), ("b", link.b)):
        if end.host not in names:
            raise ModelError(
                ("links", li, side, "host"),
                f"unknown host {_shown(end.host)} (hosts are: {_list(sorted(names))})",
            )
        problem = ifname_problem(end.ifname)
        if problem:
            raise ModelError(("links", li, side, "ifname"), problem)
        if len(end.addresses) > MAX_ADDRESSES:
            raise ModelError(("links", li, side, "addresses"), f"at most {MAX_ADDRESSES} addresses per end")
        for ai, address in enumerate(end.addresses):
            if not isinstance(address, IPInterface):
                raise ModelError(("links", li, side, "addresses", ai), "not an address with prefix")
            if address.ip in owner:
                raise ModelError(
                    ("links", li, side, "addresses"),
                    f"address {address.ip} is already used by {owner[address.ip]}",
                )
            owner[address.ip] = end.host
    if link.a.host == link.b.host:
        raise ModelError(("links", li, "b", "host"), "a link must join two different hosts")
    for dname, direction in (("a_to_b", link.a_to_b), ("b_to_a", link.b_to_a)):
        _check_direction(("links", li, dname), direction)


def _check_direction(path: tuple[str | int, ...], d: Direction) -> None:
    if d.rate_bps is not None:
        if isinstance(d.rate_bps, bool) or not isinstance(d.rate_bps, int) or d.rate_bps <= 0:
            raise ModelError((*path, "rate"), f"rate must be a positive number of bit/s, got {d.rate_bps!r}")
        if d.rate_bps > MAX_RATE_BPS:
            raise ModelError(
                (*path, "rate"),
                f"rate {d.rate_bps} bit/s is above the shaper's limit of {MAX_RATE_BPS} bit/s; "
                "leave the link unshaped instead",
            )
    for field, value in (("delay", d.delay_s), ("jitter", d.jitter_s)):
        if not _real(value) or not 0 <= value <= MAX_DELAY_S:
            raise ModelError(
                (*path, field), f"{field} must be between 0 and {MAX_DELAY_S:g} s, got {value!r}"
            )
    for field, value in (("loss", d.loss), ("reorder", d.reorder)):
        if not _real(value) or not 0 <= value <= 1:
            raise ModelError((*path, field), f"must be between 0% and 100%, got {value!r}")
    if d.jitter_s > d.delay_s:
        raise ModelError((*path, "jitter"), "jitter must not exceed delay (delay +/- jitter >= 0)")
    if isinstance(d.queue_packets, bool) or not isinstance(d.queue_packets, int) or d.queue_packets < 1:
        raise ModelError((*path, "queue"), "queue must hold at least 1 packet")
    if d.queue_packets > MAX_QUEUE_PACKETS:
        raise ModelError((*path, "queue"), f"queue must hold at most {MAX_QUEUE_PACKETS} packets")


def _check_subnets(links: Iterable[Link]) -> None:
    """Refuse subnets of different links that overlap (a route could not tell the links apart).

    CIDR networks either nest or are disjoint, so checking every prefix of each network against the networks
    seen so far (shortest first) finds all overlaps: O(n x address bits).
    """
    nets: dict[tuple[int, int, int], tuple[int, str]] = {}
    entries = []
    for li, link in enumerate(links):
        for side, end in (("a", link.a), ("b", link.b)):
            for address in end.addresses:
                network = address.network
                if not network.is_link_local:  # fe80::/64 on every link is how IPv6 works
                    entries.append((network.prefixlen, li, side, network))
    entries.sort(key=lambda e: e[0])
    for prefixlen, li, side, network in entries:
        bits = network.max_prefixlen
        value = int(network.network_address)
        for p in range(prefixlen + 1):
            seen = nets.get((network.version, p, value >> (bits - p)))
            if seen is not None and seen[0] != li:
                raise ModelError(
                    ("links", li, side, "addresses"),
                    f"subnet {network} overlaps {seen[1]} of link {seen[0]}; each link needs its own subnet",
                )
        nets.setdefault((network.version, prefixlen, value >> (bits - prefixlen)), (li, str(network)))


def _check_host(host: Host, links: list[tuple[int, Link]]) -> None:
    base: tuple[str | int, ...] = ("hosts", host.name)
    ifnames: dict[str, list[IPInterface]] = {}
    for _, link in links:
        end = link.end(host.name)
        if end.ifname in ifnames:
            raise ModelError(base, f"interface name '{end.ifname}' is used by two links of '{host.name}'")
        ifnames[end.ifname] = list(end.addresses)
    if host.ssh is not None and (
        not isinstance(host.ssh, str) or not _SSH_TARGET.fullmatch(host.ssh) or host.ssh.startswith("-")
    ):
        raise ModelError(
            (*base, "ssh"), "ssh is a target such as user@host (no spaces, not starting with '-')"
        )
    if len(host.sysctls) > MAX_SYSCTLS:
        raise ModelError((*base, "sysctls"), f"at most {MAX_SYSCTLS} sysctls per host")
    small_mtu = {link.end(host.name).ifname: link.mtu for _, link in links if link.mtu < MIN_MTU_IPV6}
    for key, value in host.sysctls.items():
        problem = sysctl_key_problem(key) or sysctl_value_problem(value)
        if problem:
            raise ModelError((*base, "sysctls", key), problem)
        parts = key.split(".")
        if (
            parts[:2] == ["net", "ipv6"]
            and len(parts) > 4
            and parts[2] in ("conf", "neigh")
            and parts[3] in small_mtu
        ):
            raise ModelError(
                (*base, "sysctls", key),
                f"interface '{parts[3]}' has MTU {small_mtu[parts[3]]} < {MIN_MTU_IPV6}, so the kernel turns IPv6 off "
                "there and this sysctl does not exist",
            )
    _check_routes(host, ifnames)
    _check_mptcp(host, ifnames)


def _check_routes(host: Host, ifnames: dict[str, list[IPInterface]]) -> None:
    import ipaddress

    if len(host.routes) > MAX_ROUTES:
        raise ModelError(("hosts", host.name, "routes"), f"at most {MAX_ROUTES} routes per host")
    seen: set[tuple[str, int, int]] = set()
    for ri, route in enumerate(host.routes):
        where = ("hosts", host.name, "routes", ri)
        if route.dev is not None and route.dev not in ifnames:
            raise ModelError((*where, "dev"), f"'{host.name}' has no interface {_shown(route.dev)}")
        if route.metric is not None:
            _check_int((*where, "metric"), route.metric, 0, MAX_METRIC, "metric")
        family = None
        if route.to != "default":
            try:
                network = ipaddress.ip_network(route.to, strict=False)
            except (TypeError, ValueError):
                raise ModelError((*where, "to"), f'{_shown(route.to)} is not a prefix or "default"') from None
            family = network.version
            if int(ipaddress.ip_interface(route.to).ip) != int(network.network_address):
                raise ModelError(
                    (*where, "to"),
                    f"{route.to} has host bits set (the kernel refuses it); did you mean {network}?",
                )
        if route.via is not None:
            if family is not None and route.via.version != family:
                raise ModelError(
                    (*where, "via"), f"gateway {route.via} is not of the same family as {route.to}"
                )
            candidates = (
                ifnames[route.dev] if route.dev is not None else [a for v in ifnames.values() for a in v]
            )
            if any(route.via == a.ip for a in candidates):
                raise ModelError(
                    (*where, "via"), f"gateway {route.via} is an address of '{host.name}' itself"
                )
            if not any(a.version == route.via.version and route.via in a.network for a in candidates):
                on = f"interface '{route.dev}'" if route.dev else f"any link of '{host.name}'"
                raise ModelError(
                    (*where, "via"), f"gateway {route.via} is not reachable: it is in no subnet of {on}"
                )
        elif route.dev is None:
            raise ModelError(where, "a route needs 'via' or 'dev'")
        key = (route.to, family or (route.via.version if route.via else 0), route.metric or 0)
        if key in seen:
            raise ModelError((*where, "to"), f"route to {route.to} is given twice with the same metric")
        seen.add(key)


def _check_mptcp(host: Host, ifnames: dict[str, list[IPInterface]]) -> None:
    mptcp = host.mptcp
    base = ("hosts", host.name, "mptcp")
    if mptcp.path_manager not in ("kernel", "userspace"):
        raise ModelError((*base, "path_manager"), "must be 'kernel' or 'userspace'")
    if mptcp.scheduler is not None and (
        not isinstance(mptcp.scheduler, str) or not _SCHEDULER.fullmatch(mptcp.scheduler)
    ):
        raise ModelError((*base, "scheduler"), "a scheduler name is 1..15 ASCII letters, digits, '_' or '-'")
    for key, value in (("subflows", mptcp.subflows), ("add_addr_accepted", mptcp.add_addr_accepted)):
        if value is not None:
            _check_int((*base, "limits", key), value, 0, MAX_MPTCP_LIMIT, "")
    if len(mptcp.endpoints) > MAX_ENDPOINTS:
        raise ModelError((*base, "endpoints"), f"at most {MAX_ENDPOINTS} endpoints per host")
    own = {a.ip: name for name, addresses in ifnames.items() for a in addresses}
    ids: set[int] = set()
    addresses: set[IPAddress] = set()
    for ei, endpoint in enumerate(mptcp.endpoints):
        where = (*base, "endpoints", ei)
        unknown = endpoint.flags - set(ENDPOINT_FLAGS)
        if unknown:
            raise ModelError(
                (*where, "flags"), f"unknown flag(s) {sorted(unknown)}; valid: {', '.join(ENDPOINT_FLAGS)}"
            )
        if {"signal", "fullmesh"} <= endpoint.flags:
            raise ModelError(
                (*where, "flags"), "'signal' and 'fullmesh' cannot be combined (the kernel refuses)"
            )
        if endpoint.address not in own:
            raise ModelError(
                (*where, "address"), f"{endpoint.address} is not an address of host '{host.name}'"
            )
        if endpoint.address in addresses:
            raise ModelError((*where, "address"), f"two endpoints use {endpoint.address}")
        addresses.add(endpoint.address)
        if endpoint.dev is not None and endpoint.dev not in ifnames:
            raise ModelError((*where, "dev"), f"'{host.name}' has no interface {_shown(endpoint.dev)}")
        if endpoint.id is not None:
            _check_int((*where, "id"), endpoint.id, 1, 255, "endpoint id")
            if endpoint.id in ids:
                raise ModelError((*where, "id"), f"endpoint id {endpoint.id} is used twice on '{host.name}'")
            ids.add(endpoint.id)
        if endpoint.port is not None:
            _check_int((*where, "port"), endpoint.port, 1, 65535, "port")
            if "signal" not in endpoint.flags or "subflow" in endpoint.flags:
                raise ModelError(
                    (*where, "port"), "a port needs the 'signal' flag and not 'subflow' (the kernel refuses)"
                )


def _check_int(path: tuple[str | int, ...], value: object, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelError(path, f"{what} must be within {low}..{high}, got {value!r}".lstrip())


def _real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: object) -> str:
    """A value for a message: quoted, ASCII-escaped and shortened, so no message carries control characters."""
    text = ascii(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _list(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 10 else ", ".join(names[:10]) + f", ... ({len(names)} in all)"

"""One pure plan per topology: what every host gets, whatever backend builds it.

Rule 1: every number a backend sets (addresses, routing tables, rule preferences, sysctls, limits, endpoint
ids, tbf burst, queue limits) is decided here, once. Backends only *render* the plan: the namespace backend as
netlink calls, the SSH and multi-VM backends as `ip`/`tc`/`sysctl` commands.
Rule 2: nothing here does I/O or reads the clock; `plan_lab(topology)` is a function of the topology alone.
Rule 3: `facts(plan)` is the normalized form backends are compared by: a sorted list of (host, kind, fields).
Each renderer has a reader that turns its output back into facts; a test checks they all equal `facts(plan)`.

Policy routing (hosts with more than one link, unless `policy_routing` says otherwise): rule
`100: lookup main suppress_prefixlength 0` (connected and specific routes first, never main's default), then
`200+i: from <address on link i> lookup 100+i`; table `100+i` holds link i's subnet and a default route via the
peer's address of the same family. So each subflow leaves through the link its source address belongs to.

Shaping numbers (see docs/emulation.md): the tbf bucket holds 1 ms of tokens (at least two full frames) and
its limit is `queue_packets` full frames; netem's limit counts the delay line too, so it is `queue_packets` plus
the packets the link carries during delay + jitter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mptcpkit.lab.emulation.shape import LinkShape, TbfParams, netem_limit, tbf_params
from mptcpkit.lab.kernel_checks import per_device_keys
from mptcpkit.lab.model import DEFAULT_SYSCTLS, Direction, IPInterface, Topology

TABLE_MAIN = 254
TABLE_BASE = 100
RULE_PREF_MAIN = 100
RULE_PREF_SOURCE = 200
FIRST_ENDPOINT_ID = 1

Family = Literal[4, 6]
FactFields = tuple[tuple[str, str], ...]
Fact = tuple[str, str, FactFields]


@dataclass(frozen=True, slots=True)
class PlannedAddress:
    """An address on one of the host's lab interfaces."""

    ifname: str
    address: IPInterface


@dataclass(frozen=True, slots=True)
class PlannedRoute:
    """A route; `dst` is a prefix (`0.0.0.0/0` / `::/0` for default routes)."""

    family: Family
    dst: str
    table: int = TABLE_MAIN
    gateway: str | None = None
    dev: str | None = None
    metric: int | None = None


@dataclass(frozen=True, slots=True)
class PlannedRule:
    """A policy routing rule: `from src lookup table` or `lookup main suppress_prefixlength N`."""

    family: Family
    priority: int
    table: int
    src: str | None = None
    suppress_prefixlength: int | None = None


@dataclass(frozen=True, slots=True)
class PlannedEndpoint:
    """An MPTCP endpoint with its id fixed (explicit, or the lowest free one, as the kernel would pick)."""

    address: str
    id: int
    dev: str
    flags: tuple[str, ...]
    port: int | None = None


@dataclass(frozen=True, slots=True)
class PlannedLink:
    """One lab interface of a host."""

    link: str
    ifname: str
    mtu: int


@dataclass(frozen=True, slots=True)
class PlannedShaping:
    """The emulation of one link direction: traffic `sender` -> `receiver`, leaving the sender by `dev`."""

    link: str
    index: int
    direction: Literal["a_to_b", "b_to_a"]
    sender: str
    dev: str
    mtu: int
    shape: LinkShape
    tbf: TbfParams | None
    netem_limit: int

    @property
    def shaped(self) -> bool:
        return self.shape.shaped


@dataclass(frozen=True, slots=True)
class HostPlan:
    """Everything one host gets. `sysctls` excludes the path manager, whose key depends on the kernel."""

    name: str
    links: tuple[PlannedLink, ...]
    sysctls: tuple[tuple[str, str], ...]
    path_manager: str
    scheduler: str | None
    addresses: tuple[PlannedAddress, ...]
    routes: tuple[PlannedRoute, ...]
    rules: tuple[PlannedRule, ...]
    limits: tuple[int | None, int | None] | None  # (subflows, add_addr_accepted); None: leave them
    endpoints: tuple[PlannedEndpoint, ...]
    mptcp_enabled: bool = True
    device_sysctls: tuple[tuple[str, str], ...] = ()  # keys naming a lab interface: written once it exists

    @property
    def policy_tables(self) -> list[int]:
        return sorted({r.table for r in self.rules if r.table != TABLE_MAIN})


@dataclass(frozen=True, slots=True)
class LabPlan:
    """The plan of a whole topology."""

    topology: str
    hosts: tuple[HostPlan, ...]
    shaping: tuple[PlannedShaping, ...] = field(default=())

    def host(self, name: str) -> HostPlan:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def shaping_from(self, host: str) -> list[PlannedShaping]:
        """Directions sent by `host` (what a backend shaping at the sender's egress sets up)."""
        return [s for s in self.shaping if s.sender == host]


def to_shape(direction: Direction) -> LinkShape:
    """The emulation layer's LinkShape for one model direction."""
    return LinkShape(
        rate_bps=direction.rate_bps,
        delay_s=direction.delay_s,
        jitter_s=direction.jitter_s,
        loss=direction.loss,
        queue_packets=direction.queue_packets,
        reorder=direction.reorder,
    )


def host_sysctls(topology: Topology, name: str) -> dict[str, str]:
    """The sysctls a host gets, in the order they are written (the user's own last, so they win)."""
    spec = topology.host(name)
    values = dict(DEFAULT_SYSCTLS)
    values["net.mptcp.enabled"] = "1" if spec.mptcp.enabled else "0"
    if spec.forwarding:
        values["net.ipv4.ip_forward"] = "1"
        values["net.ipv6.conf.all.forwarding"] = "1"
    # Source-routed subflows arrive on the "other" interface: strict reverse-path filtering would drop them.
    values["net.ipv4.conf.all.rp_filter"] = "0"
    values["net.ipv4.conf.default.rp_filter"] = "0"
    values.update(spec.sysctls)
    return values


def _family(version: int) -> Family:
    return 4 if version == 4 else 6


def _default(family: Family) -> str:
    return "0.0.0.0/0" if family == 4 else "::/0"


def _static_routes(topology: Topology, name: str) -> list[PlannedRoute]:
    routes = []
    for route in topology.host(name).routes:
        via = route.via
        if route.to == "default":
            family: Family = _family(via.version) if via is not None else 4
            dst = _default(family)
        else:
            family = 6 if ":" in route.to else 4
            dst = route.to
        routes.append(
            PlannedRoute(family, dst, gateway=str(via) if via else None, dev=route.dev, metric=route.metric)
        )
    return routes


def _policy(topology: Topology, name: str) -> tuple[list[PlannedRoute], list[PlannedRule]]:
    spec = topology.host(name)
    links = topology.links_of(name)
    policy = spec.policy_routing if spec.policy_routing is not None else len(links) > 1
    if not policy:
        return [], []
    routes: list[PlannedRoute] = []
    rules: list[PlannedRule] = []
    families = sorted({_family(a.version) for _, a in topology.addresses_of(name)})
    for family in families:
        rules.append(PlannedRule(family, RULE_PREF_MAIN, TABLE_MAIN, suppress_prefixlength=0))
    for index, link in enumerate(links):
        end, peer = link.end(name), link.peer(name)
        table = TABLE_BASE + index
        for address in end.addresses:
            family = _family(address.version)
            routes.append(PlannedRoute(family, str(address.network), table=table, dev=end.ifname))
            gateway = next((p.ip for p in peer.addresses if p.version == address.version), None)
            if gateway is not None:
                routes.append(PlannedRoute(family, _default(family), table, str(gateway), end.ifname))
            rules.append(PlannedRule(family, RULE_PREF_SOURCE + index, table, src=str(address.ip)))
    return routes, rules


def _endpoints(topology: Topology, name: str) -> list[PlannedEndpoint]:
    mptcp = topology.host(name).mptcp
    owner = {addr.ip: ifname for ifname, addr in topology.addresses_of(name)}
    taken = {e.id for e in mptcp.endpoints if e.id is not None}
    next_id = FIRST_ENDPOINT_ID
    planned = []
    for endpoint in mptcp.endpoints:
        eid = endpoint.id
        if eid is None:
            while next_id in taken:
                next_id += 1
            eid = next_id
            taken.add(eid)
        dev = endpoint.dev or owner.get(endpoint.address, "")
        planned.append(
            PlannedEndpoint(str(endpoint.address), eid, dev, tuple(sorted(endpoint.flags)), endpoint.port)
        )
    return planned


def plan_host(topology: Topology, name: str) -> HostPlan:
    """The plan of one host (see the rules at the top of this module)."""
    spec = topology.host(name)
    mptcp = spec.mptcp
    routes, rules = _policy(topology, name)
    limits = None
    if mptcp.enabled and (mptcp.subflows is not None or mptcp.add_addr_accepted is not None):
        limits = (mptcp.subflows, mptcp.add_addr_accepted)
    sysctls = host_sysctls(topology, name)
    on_devices = per_device_keys(topology, name)
    return HostPlan(
        name=name,
        links=tuple(
            PlannedLink(link.name, link.end(name).ifname, link.mtu) for link in topology.links_of(name)
        ),
        sysctls=tuple((k, v) for k, v in sysctls.items() if k not in on_devices),
        device_sysctls=tuple((k, v) for k, v in sysctls.items() if k in on_devices),
        path_manager=mptcp.path_manager,
        scheduler=mptcp.scheduler,
        addresses=tuple(PlannedAddress(ifname, a) for ifname, a in topology.addresses_of(name)),
        routes=tuple(_static_routes(topology, name) + routes),
        rules=tuple(rules),
        limits=limits,
        endpoints=tuple(_endpoints(topology, name)) if mptcp.enabled else (),
        mptcp_enabled=mptcp.enabled,
    )


def plan_lab(topology: Topology) -> LabPlan:
    """The plan of every host and every link direction of `topology`."""
    shaping = []
    for index, link in enumerate(topology.links):
        for direction, sender, model in (("a_to_b", link.a, link.a_to_b), ("b_to_a", link.b, link.b_to_a)):
            shape = to_shape(model)
            shaping.append(
                PlannedShaping(
                    link=link.name,
                    index=index,
                    direction=direction,  # type: ignore[arg-type]
                    sender=sender.host,
                    dev=sender.ifname,
                    mtu=link.mtu,
                    shape=shape,
                    tbf=tbf_params(shape, link.mtu),
                    netem_limit=netem_limit(shape, link.mtu),
                )
            )
    return LabPlan(
        topology=topology.name,
        hosts=tuple(plan_host(topology, h.name) for h in topology.hosts),
        shaping=tuple(shaping),
    )


# --- facts: the normalized form every renderer's output is read back into -----------------------------------


def fact(host: str, kind: str, **fields: object) -> Fact:
    """One normalized fact; None fields are left out, everything else compared as text."""
    return host, kind, tuple(sorted((k, str(v)) for k, v in fields.items() if v is not None))


def route_fact(host: str, route: PlannedRoute) -> Fact:
    return fact(
        host,
        "route",
        family=route.family,
        dst=route.dst,
        table=route.table,
        gateway=route.gateway,
        dev=route.dev,
        metric=route.metric,
    )


def rule_fact(host: str, rule: PlannedRule) -> Fact:
    return fact(
        host,
        "rule",
        family=rule.family,
        priority=rule.priority,
        table=rule.table,
        src=rule.src,
        suppress_prefixlength=rule.suppress_prefixlength,
    )


def shaping_fact(host: str, dev: str, shaping: PlannedShaping, *, delay_line: bool) -> Fact:
    """A shaped direction as a backend sets it: tbf numbers for rate-only, netem numbers for a delay line."""
    shape = shaping.shape
    if not delay_line:
        assert shaping.tbf is not None
        return fact(
            host, "tbf", dev=dev, rate=shaping.tbf.rate_bps, burst=shaping.tbf.burst_bytes,
            limit=shaping.tbf.limit_bytes,
        )  # fmt: skip
    return fact(
        host,
        "netem",
        dev=dev,
        limit=shaping.netem_limit,
        delay_us=round(shape.delay_s * 1e6),
        jitter_us=round(shape.jitter_s * 1e6) or None,
        loss=f"{shape.loss:.6f}" if shape.loss else None,
        reorder=f"{shape.reorder:.6f}" if shape.reorder else None,
        rate=shape.rate_bps,
    )


def host_facts(host: HostPlan) -> list[Fact]:
    """The facts of one host plan (shaping excluded: where it happens is the backend's business)."""
    out = [fact(host.name, "sysctl", key=k, value=v) for k, v in host.sysctls + host.device_sysctls]
    out.append(fact(host.name, "path_manager", value=host.path_manager))
    if host.scheduler:
        out.append(fact(host.name, "scheduler", value=host.scheduler))
    out += [fact(host.name, "mtu", dev=lk.ifname, mtu=lk.mtu) for lk in host.links]
    out += [
        fact(host.name, "address", dev=a.ifname, address=a.address.with_prefixlen) for a in host.addresses
    ]
    out += [route_fact(host.name, r) for r in host.routes]
    out += [rule_fact(host.name, r) for r in host.rules]
    if host.limits is not None:
        out.append(fact(host.name, "limits", subflows=host.limits[0], add_addr_accepted=host.limits[1]))
    out += [
        fact(
            host.name, "endpoint", address=e.address, id=e.id, dev=e.dev, port=e.port, flags=",".join(e.flags)
        )
        for e in host.endpoints
    ]
    return sorted(out)


def facts(plan: LabPlan) -> list[Fact]:
    """Every host fact of the plan, sorted."""
    return sorted(f for host in plan.hosts for f in host_facts(host))


def shaping_facts(plan: LabPlan, *, delay_line: bool | None = None) -> list[Fact]:
    """The shaped directions, keyed by sender and egress device (`delay_line` None: netem iff needed)."""
    return sorted(
        shaping_fact(
            s.sender, s.dev, s, delay_line=s.shape.needs_delay_line if delay_line is None else delay_line
        )
        for s in plan.shaping
        if s.shaped
    )

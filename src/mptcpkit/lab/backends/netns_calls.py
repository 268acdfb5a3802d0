"""The namespace backend's rendering of a host plan: netlink calls, as data.

Pure: `netlink_calls(host)` lists what `netns.py` sends (pyroute2 keyword arguments; interfaces by name, looked
up when applied), and `read_calls` turns such a list back into the plan's facts, so a test can check that the
namespace backend sets exactly what `lab/plan.py` says, without root.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from mptcpkit.lab.emulation.shape import netem_limit, tbf_params
from mptcpkit.lab.plan import (
    Fact,
    Family,
    HostPlan,
    LabPlan,
    PlannedRoute,
    PlannedRule,
    fact,
    route_fact,
    rule_fact,
    shaping_fact,
)

IFA_F_NODAD = 0x02
AF_INET, AF_INET6 = 2, 10


@dataclass(frozen=True)
class NetlinkCall:
    """One step: `kind` is sysctl, path_manager, scheduler, veth, addr, up, route, rule, limits or endpoint."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)


def _af(family: int) -> int:
    return AF_INET if family == 4 else AF_INET6


def route_args(route: PlannedRoute) -> dict[str, Any]:
    """pyroute2 `ipr.route("add", ...)` arguments; `ifname` is replaced by `oif` when applied."""
    args: dict[str, Any] = {"family": _af(route.family), "dst": route.dst, "table": route.table}
    if route.gateway is not None:
        args["gateway"] = route.gateway
    if route.dev is not None:
        args["ifname"] = route.dev
    if route.metric is not None:
        args["priority"] = route.metric
    return args


def rule_args(rule: PlannedRule) -> dict[str, Any]:
    """pyroute2 `ipr.rule("add", ...)` arguments."""
    args: dict[str, Any] = {"family": _af(rule.family), "priority": rule.priority, "table": rule.table}
    if rule.src is not None:
        args["src"] = rule.src
        args["src_len"] = 32 if rule.family == 4 else 128
    if rule.suppress_prefixlength is not None:
        args["suppress_prefixlen"] = rule.suppress_prefixlength
    return args


def netlink_calls(host: HostPlan) -> list[NetlinkCall]:
    """Every call that builds `host`, in order: sysctls before interfaces (accept_dad applies to new ones)."""
    calls = [NetlinkCall("sysctl", {"key": k, "value": v}) for k, v in host.sysctls]
    if host.path_manager != "kernel":
        calls.append(NetlinkCall("path_manager", {"value": host.path_manager}))
    if host.scheduler:
        calls.append(NetlinkCall("scheduler", {"value": host.scheduler}))
    calls += [NetlinkCall("veth", {"link": lk.link, "ifname": lk.ifname, "mtu": lk.mtu}) for lk in host.links]
    for planned in host.addresses:
        address = planned.address
        calls.append(
            NetlinkCall(
                "addr",
                {
                    "ifname": planned.ifname,
                    "address": str(address.ip),
                    "prefixlen": address.network.prefixlen,
                    "flags": IFA_F_NODAD if address.version == 6 else 0,
                },
            )
        )
    calls += [NetlinkCall("up", {"ifname": lk.ifname}) for lk in host.links]
    calls += [NetlinkCall("sysctl", {"key": k, "value": v}) for k, v in host.device_sysctls]
    calls += [NetlinkCall("route", route_args(r)) for r in host.routes]
    calls += [NetlinkCall("rule", rule_args(r)) for r in host.rules]
    if host.limits is not None:
        calls.append(NetlinkCall("limits", {"subflows": host.limits[0], "add_addr_accepted": host.limits[1]}))
    for e in host.endpoints:
        calls.append(
            NetlinkCall(
                "endpoint",
                {"address": e.address, "id": e.id, "flags": list(e.flags), "dev": e.dev, "port": e.port},
            )
        )
    return calls


def read_calls(host: str, calls: list[NetlinkCall]) -> list[Fact]:
    """The facts a list of calls establishes (the inverse of `netlink_calls`, for tests)."""
    out: list[Fact] = []
    path_manager = "kernel"
    for call in calls:
        a = call.args
        if call.kind == "sysctl":
            out.append(fact(host, "sysctl", key=a["key"], value=a["value"]))
        elif call.kind == "path_manager":
            path_manager = a["value"]
        elif call.kind == "scheduler":
            out.append(fact(host, "scheduler", value=a["value"]))
        elif call.kind == "veth":
            out.append(fact(host, "mtu", dev=a["ifname"], mtu=a["mtu"]))
        elif call.kind == "addr":
            out.append(fact(host, "address", dev=a["ifname"], address=f"{a['address']}/{a['prefixlen']}"))
        elif call.kind == "route":
            family: Family = 4 if a["family"] == AF_INET else 6
            route = PlannedRoute(
                family, a["dst"], a["table"], a.get("gateway"), a.get("ifname"), a.get("priority")
            )
            out.append(route_fact(host, route))
        elif call.kind == "rule":
            family = 4 if a["family"] == AF_INET else 6
            rule = PlannedRule(family, a["priority"], a["table"], a.get("src"), a.get("suppress_prefixlen"))
            out.append(rule_fact(host, rule))
        elif call.kind == "limits":
            out.append(fact(host, "limits", **a))
        elif call.kind == "endpoint":
            flags = ",".join(a["flags"])
            out.append(
                fact(
                    host,
                    "endpoint",
                    address=a["address"],
                    id=a["id"],
                    dev=a["dev"],
                    port=a["port"],
                    flags=flags,
                )
            )
    out.append(fact(host, "path_manager", value=path_manager))
    return sorted(out)


def wire_calls(plan: LabPlan) -> list[NetlinkCall]:
    """One `build_wire` per link: the wire namespace's ends `l<i>a`/`l<i>b` and the two planned directions."""
    calls = []
    for ab in plan.shaping:
        if ab.direction != "a_to_b":
            continue
        ba = next(s for s in plan.shaping if s.link == ab.link and s.direction == "b_to_a")
        calls.append(
            NetlinkCall(
                "wire", {"a_if": f"l{ab.index}a", "b_if": f"l{ab.index}b", "a_to_b": ab, "b_to_a": ba}
            )
        )
    return calls


def read_wire_calls(calls: list[NetlinkCall], *, delay_line: bool | None = None) -> list[Fact]:
    """The shaping facts of `wire_calls` (the wire sizes tbf and netem with shape.py, from the link's MTU)."""
    out = []
    for call in calls:
        for planned in (call.args["a_to_b"], call.args["b_to_a"]):
            shape = planned.shape
            if shape.shaped:
                line = shape.needs_delay_line if delay_line is None else delay_line
                mtu = planned.mtu
                numbers = replace(planned, tbf=tbf_params(shape, mtu), netem_limit=netem_limit(shape, mtu))
                out.append(shaping_fact(planned.sender, planned.dev, numbers, delay_line=line))
    return sorted(out)

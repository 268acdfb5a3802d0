"""A spec against its topology: the overrides applied, and every cross reference checked.

Pure: used by the loader (file mistakes get file:line) and by `build` for specs made in Python, so both ways of
writing a scenario get the same checks.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from mptcpkit.lab import model
from mptcpkit.lab.model import Direction, ModelError, Topology
from mptcpkit.lab.scenarios.registry import expectation_kinds, metric_kinds
from mptcpkit.lab.scenarios.spec import (
    ACTION_KINDS,
    MODES,
    ActionSpec,
    FlowSpec,
    HostOverride,
    LinkOverride,
    ScenarioSpec,
    ShapeOverride,
)
from mptcpkit.lab.scenarios.values import did_you_mean
from mptcpkit.lab.sysctl_rules import sysctl_key_problem

MAX_PARALLEL = 128
MAX_SECONDS = 86400.0
MAX_BYTES = 1 << 40
MAX_COUNT = 1_000_000_000
MAX_RR_BYTES = 64 << 20
_SHAPE_FIELDS = {
    "rate_bps": "rate_bps",
    "delay_s": "delay_s",
    "jitter_s": "jitter_s",
    "loss": "loss",
    "queue_packets": "queue_packets",
    "reorder": "reorder",
}


def reshape(direction: Direction, over: ShapeOverride) -> Direction:
    """`direction` with the override's non-None values."""
    changes = {k: getattr(over, k) for k in _SHAPE_FIELDS if getattr(over, k) is not None}
    return dataclasses.replace(direction, **changes)


def apply_overrides(
    base: Topology, links: tuple[LinkOverride, ...], hosts: tuple[HostOverride, ...]
) -> Topology:
    """The topology a scenario runs on. Raises ModelError when the result is invalid (e.g. jitter > delay)."""
    topo = base
    for over in links:
        if over.name not in [lk.name for lk in base.links]:
            names = [lk.name for lk in base.links]
            raise ModelError(
                ("links", over.name), f"no link '{over.name}' in the topology{did_you_mean(over.name, names)}"
            )
        link = topo.link(over.name)
        topo = topo.with_link(
            over.name,
            a_to_b=reshape(link.a_to_b, over.a_to_b),
            b_to_a=reshape(link.b_to_a, over.b_to_a),
            mtu=over.mtu if over.mtu is not None else link.mtu,
        )
    for host_over in hosts:
        if host_over.name not in [h.name for h in base.hosts]:
            names = [h.name for h in base.hosts]
            raise ModelError(
                ("hosts", host_over.name),
                f"no host '{host_over.name}' in the topology{did_you_mean(host_over.name, names)}",
            )
        host = topo.host(host_over.name)
        mptcp = host.mptcp
        changes: dict[str, Any] = {}
        for key in ("scheduler", "path_manager", "subflows", "add_addr_accepted", "endpoints"):
            value = getattr(host_over, key)
            if value is not None:
                changes[key] = value
        topo = topo.with_host(
            host_over.name,
            sysctls={**host.sysctls, **host_over.sysctls},
            mptcp=dataclasses.replace(mptcp, **changes),
        )
    try:
        model.validate(topo)
    except ModelError as exc:
        path = exc.path
        if len(path) >= 2 and path[0] == "links" and isinstance(path[1], int):
            path = ("links", topo.links[path[1]].name, *path[2:])
        raise ModelError(path, exc.message) from None
    return topo


def _addresses(topology: Topology, host: str) -> set[str]:
    return {str(a.ip) for _if, a in topology.addresses_of(host)}


def _check_flow(i: int, flow: FlowSpec, topology: Topology, hosts: list[str]) -> None:
    at = ("flows", i)
    for role in ("client", "server"):
        name = getattr(flow, role)
        if name not in hosts:
            raise ModelError((*at, role), f"unknown host '{name}'{did_you_mean(name, hosts)}")
    if flow.client == flow.server:
        raise ModelError((*at, "server"), "client and server must be different hosts")
    if flow.mode not in MODES:
        raise ModelError((*at, "mode"), f"unknown mode '{flow.mode}'{did_you_mean(flow.mode, MODES)}")
    for key, host in (("to", flow.server), ("local", flow.client)):
        value = getattr(flow, key)
        if value is None:
            continue
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ModelError((*at, key), f"'{value}' is not an IPv4 or IPv6 address") from None
        if value not in _addresses(topology, host):
            raise ModelError((*at, key), f"{value} is not an address of host '{host}'")
    bulk = flow.mode.startswith("bulk-")
    if flow.size_bytes is not None and flow.duration_s is not None:
        raise ModelError((*at, "duration"), "give either size or duration, not both")
    if bulk and flow.size_bytes is None and flow.duration_s is None:
        raise ModelError((*at, "size"), f"a {flow.mode} flow needs a size or a duration")
    if flow.mode in ("rr", "connect") and flow.count is None and flow.duration_s is None:
        raise ModelError((*at, "count"), f"a {flow.mode} flow needs a count or a duration")
    if flow.mode == "stream":
        if flow.rate_bps is None or flow.message_bytes is None:
            raise ModelError((*at, "rate"), "a stream flow needs a rate and a message size")
        if flow.duration_s is None and flow.size_bytes is None:
            raise ModelError((*at, "duration"), "a stream flow needs a duration or a size")
    elif flow.rate_bps is not None or flow.message_bytes is not None:
        raise ModelError((*at, "rate"), 'rate and message go with mode = "stream"')
    if flow.engine == "iperf3":
        if not bulk:
            raise ModelError((*at, "engine"), f"iperf3 runs bulk transfers only, not {flow.mode}")
        for key in ("local", "server_proto"):
            if getattr(flow, key) is not None:
                raise ModelError((*at, key), f"'{key}' needs engine = \"mptcpkit\"")
    if not 1 <= flow.parallel <= MAX_PARALLEL:
        raise ModelError((*at, "parallel"), f"parallel must be within 1..{MAX_PARALLEL}")
    for key, value, limit in (
        ("duration", flow.duration_s, MAX_SECONDS),
        ("start", flow.start_s, MAX_SECONDS),
        ("size", flow.size_bytes, MAX_BYTES),
        ("count", flow.count, MAX_COUNT),
        ("message", flow.message_bytes, MAX_BYTES),
    ):
        if value is not None and value > limit:
            raise ModelError((*at, key), f"{key} {value:g} is larger than the limit {limit:g}")
    if max(flow.rr_size) > MAX_RR_BYTES:
        raise ModelError((*at, "rr_size"), f"request/response sizes are at most {MAX_RR_BYTES} bytes")
    if flow.parallel > 1 and not bulk:
        raise ModelError((*at, "parallel"), "parallel connections go with bulk modes")
    if flow.start_s < 0:
        raise ModelError((*at, "start"), "start must not be negative")


def _flow_end(flows: tuple[FlowSpec, ...]) -> float | None:
    """When the last flow ends, if every flow runs for a fixed time (else unknown: None)."""
    ends = []
    for flow in flows:
        if flow.duration_s is None:
            return None
        ends.append(flow.start_s + flow.duration_s)
    return max(ends)


def _check_action(
    i: int,
    action: ActionSpec,
    spec: ScenarioSpec,
    topology: Topology,
    endpoints: dict[str, set[str]],
) -> None:
    at = ("actions", i)
    hosts = [h.name for h in topology.hosts]
    links = [lk.name for lk in topology.links]
    flows = [f.name for f in spec.flows]
    if action.kind not in ACTION_KINDS:
        raise ModelError(
            (*at, "do"), f"unknown action '{action.kind}'{did_you_mean(action.kind, ACTION_KINDS)}"
        )
    if not 0 <= action.at_s <= MAX_SECONDS:
        raise ModelError((*at, "at"), f"an action time is within 0..{MAX_SECONDS:g} s")
    end = _flow_end(spec.flows)
    if end is not None and action.at_s >= end:
        raise ModelError((*at, "at"), f"at {action.at_s:g}s is after the flows end ({end:g}s)")
    needs: dict[str, tuple[str, ...]] = {
        "link-down": ("link",),
        "link-up": ("link",),
        "set-link": ("link",),
        "add-endpoint": ("host", "address"),
        "remove-endpoint": ("host", "address"),
        "set-backup": ("host", "address"),
        "clear-backup": ("host", "address"),
        "close-subflow": ("flow", "link"),
        "set-sysctl": ("host", "key", "value"),
    }
    used = set(needs[action.kind]) | ({"direction"} if action.kind == "set-link" else set())
    used |= {"flags", "dev"} if action.kind == "add-endpoint" else set()
    given = {
        k
        for k in ("link", "host", "address", "flow", "key", "value", "dev")
        if getattr(action, k) is not None
    }
    given |= {"flags"} if action.flags else set()
    given |= {"direction"} if action.direction != "both" else set()
    for key in sorted(given - used):
        raise ModelError((*at, key), f"'{key}' does not apply to do = \"{action.kind}\"")
    if action.kind != "set-link" and not action.shape.is_empty():
        raise ModelError(
            (*at, "do"), f'rate/delay/jitter/loss/queue go with do = "set-link", not {action.kind}'
        )
    for key in needs[action.kind]:
        if getattr(action, key) is None:
            raise ModelError((*at, key), f"do = \"{action.kind}\" needs '{key}'")
    if action.link is not None and action.link not in links:
        raise ModelError((*at, "link"), f"unknown link '{action.link}'{did_you_mean(action.link, links)}")
    if action.host is not None and action.host not in hosts:
        raise ModelError((*at, "host"), f"unknown host '{action.host}'{did_you_mean(action.host, hosts)}")
    if action.flow is not None and action.flow not in flows:
        raise ModelError((*at, "flow"), f"unknown flow '{action.flow}'{did_you_mean(action.flow, flows)}")
    if action.kind == "set-link" and action.shape.is_empty():
        raise ModelError((*at, "do"), "set-link needs at least one of rate, delay, jitter, loss, queue")
    if action.kind == "set-link" and action.link is not None:
        link = topology.link(action.link)
        for name, direction in (("a_to_b", link.a_to_b), ("b_to_a", link.b_to_a)):
            if action.direction in ("both", name):
                new = reshape(direction, action.shape)
                if new.jitter_s > new.delay_s:
                    raise ModelError((*at, "jitter"), "jitter must not exceed delay (delay +/- jitter >= 0)")
    if action.kind == "close-subflow":
        flow = next(f for f in spec.flows if f.name == action.flow)
        if flow.proto != "mptcp":
            raise ModelError((*at, "flow"), f"flow '{flow.name}' is TCP: it has no subflows to close")
        if action.link is not None and flow.client not in (
            topology.link(action.link).a.host,
            topology.link(action.link).b.host,
        ):
            raise ModelError(
                (*at, "link"), f"link '{action.link}' does not touch the flow's client '{flow.client}'"
            )
    if action.kind == "set-sysctl" and action.key is not None:
        problem = sysctl_key_problem(action.key)
        if problem:
            raise ModelError((*at, "key"), problem)
    if action.address is not None and action.host is not None:
        try:
            ipaddress.ip_address(action.address)
        except ValueError:
            raise ModelError((*at, "address"), f"'{action.address}' is not an IPv4 or IPv6 address") from None
        if action.address not in _addresses(topology, action.host):
            raise ModelError((*at, "address"), f"{action.address} is not an address of host '{action.host}'")
        current = endpoints.setdefault(action.host, set())
        if action.kind == "add-endpoint":
            if action.address in current:
                raise ModelError(
                    (*at, "address"), f"{action.address} is already an endpoint of '{action.host}'"
                )
            bad = set(action.flags) - set(model.ENDPOINT_FLAGS)
            if bad:
                raise ModelError(
                    (*at, "flags"), f"unknown flag(s) {sorted(bad)}; valid: {', '.join(model.ENDPOINT_FLAGS)}"
                )
            current.add(action.address)
        elif action.address not in current:
            raise ModelError(
                (*at, "address"), f"{action.address} is not an MPTCP endpoint of '{action.host}' at that time"
            )
        elif action.kind == "remove-endpoint":
            current.discard(action.address)


def check_spec(spec: ScenarioSpec, topology: Topology) -> None:
    """Every cross reference of `spec` against `topology` (already overridden); raises ModelError."""
    if not 0.01 <= spec.interval_s <= 10:
        raise ModelError(("interval",), "the sampling interval is within 10ms..10s")
    if not 0 < spec.timeout_s <= MAX_SECONDS:
        raise ModelError(("timeout",), f"timeout is within 0..{MAX_SECONDS:g} s")
    if len(spec.flows) > 32 or len(spec.actions) > 256 or len(spec.metrics) > 256:
        raise ModelError(("flows",), "at most 32 flows, 256 actions and 256 metrics per scenario")
    hosts = [h.name for h in topology.hosts]
    names: set[str] = set()
    for i, flow in enumerate(spec.flows):
        if flow.name in names:
            raise ModelError(("flows", i, "name"), f"flow name '{flow.name}' is used twice")
        names.add(flow.name)
        _check_flow(i, flow, topology, hosts)
    for host in spec.hosts:
        for key in host.sysctls:
            problem = sysctl_key_problem(key)
            if problem:
                raise ModelError(("hosts", host.name, "sysctls", key), problem)
    endpoints = {h.name: {str(e.address) for e in h.mptcp.endpoints} for h in topology.hosts}
    order = sorted(range(len(spec.actions)), key=lambda i: spec.actions[i].at_s)
    for i in order:
        _check_action(i, spec.actions[i], spec, topology, endpoints)
    flow_names = [f.name for f in spec.flows]
    metric_names: set[str] = set()
    known = metric_kinds()
    for i, metric in enumerate(spec.metrics):
        at = ("metrics", i)
        if metric.name in metric_names:
            raise ModelError((*at, "name"), f"metric name '{metric.name}' is used twice; give each a name")
        metric_names.add(metric.name)
        if metric.kind not in known:
            raise ModelError(
                (*at, "kind"), f"unknown metric kind '{metric.kind}'{did_you_mean(metric.kind, known)}"
            )
        if isinstance(metric.expect, str) and metric.expect not in expectation_kinds():
            raise ModelError((*at, "expect"), f"unknown expectation '{metric.expect}'")
        for key, refs in (("flow", [metric.flow] if metric.flow else []), ("flows", list(metric.flows))):
            for ref in refs:
                if ref not in flow_names:
                    raise ModelError((*at, key), f"unknown flow '{ref}'{did_you_mean(ref, flow_names)}")
        for key in ("action",):
            index = metric.options.get(key)
            if isinstance(index, int) and index >= len(spec.actions):
                raise ModelError(
                    (*at, "options", key), f"action {index} does not exist ({len(spec.actions)} action(s))"
                )
        for key in ("link",):
            link = metric.options.get(key)
            if isinstance(link, str) and link not in [lk.name for lk in topology.links]:
                raise ModelError((*at, "options", key), f"unknown link '{link}'")
        for link in metric.expect_options.get("links", ()):
            if link not in [lk.name for lk in topology.links]:
                raise ModelError((*at, "expect_options", "links"), f"unknown link '{link}'")
    for i, relation in enumerate(spec.relations):
        at = ("relations", i)
        for side in (relation.left, relation.right):
            if side not in metric_names:
                raise ModelError(
                    (*at, "check"), f"no metric '{side}' in this scenario{did_you_mean(side, metric_names)}"
                )
        if relation.name in metric_names:
            raise ModelError((*at, "name"), f"'{relation.name}' is already a metric name")
        metric_names.add(relation.name)
    if not spec.metrics and not spec.relations:
        raise ModelError(("metrics",), 'nothing to measure: add [[metrics]] (e.g. kind = "goodput")')

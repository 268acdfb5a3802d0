"""Scenario files (TOML) -> validated ScenarioSpecs, one per sweep case.

Rule 1: every mistake is one ScenarioError `file:line: field.path: message` (exit 2); unknown keys and names get
a 'did you mean' hint, because a typo such as `rat = "10mbit"` would otherwise silently measure something else.
Rule 2: cross references are checked against the resolved topology (base topology plus this file's changes):
hosts, links, addresses, endpoints, flow names, metric names, action times against flow ends.
Rule 3: the loader never touches a lab; it only reads files (the scenario and the topology it names).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any, cast

from mptcpkit.errors import TopologyError
from mptcpkit.lab import model, topology_file
from mptcpkit.lab.model import Endpoint, ModelError, Topology, field_path_text
from mptcpkit.lab.scenarios import kinds, matrix
from mptcpkit.lab.scenarios.registry import expectation_kinds, metric_kinds, sections
from mptcpkit.lab.scenarios.resolve import apply_overrides, check_spec
from mptcpkit.lab.scenarios.spec import (
    ACTION_KINDS,
    MODES,
    ActionSpec,
    FlowSpec,
    HostOverride,
    LinkOverride,
    MetricSpec,
    RelationSpec,
    RuleSpec,
    ScenarioSpec,
    ShapeOverride,
    TopologyRef,
)
from mptcpkit.lab.scenarios.values import (
    FieldPath,
    ScenarioError,
    Table,
    did_you_mean,
    parse_bool,
    parse_names,
    parse_positive_time,
    parse_rule,
    parse_size,
    parse_time,
    read_text,
    shape_parsers,
)
from mptcpkit.lab.sysctl_rules import sysctl_key_problem
from mptcpkit.lab.toml_lines import index_lines, line_of
from mptcpkit.lab.units import parse_rate

TOP_KEYS = {
    "name",
    "description",
    "tags",
    "topology",
    "interval",
    "timeout",
    "restore",
    "profile",
    "links",
    "hosts",
    "flows",
    "actions",
    "metrics",
    "relations",
    "matrix",
}
_LINK_KEYS = {"a_to_b", "b_to_a", "mtu", *shape_parsers()}
_HOST_KEYS = {"sysctls", "mptcp"}
_MPTCP_KEYS = {"scheduler", "path_manager", "limits", "endpoints"}
_ENDPOINT_KEYS = {"address", "flags", "dev", "id", "port"}
_FLOW_KEYS = {
    "name",
    "proto",
    "server_proto",
    "mode",
    "size",
    "duration",
    "parallel",
    "start",
    "client",
    "server",
    "to",
    "local",
    "engine",
    "rr_size",
    "count",
    "rate",
    "message",
    "join",
    "concurrency",
    "memory",
    "integrity",
}
_ACTION_KEYS = {"at", "do", "link", "direction", "host", "address", "flags", "dev", "flow", "key", "value"}
_ACTION_KEYS |= set(shape_parsers())
_METRIC_KEYS = {"name", "kind", "flow", "flows", "options", "expect", "expect_options", "pass"}
_RELATION_KEYS = {"name", "check"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RELATION = re.compile(
    r"\s*([A-Za-z0-9_.:-]+)\s*(>=|<=)\s*(?:([0-9]+(?:\.[0-9]+)?)\s*\*\s*)?([A-Za-z0-9_.:-]+)\s*"
)
DEFAULT_TOPOLOGY = "two-paths"


def load_scenario_file(path: str | Path, origin: str | None = None) -> list[ScenarioSpec]:
    """A scenario file -> its scenario (or its sweep's cases)."""
    file = Path(path)
    return parse_scenarios(read_text(file), source=str(file), base_dir=file.parent, origin=origin)


def parse_scenarios(
    text: str, source: str = "<scenario>", base_dir: Path | None = None, origin: str | None = None
) -> list[ScenarioSpec]:
    """TOML text -> validated specs (one per sweep case)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML: {exc}", file=source) from None
    except RecursionError:
        raise ScenarioError("not valid TOML: nested too deeply", file=source) from None
    lines = index_lines(text)
    default_name = Path(source).stem if source.endswith(".toml") else "scenario"
    try:
        cases = matrix.expand(data)
        specs = []
        for params, case_data in cases:
            try:
                specs.append(build_spec(case_data, source, base_dir, origin or source, default_name, params))
            except ModelError as exc:
                if params:
                    raise ModelError(
                        exc.path, f"{exc.message} (in case {matrix.case_suffix(params)})"
                    ) from None
                raise
    except ModelError as exc:
        line = line_near(lines, exc.path) or line_of(lines, ("topology",))
        raise ScenarioError(exc.message, file=source, line=line, field=field_path_text(exc.path)) from None
    return specs


def line_near(lines: dict[FieldPath, int], path: FieldPath) -> int | None:
    """The line of `path`; else of its first sub-field (a `[hosts.x.mptcp]` header names `hosts.x`); else of
    the nearest enclosing field."""
    if path in lines:
        return lines[path]
    below = [line for key, line in lines.items() if key[: len(path)] == path and len(key) > len(path)]
    return min(below) if below and path else line_of(lines, path)


def build_spec(
    data: dict[str, Any],
    source: str,
    base_dir: Path | None,
    origin: str,
    default_name: str,
    params: dict[str, Any] | None = None,
) -> ScenarioSpec:
    """One (already matrix-substituted) scenario table -> a checked ScenarioSpec; raises ModelError."""
    extra = set(sections())
    top = Table(data, (), TOP_KEYS | extra)
    name = top.string("name", default_name) or default_name
    if not NAME.fullmatch(name):
        raise ModelError(
            top.at("name"), f"'{name}': scenario names use letters, digits, '-', '_', '.' (at most 64)"
        )
    ref, base = _topology(top, source, base_dir)
    links = tuple(_link_override(top.at("links", n), d) for n, d in _named_tables(top, "links").items())
    hosts = tuple(_host_override(top.at("hosts", n), d) for n, d in _named_tables(top, "hosts").items())
    for override in links:
        if override.name not in {lk.name for lk in base.links}:
            raise ModelError(
                ("links", override.name),
                f"no link '{override.name}' in topology {ref.text()}"
                + did_you_mean(override.name, [lk.name for lk in base.links]),
            )
    for host in hosts:
        if host.name not in {h.name for h in base.hosts}:
            raise ModelError(
                ("hosts", host.name),
                f"no host '{host.name}' in topology {ref.text()}"
                + did_you_mean(host.name, [h.name for h in base.hosts]),
            )
    topology = apply_overrides(base, links, hosts)
    flows = tuple(_flow(top.at("flows", i), d, i) for i, d in enumerate(top.array("flows"))) or (
        FlowSpec(name="flow0", duration_s=3.0),
    )
    actions = tuple(_action(top.at("actions", i), d) for i, d in enumerate(top.array("actions")))
    metrics = tuple(_metric(top.at("metrics", i), d) for i, d in enumerate(top.array("metrics")))
    if not top.has("metrics"):
        metrics = _default_metrics(flows)
    relations = tuple(_relation(top.at("relations", i), d) for i, d in enumerate(top.array("relations")))
    tags = top.parse("tags", parse_names, ())
    parsed_sections = {}
    for key, parse in sections().items():
        if key in data:
            try:
                parsed_sections[key] = parse(data[key])
            except ValueError as exc:
                raise ModelError((key,), str(exc)) from None
    case_params = dict(params or {})
    spec = ScenarioSpec(
        name=name + (matrix.case_suffix(case_params) if case_params else ""),
        topology=ref,
        flows=flows,
        description=top.string("description", "") or "",
        tags=tags,
        links=links,
        hosts=hosts,
        actions=actions,
        metrics=metrics,
        relations=relations,
        interval_s=top.parse("interval", parse_positive_time, 0.1),
        timeout_s=top.parse("timeout", parse_positive_time, 120.0),
        restore=top.parse("restore", parse_bool, True),
        profile=top.parse("profile", parse_bool, False),
        sections=parsed_sections,
        origin=origin,
        sweep=name if case_params else None,
        params=case_params,
    )
    check_spec(spec, topology)
    return spec


def _named_tables(top: Table, key: str) -> dict[str, Any]:
    value = top.data.get(key, {})
    if not isinstance(value, dict):
        raise ModelError(top.at(key), f"expected tables such as [{key}.NAME]")
    return value


def _topology(top: Table, source: str, base_dir: Path | None) -> tuple[TopologyRef, Topology]:
    value = top.data.get("topology", DEFAULT_TOPOLOGY)
    if isinstance(value, dict):
        try:
            inline = topology_file._build(value, source)
            model.validate(inline)
        except ModelError as exc:
            raise ModelError(("topology", *exc.path), exc.message) from None
        return TopologyRef(inline=inline), inline
    if not isinstance(value, str) or not value:
        raise ModelError(("topology",), "expected a built-in topology name, a .toml path or a table")
    if value.endswith(".toml") or "/" in value:
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ModelError(("topology",), f"no such topology file: {path}")
        return TopologyRef(path=str(path)), _load_topology(path)
    names = topology_file.builtin_names()
    if value not in names:
        raise ModelError(("topology",), f"unknown topology '{value}'{did_you_mean(value, names)}")
    return TopologyRef(builtin=value), _load_topology(value)


def _load_topology(ref: str | Path) -> Topology:
    try:
        return topology_file.load_topology(ref)
    except TopologyError as exc:
        raise ModelError(("topology",), f"in the topology: {exc.message}") from None


def _shape(table: Table) -> ShapeOverride:
    p = shape_parsers()
    return ShapeOverride(
        rate_bps=table.parse("rate", p["rate"]),
        delay_s=table.parse("delay", p["delay"]),
        jitter_s=table.parse("jitter", p["jitter"]),
        loss=table.parse("loss", p["loss"]),
        queue_packets=table.parse("queue", p["queue"]),
        reorder=table.parse("reorder", p["reorder"]),
    )


def _merge(base: ShapeOverride, over: ShapeOverride) -> ShapeOverride:
    values = {
        n: getattr(over, n) if getattr(over, n) is not None else getattr(base, n) for n in base.__slots__
    }  # type: ignore[attr-defined]
    return ShapeOverride(**values)


def _link_override(path: FieldPath, data: Any) -> LinkOverride:
    t = Table(data, path, _LINK_KEYS)
    both = _shape(t)
    a_to_b = _merge(both, _shape(t.table("a_to_b", shape_parsers())))
    b_to_a = _merge(both, _shape(t.table("b_to_a", shape_parsers())))
    return LinkOverride(name=str(path[-1]), a_to_b=a_to_b, b_to_a=b_to_a, mtu=t.integer("mtu"))


def _host_override(path: FieldPath, data: Any) -> HostOverride:
    t = Table(data, path, _HOST_KEYS)
    sysctls = {}
    raw = t.data.get("sysctls", {})
    if not isinstance(raw, dict):
        raise ModelError(t.at("sysctls"), 'expected a table such as { "net.mptcp.scheduler" = "default" }')
    for key, value in raw.items():
        problem = sysctl_key_problem(key)
        if problem:
            raise ModelError(t.at("sysctls", key), problem)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ModelError(t.at("sysctls", key), "sysctl values are strings or numbers")
        sysctls[key] = str(value)
    m = t.table("mptcp", _MPTCP_KEYS)
    limits = m.table("limits", {"subflows", "add_addr_accepted"})
    pm = m.string("path_manager")
    if pm is not None and pm not in ("kernel", "userspace"):
        raise ModelError(m.at("path_manager"), f"must be 'kernel' or 'userspace', got '{pm}'")
    endpoints = None
    if m.has("endpoints"):
        endpoints = tuple(_endpoint(m.at("endpoints", i), d) for i, d in enumerate(m.array("endpoints")))
    return HostOverride(
        name=str(path[-1]),
        sysctls=sysctls,
        scheduler=m.string("scheduler"),
        path_manager=cast(Any, pm),
        subflows=limits.integer("subflows"),
        add_addr_accepted=limits.integer("add_addr_accepted"),
        endpoints=endpoints,
    )


def _address(path: FieldPath, value: Any) -> model.IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ModelError(path, f"'{value}' is not an IPv4 or IPv6 address") from None


def _endpoint(path: FieldPath, data: Any) -> Endpoint:
    t = Table(data, path, _ENDPOINT_KEYS)
    if not t.has("address"):
        raise ModelError(t.at("address"), "an endpoint needs an address")
    flags = t.parse("flags", parse_names, ("subflow",))
    return Endpoint(
        address=_address(t.at("address"), t.data["address"]),
        flags=frozenset(flags),
        dev=t.string("dev"),
        id=t.integer("id"),
        port=t.integer("port"),
    )


def _choice(t: Table, key: str, choices: tuple[str, ...], default: str) -> str:
    value = t.string(key, default) or default
    if value not in choices:
        raise ModelError(t.at(key), f"unknown {key} '{value}'{did_you_mean(value, choices)}")
    return value


def _flow(path: FieldPath, data: Any, index: int) -> FlowSpec:
    t = Table(data, path, _FLOW_KEYS)
    name = t.string("name", f"flow{index}") or f"flow{index}"
    if not NAME.fullmatch(name):
        raise ModelError(t.at("name"), f"'{name}': flow names use letters, digits, '-', '_', '.'")
    rr = t.data.get("rr_size", [1, 1])
    if (
        not (
            isinstance(rr, list)
            and len(rr) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in rr)
        )
        or min(rr) < 1
    ):
        raise ModelError(t.at("rr_size"), "expected [REQUEST_BYTES, RESPONSE_BYTES], e.g. [1, 1]")
    server_proto = t.string("server_proto")
    if server_proto is not None and server_proto not in ("mptcp", "tcp"):
        raise ModelError(t.at("server_proto"), f"must be 'mptcp' or 'tcp', got '{server_proto}'")
    return FlowSpec(
        name=name,
        client=t.string("client", "client") or "client",
        server=t.string("server", "server") or "server",
        proto=cast(Any, _choice(t, "proto", ("mptcp", "tcp"), "mptcp")),
        server_proto=cast(Any, server_proto),
        mode=_choice(t, "mode", MODES, "bulk-download"),
        size_bytes=t.parse("size", parse_size),
        duration_s=t.parse("duration", parse_positive_time),
        parallel=t.integer("parallel", 1, low=1) or 1,
        start_s=t.parse("start", parse_time, 0.0),
        to=t.string("to"),
        local=t.string("local"),
        engine=cast(Any, _choice(t, "engine", ("mptcpkit", "iperf3"), "mptcpkit")),
        rr_size=(rr[0], rr[1]),
        count=t.integer("count", None, low=1),
        rate_bps=t.parse("rate", parse_rate),
        message_bytes=t.parse("message", parse_size),
        join=t.integer("join", 0, low=0) or 0,
        concurrency=t.integer("concurrency", 1, low=1) or 1,
        memory=bool(t.parse("memory", parse_bool, False)),
        integrity=_choice(t, "integrity", ("sha256", "verify", "none"), "sha256"),
    )


def _action(path: FieldPath, data: Any) -> ActionSpec:
    t = Table(data, path, _ACTION_KEYS)
    if not t.has("at"):
        raise ModelError(t.at("at"), "an action needs a time 'at', e.g. at = \"2s\"")
    if not t.has("do"):
        raise ModelError(t.at("do"), f"an action needs 'do', one of: {', '.join(ACTION_KINDS)}")
    kind = _choice(t, "do", ACTION_KINDS, "")
    direction = _choice(t, "direction", ("both", "a_to_b", "b_to_a"), "both")
    value = t.data.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | float)):
        raise ModelError(t.at("value"), "sysctl values are strings or numbers")
    return ActionSpec(
        at_s=t.parse("at", parse_time),
        kind=kind,
        link=t.string("link"),
        direction=cast(Any, direction),
        shape=_shape(t),
        host=t.string("host"),
        address=t.string("address"),
        flags=t.parse("flags", parse_names, ()),
        dev=t.string("dev"),
        flow=t.string("flow"),
        key=t.string("key"),
        value=None if value is None else str(value),
    )


def _options(t: Table, key: str, allowed: dict[str, Any], what: str) -> dict[str, Any]:
    raw = t.data.get(key, {})
    if not isinstance(raw, dict):
        raise ModelError(t.at(key), "expected a table of options")
    options = {}
    for name, value in raw.items():
        if name not in allowed:
            hint = did_you_mean(name, allowed) if allowed else f"; {what} takes no options"
            raise ModelError(t.at(key, name), f"unknown option '{name}'{hint}")
        try:
            options[name] = allowed[name](value)
        except ValueError as exc:
            raise ModelError(t.at(key, name), str(exc)) from None
    return options


def _metric(path: FieldPath, data: Any) -> MetricSpec:
    t = Table(data, path, _METRIC_KEYS)
    known = metric_kinds()
    if not t.has("kind"):
        raise ModelError(t.at("kind"), f"a metric needs a kind, one of: {', '.join(sorted(known))}")
    kind_name = t.string("kind") or ""
    if kind_name not in known:
        raise ModelError(t.at("kind"), f"unknown metric kind '{kind_name}'{did_you_mean(kind_name, known)}")
    kind = known[kind_name]
    if kind.flows == "one" and t.has("flows"):
        raise ModelError(t.at("flows"), f"kind '{kind_name}' is computed from one flow: use flow = \"NAME\"")
    if kind.flows == "many" and t.has("flow"):
        raise ModelError(t.at("flow"), f"kind '{kind_name}' is computed over flows: use flows = [...]")
    expect: str | float | None = None
    expect_options: dict[str, Any] = {}
    raw_expect = t.data.get("expect")
    if isinstance(raw_expect, str):
        expectations = expectation_kinds()
        if raw_expect not in expectations:
            raise ModelError(
                t.at("expect"), f"unknown expectation '{raw_expect}'{did_you_mean(raw_expect, expectations)}"
            )
        expect = raw_expect
        expect_options = _options(t, "expect_options", dict(expectations[raw_expect].options), raw_expect)
    elif raw_expect is not None:
        if (
            isinstance(raw_expect, bool)
            or not isinstance(raw_expect, int | float)
            or raw_expect != raw_expect
        ):
            raise ModelError(t.at("expect"), "expected an expectation name or a number in the metric's unit")
        expect = float(raw_expect)
    if t.has("expect_options") and not isinstance(raw_expect, str):
        raise ModelError(t.at("expect_options"), "expect_options go with a named expectation")
    rule = None
    if t.has("pass"):
        if expect is None:
            raise ModelError(
                t.at("pass"), "a pass rule compares with 'expect': give expect = NAME or a number"
            )
        op, factor = t.parse("pass", parse_rule)
        rule = RuleSpec(op=op, factor=factor)
    options = _options(t, "options", dict(kind.options), f"kind '{kind_name}'")
    missing = sorted(kind.required - set(options))
    if missing:
        raise ModelError(t.at("options"), f"kind '{kind_name}' needs option(s) {', '.join(missing)}")
    if isinstance(expect, str):
        missing = sorted(expectation_kinds()[expect].required - set(expect_options))
        if missing:
            raise ModelError(t.at("expect_options"), f"expectation '{expect}' needs {', '.join(missing)}")
    return MetricSpec(
        name=t.string("name", kind_name) or kind_name,
        kind=kind_name,
        flow=t.string("flow"),
        flows=t.parse("flows", parse_names, ()),
        options=options,
        expect=expect,
        expect_options=expect_options,
        rule=rule,
    )


def _relation(path: FieldPath, data: Any) -> RelationSpec:
    t = Table(data, path, _RELATION_KEYS)
    text = t.string("check")
    match = _RELATION.fullmatch(text) if text else None
    if match is None:
        raise ModelError(
            t.at("check"),
            "expected 'METRIC >= FACTOR * METRIC', e.g. \"mptcp_goodput >= 0.95 * tcp_goodput\"",
        )
    left, op, factor, right = match.groups()
    default = f"{left}_vs_{right}"
    return RelationSpec(
        name=t.string("name", default) or default,
        left=left,
        op=cast(Any, op),
        factor=float(factor) if factor else 1.0,
        right=right,
    )


def _default_metrics(flows: tuple[FlowSpec, ...]) -> tuple[MetricSpec, ...]:
    """Without [[metrics]]: goodput of a bulk first flow against its limit (informational)."""
    if flows[0].mode.startswith("bulk-"):
        return (MetricSpec(name="goodput", kind="goodput", expect="goodput_limit"),)
    return ()


kinds.ensure_registered()

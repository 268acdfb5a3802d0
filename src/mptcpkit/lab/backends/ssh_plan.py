"""Pure part of the SSH backend: what to change on a machine, how to undo it, how to compare its states.

A bare-metal host is someone's machine: the lab may only add what the topology asks for and must leave the
machine exactly as it found it. So every change is planned as a `Step` with its own undo, the undos run in
reverse order at teardown, and a snapshot of addresses, routes, rules, qdiscs, MPTCP endpoints and limits,
link state and the touched sysctls is compared before and after. Nothing here does I/O: `ssh.py` runs the
commands.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from mptcpkit.errors import LabError, UsageError
from mptcpkit.lab.emulation.shape import LinkShape, netem_args, netem_limit, tbf_params
from mptcpkit.lab.model import Topology
from mptcpkit.lab.plan import (
    TABLE_BASE,
    TABLE_MAIN,
    Fact,
    HostPlan,
    PlannedRoute,
    PlannedRule,
    PlannedShaping,
    fact,
    plan_lab,
    route_fact,
    rule_fact,
)
from mptcpkit.lab.sysctl_rules import require_safe_sysctl

ENDPOINT_ID_BASE = 100  # ids tried when the plan's id is taken on the machine

Argv = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SshTarget:
    """Where a topology host lives: `user@host`, `user@host:port`, `user@[v6addr]:port`."""

    user: str
    host: str
    port: int = 22


def parse_target(text: str) -> SshTarget:
    """Parse the topology's `ssh = "user@host[:port]"` field."""
    user, at, rest = text.rpartition("@")
    if not at or not user or not rest:
        raise UsageError(f"ssh target '{text}' must look like user@host or user@host:port")
    port = 22
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail:
            if not tail.startswith(":") or not tail[1:].isdigit():
                raise UsageError(f"ssh target '{text}': bad port")
            port = int(tail[1:])
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
        if not port_text.isdigit():
            raise UsageError(f"ssh target '{text}': bad port '{port_text}'")
        port = int(port_text)
    else:
        host = rest
    if not 0 < port < 65536:
        raise UsageError(f"ssh target '{text}': port must be within 1..65535")
    return SshTarget(user, host, port)


# --- snapshots ----------------------------------------------------------------------------------------------

SECTIONS = ("link", "addr", "route4", "route6", "rule4", "rule6", "qdisc", "endpoints", "limits", "sysctl")


def snapshot_script(sysctl_keys: Iterable[str]) -> str:
    """One shell script printing every section, so a snapshot is one SSH round trip."""
    keys = " ".join(shlex.quote(k) for k in sorted(set(sysctl_keys)))
    parts = [
        ("link", "ip -j link show"),
        ("addr", "ip -j addr show"),
        ("route4", "ip -j -4 route show table all"),
        ("route6", "ip -j -6 route show table all"),
        ("rule4", "ip -j -4 rule show"),
        ("rule6", "ip -j -6 rule show"),
        ("qdisc", "tc -j qdisc show"),
        ("endpoints", "ip -j mptcp endpoint show 2>/dev/null || echo '[]'"),
        ("limits", "ip mptcp limits show 2>/dev/null"),
        ("sysctl", f'for k in {keys}; do printf \'%s=\' "$k"; sysctl -n "$k" 2>/dev/null || echo; done'),
    ]
    return "\n".join(f"echo '@@{name}'; {command}" for name, command in parts) + "\n"


def split_sections(text: str) -> dict[str, str]:
    """Output of `snapshot_script` -> {section: text}."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("@@") and line[2:] in SECTIONS:
            current = line[2:]
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    missing = [s for s in SECTIONS if s not in sections]
    if missing:
        raise LabError(f"incomplete state snapshot (missing {', '.join(missing)}): is iproute2 installed?")
    return sections


def _json(text: str) -> list[dict[str, Any]]:
    text = text.strip()
    if not text:
        return []
    value = json.loads(text)
    return value if isinstance(value, list) else []


def _stable(entries: Iterable[dict[str, Any]], drop: Iterable[str] = ()) -> list[str]:
    dropped = set(drop)
    return sorted(
        json.dumps({k: v for k, v in e.items() if k not in dropped}, sort_keys=True) for e in entries
    )


def parse_limits(text: str) -> dict[str, int]:
    """`add_addr_accepted 0 subflows 2` -> {"add_addr_accepted": 0, "subflows": 2}."""
    words = text.split()
    return {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2) if words[i + 1].isdigit()}


@dataclass
class Snapshot:
    """The parts of a machine's network state the lab may touch, in a comparable form."""

    links: dict[str, dict[str, Any]]
    addresses: list[str]
    routes: list[str]
    rules: list[str]
    qdiscs: list[dict[str, Any]]
    endpoints: list[dict[str, Any]]
    limits: dict[str, int]
    sysctls: dict[str, str]

    def comparable(self) -> dict[str, Any]:
        """Everything that must be equal before and after a lab (qdisc statistics excluded)."""
        return {
            "links": {n: {"up": v["up"], "mtu": v["mtu"]} for n, v in self.links.items()},
            "addresses": self.addresses,
            "routes": self.routes,
            "rules": self.rules,
            "qdiscs": _stable(self.qdiscs),
            "endpoints": _stable(self.endpoints),
            "limits": self.limits,
            "sysctls": self.sysctls,
        }


def parse_snapshot(text: str) -> Snapshot:
    """Parse the output of `snapshot_script`."""
    s = split_sections(text)
    links = {
        e["ifname"]: {"up": "UP" in e.get("flags", []), "mtu": e.get("mtu"), "index": e.get("ifindex")}
        for e in _json(s["link"])
    }
    addresses = sorted(
        f"{e['ifname']} {a['local']}/{a['prefixlen']}"
        for e in _json(s["addr"])
        for a in e.get("addr_info", [])
        if "local" in a
    )
    routes = _stable(_json(s["route4"]) + _json(s["route6"]), drop=("expires",))
    rules = _stable(_json(s["rule4"]) + _json(s["rule6"]))
    qdiscs = [
        {k: v for k, v in e.items() if k in ("kind", "handle", "dev", "root", "parent", "options")}
        for e in _json(s["qdisc"])
    ]
    sysctls = {}
    for line in s["sysctl"].splitlines():
        key, eq, value = line.partition("=")
        if eq:
            sysctls[key] = " ".join(value.split())
    return Snapshot(
        links, addresses, routes, rules, qdiscs, _json(s["endpoints"]), parse_limits(s["limits"]), sysctls
    )


IMPLICIT_FLAG = 0x10  # MPTCP_PM_ADDR_FLAG_IMPLICIT: endpoint the kernel created itself for a subflow


def implicit_leftovers(before: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[int]:
    """Ids of endpoints the kernel created implicitly during the lab (subflows from addresses that had no
    endpoint): they outlive the connections, so teardown deletes them like its own."""
    old = {json.dumps(e, sort_keys=True) for e in before}
    ids = []
    for e in now:
        flags = int(str(e.get("rawflags", "0")), 16) if "rawflags" in e else 0
        if json.dumps(e, sort_keys=True) not in old and (flags & IMPLICIT_FLAG or e.get("implicit")):
            ids.append(int(e["id"]))
    return ids


def diff_snapshots(before: Snapshot, after: Snapshot) -> list[str]:
    """Human-readable differences (empty when the machine is exactly as before)."""
    a, b = before.comparable(), after.comparable()
    out: list[str] = []
    for key in a:
        if a[key] == b[key]:
            continue
        if isinstance(a[key], list):
            gone = [x for x in a[key] if x not in b[key]]
            new = [x for x in b[key] if x not in a[key]]
            out += [f"{key}: missing {x}" for x in gone] + [f"{key}: left behind {x}" for x in new]
        elif isinstance(a[key], dict):
            for k in sorted(set(a[key]) | set(b[key])):
                if a[key].get(k) != b[key].get(k):
                    out.append(f"{key}: {k} was {a[key].get(k)!r}, now {b[key].get(k)!r}")
        else:
            out.append(f"{key}: was {a[key]!r}, now {b[key]!r}")
    return out


# --- running steps in one round trip ---------------------------------------------------------------------------


def steps_script(commands: list[Argv], *, stop_on_error: bool) -> str:
    """A shell script running `commands` in order, reporting `@@ok I` or `@@fail I message` for each.

    One SSH round trip for a whole plan instead of one per step; with `stop_on_error` (applying) it stops at
    the first failure, so exactly the reported steps are the ones to undo.
    """
    lines = []
    for index, argv in enumerate(commands):
        fail = f"printf '@@fail {index} %s\\n' \"$(printf '%s' \"$out\" | tr '\\n' ' ')\""
        if stop_on_error:
            fail = "{ " + fail + "; exit 1; }"
        lines.append(f"out=$({shlex.join(argv)} 2>&1) && echo '@@ok {index}' || {fail}")
    return "\n".join(lines) + "\n"


def parse_steps_output(text: str) -> tuple[list[int], dict[int, str]]:
    """`steps_script` output -> (indexes that succeeded, {index: error message})."""
    ok: list[int] = []
    failed: dict[int, str] = {}
    for line in text.splitlines():
        if line.startswith("@@ok "):
            ok.append(int(line.split()[1]))
        elif line.startswith("@@fail "):
            _, index, *message = line.split(" ", 2)
            failed[int(index)] = (message[0] if message else "").strip()
    return ok, failed


# --- planning -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One change on a machine and the command that undoes it (None: nothing to undo)."""

    what: str
    apply: Argv
    undo: Argv | None


@dataclass
class ChangePlan:
    """The ordered steps for one machine; undone in reverse."""

    host: str
    steps: list[Step] = field(default_factory=list)

    def add(self, what: str, apply: Iterable[str], undo: Iterable[str] | None) -> None:
        self.steps.append(Step(what, tuple(apply), tuple(undo) if undo is not None else None))


PM_KEYS = ("net.mptcp.enabled", "net.mptcp.pm_type", "net.mptcp.path_manager", "net.mptcp.scheduler")


def sysctl_keys(topology: Topology, host: str) -> list[str]:
    """Sysctls the lab may write on `host` (their values are saved first)."""
    planned = plan_lab(topology).host(host)
    keys = {k for k, _ in planned.sysctls + planned.device_sysctls} | set(PM_KEYS)
    keys |= {"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}
    return sorted(keys)


def qdisc_argv(shaping: PlannedShaping, has_netem: bool) -> list[str]:
    """tc command shaping egress of the sender's device: netem when a delay line is needed, else tbf."""
    shape, dev = shaping.shape, shaping.dev
    if shape.needs_delay_line:
        if not has_netem:
            raise LabError(
                f"{dev}: delay/jitter/loss need netem, which this machine's kernel lacks (sch_netem)",
                hint="load sch_netem there, or shape only the rate on bare-metal links",
            )
        argv = ["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem"]
        argv += netem_args(shape, shaping.netem_limit)
        return argv
    tbf = shaping.tbf
    assert tbf is not None
    argv = ["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", f"{tbf.rate_bps}bit"]
    return [*argv, "burst", str(tbf.burst_bytes), "limit", str(tbf.limit_bytes)]


def netem_probe_script(probe: str) -> str:
    """Shell that exits 0 when netem works: add it on a throwaway veth pair `<probe>a/b` (deleted at once)."""
    return (
        f"ip link add {probe}a type veth peer name {probe}b 2>/dev/null || exit 2; "
        f"tc qdisc add dev {probe}a root netem delay 1ms 2>/dev/null; rc=$?; ip link del {probe}a; exit $rc"
    )


def reshape_argv(shaping: PlannedShaping, has_netem: bool) -> list[str]:
    """tc command giving a running lab's direction a new shape (set-link): replace the root qdisc, or delete it
    when the direction becomes a plain cable. `replace` also switches kind (tbf <-> netem) in place."""
    if not shaping.shaped:
        return ["tc", "qdisc", "del", "dev", shaping.dev, "root"]
    argv = qdisc_argv(shaping, has_netem)
    return [*argv[:2], "replace", *argv[3:]]


def reshaped(shaping: PlannedShaping, shape: LinkShape) -> PlannedShaping:
    """`shaping` with a new shape and the plan's numbers (tbf bucket, netem limit) for it."""
    return replace(
        shaping, shape=shape, tbf=tbf_params(shape, shaping.mtu), netem_limit=netem_limit(shape, shaping.mtu)
    )


def route_argv(route: PlannedRoute, table: int) -> list[str]:
    """`ip -4|-6 route add ...` for a planned route (its table possibly moved off one the machine uses)."""
    argv = ["ip", f"-{route.family}", "route", "add", route.dst]
    if route.gateway is not None:
        argv += ["via", route.gateway]
    if route.dev is not None:
        argv += ["dev", route.dev]
    if route.metric is not None:
        argv += ["metric", str(route.metric)]
    return [*argv, "table", str(table)]


def rule_argv(rule: PlannedRule, table: int) -> list[str]:
    argv = ["ip", f"-{rule.family}", "rule", "add", "pref", str(rule.priority)]
    if rule.src is not None:
        argv += ["from", rule.src]
    argv += ["table", str(table)]
    if rule.suppress_prefixlength is not None:
        argv += ["suppress_prefixlength", str(rule.suppress_prefixlength)]
    return argv


def _undo(argv: list[str]) -> list[str]:
    index = argv.index("add")
    return [*argv[:index], "del", *argv[index + 1 :]]


def _table_map(host: HostPlan, before: Snapshot) -> dict[int, int]:
    """Planned policy tables -> tables free on the machine (the plan's own numbers when they are free)."""
    used = {str(json.loads(r).get("table")) for r in before.rules}
    mapping = {TABLE_MAIN: TABLE_MAIN}
    next_free = TABLE_BASE
    for table in host.policy_tables:
        if str(table) not in used:
            mapping[table] = table
            continue
        while str(next_free) in used or next_free in host.policy_tables or next_free in mapping.values():
            next_free += 1
        mapping[table] = next_free
        next_free += 1
    return mapping


def plan_host(topology: Topology, host: str, before: Snapshot, *, has_netem: bool) -> ChangePlan:
    """Every change the lab makes on `host`, rendered from `lab/plan.py` and checked against its state.

    Refuses (LabError) rather than silently overwriting something the machine already has: a missing
    interface, a configured (non-default) root qdisc on a link to shape, an MPTCP endpoint address in use.
    Skips what the machine already has (an address, a sysctl value), so teardown leaves those alone.
    """
    lab = plan_lab(topology)
    planned = lab.host(host)
    plan = ChangePlan(host)
    for link in planned.links:
        if link.ifname not in before.links:
            raise LabError(
                f"{host}: no interface '{link.ifname}' for link '{link.link}' "
                f"(it has: {', '.join(sorted(before.links))})"
            )
    # sysctls first (forwarding, buffers, MPTCP on), restored last
    wanted = dict(planned.sysctls + planned.device_sysctls)  # the machine's interfaces exist already
    if planned.scheduler is not None:
        wanted["net.mptcp.scheduler"] = planned.scheduler
    if before.sysctls.get("net.mptcp.path_manager"):
        wanted["net.mptcp.path_manager"] = planned.path_manager
    else:
        wanted["net.mptcp.pm_type"] = "0" if planned.path_manager == "kernel" else "1"
    user_keys = set(topology.host(host).sysctls)
    for key, value in wanted.items():
        require_safe_sysctl(key, value)
        old = before.sysctls.get(key, "")
        if not old:
            if key in user_keys:
                raise LabError(f"{host}: sysctl {key} does not exist there")
            continue  # e.g. an IPv6 key on a host without IPv6: nothing to set
        if " ".join(value.split()) == old:
            continue
        plan.add(
            f"sysctl {key}={value}",
            ["sysctl", "-q", "-w", f"{key}={value}"],
            ["sysctl", "-q", "-w", f"{key}={old}"],
        )
    # links: MTU, up
    for link in planned.links:
        state = before.links[link.ifname]
        dev = link.ifname
        if state["mtu"] != link.mtu:
            plan.add(
                f"{dev} mtu {link.mtu}",
                ["ip", "link", "set", "dev", dev, "mtu", str(link.mtu)],
                ["ip", "link", "set", "dev", dev, "mtu", str(state["mtu"])],
            )
        if not state["up"]:
            plan.add(
                f"{dev} up",
                ["ip", "link", "set", "dev", dev, "up"],
                ["ip", "link", "set", "dev", dev, "down"],
            )
    # addresses
    existing = set(before.addresses)
    for item in planned.addresses:
        text = f"{item.ifname} {item.address.with_prefixlen}"
        if text in existing:
            continue  # the machine already has it: leave it, and leave it at teardown
        extra = ["nodad"] if item.address.version == 6 else []
        argv = ["ip", "addr", "add", item.address.with_prefixlen, "dev", item.ifname]
        plan.add(f"address {text}", [*argv, *extra], _undo(argv))
    # routes (static ones in main, policy ones in their tables) and rules
    tables = _table_map(planned, before)
    for route in planned.routes:
        argv = route_argv(route, tables[route.table])
        plan.add(f"route {route.dst} table {tables[route.table]}", argv, _undo(argv))
    for rule in planned.rules:
        argv = rule_argv(rule, tables[rule.table])
        plan.add(f"rule pref {rule.priority} table {tables[rule.table]}", argv, _undo(argv))
    # MPTCP limits and endpoints
    if planned.limits is not None:
        old_sub = before.limits.get("subflows", 2)
        old_acc = before.limits.get("add_addr_accepted", 0)
        new_sub = planned.limits[0] if planned.limits[0] is not None else old_sub
        new_acc = planned.limits[1] if planned.limits[1] is not None else old_acc
        if (new_sub, new_acc) != (old_sub, old_acc):
            limits = ["ip", "mptcp", "limits", "set", "subflows"]
            plan.add(
                "mptcp limits",
                [*limits, str(new_sub), "add_addr_accepted", str(new_acc)],
                [*limits, str(old_sub), "add_addr_accepted", str(old_acc)],
            )
    used_ids = {int(e["id"]) for e in before.endpoints if "id" in e}
    used_addrs = {str(ipaddress.ip_address(e["address"])) for e in before.endpoints if "address" in e}
    explicit = {e.address for e in topology.host(host).mptcp.endpoints if e.id is not None}
    next_id = ENDPOINT_ID_BASE
    for endpoint in planned.endpoints:
        if endpoint.address in used_addrs:
            raise LabError(f"{host}: an MPTCP endpoint for {endpoint.address} already exists there")
        eid = endpoint.id
        if eid in used_ids:
            if ipaddress.ip_address(endpoint.address) in explicit:
                raise LabError(f"{host}: MPTCP endpoint id {eid} is already used there")
            while next_id in used_ids:
                next_id += 1
            eid = next_id
        used_ids.add(eid)
        argv = ["ip", "mptcp", "endpoint", "add", endpoint.address]
        if endpoint.dev:
            argv += ["dev", endpoint.dev]
        argv += ["id", str(eid)]
        if endpoint.port is not None:
            argv += ["port", str(endpoint.port)]
        argv += list(endpoint.flags)
        plan.add(f"endpoint {endpoint.address}", argv, ["ip", "mptcp", "endpoint", "delete", "id", str(eid)])
    # shaping, egress of each link end
    roots = {q["dev"]: q for q in before.qdiscs if q.get("root")}
    for shaping in lab.shaping_from(host):
        if not shaping.shaped:
            continue
        root = roots.get(shaping.dev)
        if root is not None and root.get("handle") not in ("0:", None):
            raise LabError(
                f"{host}: {shaping.dev} already has a configured root qdisc "
                f"({root.get('kind')} {root.get('handle')}); the lab would replace it",
                hint=f"remove it (tc qdisc del dev {shaping.dev} root) or use another interface for "
                f"'{shaping.link}'",
            )
        plan.add(
            f"shape {shaping.dev}",
            qdisc_argv(shaping, has_netem),
            ["tc", "qdisc", "del", "dev", shaping.dev, "root"],
        )
    return plan


def read_steps(host: str, steps: Iterable[Argv]) -> list[Fact]:
    """The plan facts a list of applied commands establishes (the inverse of `plan_host`, for tests).

    Only the commands `plan_host` writes are understood; tables and endpoint ids are read as written.
    """
    out: list[Fact] = []
    for argv in steps:
        words = list(argv)
        if words[:3] == ["sysctl", "-q", "-w"]:
            key, _, value = words[3].partition("=")
            if key in ("net.mptcp.path_manager", "net.mptcp.pm_type"):
                value = {"0": "kernel", "1": "userspace"}.get(value, value)
                out.append(fact(host, "path_manager", value=value))
            elif key == "net.mptcp.scheduler":
                out.append(fact(host, "scheduler", value=value))
            else:
                out.append(fact(host, "sysctl", key=key, value=value))
        elif words[:3] == ["ip", "link", "set"] and "mtu" in words:
            out.append(fact(host, "mtu", dev=words[4], mtu=words[6]))
        elif words[:3] == ["ip", "addr", "add"]:
            out.append(fact(host, "address", dev=words[5], address=words[3]))
        elif words[0] == "ip" and words[2:4] == ["route", "add"]:
            opts = dict(zip(words[5::2], words[6::2], strict=False))
            route = PlannedRoute(
                4 if words[1] == "-4" else 6,
                words[4],
                int(opts["table"]),
                opts.get("via"),
                opts.get("dev"),
                int(opts["metric"]) if "metric" in opts else None,
            )
            out.append(route_fact(host, route))
        elif words[0] == "ip" and words[2:4] == ["rule", "add"]:
            opts = dict(zip(words[4::2], words[5::2], strict=False))
            suppress = opts.get("suppress_prefixlength")
            rule = PlannedRule(
                4 if words[1] == "-4" else 6,
                int(opts["pref"]),
                int(opts["table"]),
                opts.get("from"),
                int(suppress) if suppress is not None else None,
            )
            out.append(rule_fact(host, rule))
        elif words[:4] == ["ip", "mptcp", "limits", "set"]:
            out.append(fact(host, "limits", subflows=words[5], add_addr_accepted=words[7]))
        elif words[:4] == ["ip", "mptcp", "endpoint", "add"]:
            rest = words[5:]
            opts = {}
            while rest and rest[0] in ("dev", "id", "port"):
                opts[rest[0]] = rest[1]
                rest = rest[2:]
            flags = ",".join(rest)
            out.append(fact(host, "endpoint", address=words[4], flags=flags, **opts))
        elif words[:3] == ["tc", "qdisc", "add"]:
            kind = words[8]
            opts = dict(zip(words[9::2], words[10::2], strict=False))
            if kind == "tbf":
                rate = opts["rate"].removesuffix("bit")
                out.append(
                    fact(host, "tbf", dev=words[4], rate=rate, burst=opts["burst"], limit=opts["limit"])
                )
            else:
                out.append(_netem_fact(host, words[4], words[9:]))
    return sorted(out)


def _netem_fact(host: str, dev: str, words: list[str]) -> Fact:
    fields: dict[str, object] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word == "delay":
            fields["delay_us"] = words[i + 1].removesuffix("us")
            if i + 2 < len(words) and words[i + 2].endswith("us"):
                fields["jitter_us"] = words[i + 2].removesuffix("us")
                i += 1
        elif word in ("loss", "reorder"):
            fields[word] = f"{float(words[i + 1].removesuffix('%')) / 100:.6f}"
        elif word == "rate":
            fields["rate"] = words[i + 1].removesuffix("bit")
        elif word == "limit":
            fields["limit"] = words[i + 1]
        i += 2
    return fact(host, "netem", dev=dev, **fields)

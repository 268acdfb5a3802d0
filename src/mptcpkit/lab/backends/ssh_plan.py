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
from dataclasses import dataclass, field
from typing import Any

from mptcpkit.errors import LabError, UsageError
from mptcpkit.lab.model import DEFAULT_SYSCTLS, Direction, Topology
from mptcpkit.lab.sysctl_rules import require_safe_sysctl

TABLE_BASE = 100
RULE_PREF_BASE = 200
ENDPOINT_ID_BASE = 100

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
class HostPlan:
    """The ordered steps for one machine; undone in reverse."""

    host: str
    steps: list[Step] = field(default_factory=list)

    def add(self, what: str, apply: Iterable[str], undo: Iterable[str] | None) -> None:
        self.steps.append(Step(what, tuple(apply), tuple(undo) if undo is not None else None))


def sysctl_keys(topology: Topology, host: str) -> list[str]:
    """Sysctls the lab may write on `host` (their values are saved first)."""
    spec = topology.host(host)
    keys = set(DEFAULT_SYSCTLS) | set(spec.sysctls)
    keys |= {"net.mptcp.enabled", "net.mptcp.pm_type", "net.mptcp.path_manager", "net.mptcp.scheduler"}
    keys |= {"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}
    return sorted(keys)


def _qdisc_argv(dev: str, direction: Direction, mtu: int, has_netem: bool) -> list[str]:
    """tc command shaping egress of `dev`: netem (delay/jitter/loss/rate) when needed, else tbf (rate)."""
    needs_netem = bool(direction.delay_s or direction.jitter_s or direction.loss or direction.reorder)
    if needs_netem:
        if not has_netem:
            raise LabError(
                f"{dev}: delay/jitter/loss need netem, which this machine's kernel lacks (sch_netem)",
                hint="load sch_netem there, or shape only the rate on bare-metal links",
            )
        argv = ["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem", "limit"]
        argv.append(str(direction.queue_packets))
        if direction.delay_s:
            argv += ["delay", f"{direction.delay_s * 1e6:.0f}us"]
            if direction.jitter_s:
                argv += [f"{direction.jitter_s * 1e6:.0f}us"]
        if direction.loss:
            argv += ["loss", f"{direction.loss * 100:g}%"]
        if direction.reorder:
            argv += ["reorder", f"{direction.reorder * 100:g}%"]
        if direction.rate_bps:
            argv += ["rate", f"{direction.rate_bps}bit"]
        return argv
    assert direction.rate_bps
    burst = max(direction.rate_bps // 8 // 250, 2 * (mtu + 14))  # 4 ms worth of bytes, at least 2 frames
    limit = direction.queue_packets * (mtu + 14)
    return [
        "tc",
        "qdisc",
        "add",
        "dev",
        dev,
        "root",
        "handle",
        "1:",
        "tbf",
        "rate",
        f"{direction.rate_bps}bit",
        "burst",
        str(burst),
        "limit",
        str(limit),
    ]


def plan_host(topology: Topology, host: str, before: Snapshot, *, has_netem: bool) -> HostPlan:
    """Every change the lab makes on `host`, checked against its current state, each with its undo.

    Refuses (LabError) rather than silently overwriting something the machine already has: a missing
    interface, a configured (non-default) root qdisc on a link to shape, an MPTCP endpoint address in use.
    """
    spec = topology.host(host)
    plan = HostPlan(host)
    links = topology.links_of(host)
    for link in links:
        end = link.end(host)
        if end.ifname not in before.links:
            raise LabError(
                f"{host}: no interface '{end.ifname}' for link '{link.name}' "
                f"(it has: {', '.join(sorted(before.links))})"
            )
    # sysctls first (forwarding, buffers, MPTCP on), restored last
    wanted = dict(DEFAULT_SYSCTLS)
    wanted.update(spec.sysctls)
    wanted["net.mptcp.enabled"] = "1" if spec.mptcp.enabled else "0"
    if spec.forwarding:
        wanted["net.ipv4.ip_forward"] = "1"
        wanted["net.ipv6.conf.all.forwarding"] = "1"
    if spec.mptcp.scheduler is not None:
        wanted["net.mptcp.scheduler"] = spec.mptcp.scheduler
    if before.sysctls.get("net.mptcp.path_manager"):
        wanted["net.mptcp.path_manager"] = spec.mptcp.path_manager
    else:
        wanted["net.mptcp.pm_type"] = "0" if spec.mptcp.path_manager == "kernel" else "1"
    for key, value in sorted(wanted.items()):
        require_safe_sysctl(key, value)
        old = before.sysctls.get(key, "")
        if not old:
            if key in spec.sysctls:
                raise LabError(f"{host}: sysctl {key} does not exist there")
            continue  # e.g. an IPv6 key on a host without IPv6: nothing to set
        if " ".join(value.split()) == old:
            continue
        plan.add(
            f"sysctl {key}={value}",
            ["sysctl", "-q", "-w", f"{key}={value}"],
            ["sysctl", "-q", "-w", f"{key}={old}"],
        )
    # links: up, MTU
    for link in links:
        dev = link.end(host).ifname
        state = before.links[dev]
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
    for ifname, address in topology.addresses_of(host):
        text = f"{ifname} {address.with_prefixlen}"
        if text in existing:
            continue  # the machine already has it: leave it, and leave it at teardown
        extra = ["nodad"] if address.version == 6 else []
        plan.add(
            f"address {text}",
            ["ip", "addr", "add", address.with_prefixlen, "dev", ifname, *extra],
            ["ip", "addr", "del", address.with_prefixlen, "dev", ifname],
        )
    # static routes
    for route in spec.routes:
        argv = ["route", "add", route.to]
        if route.via is not None:
            argv += ["via", str(route.via)]
        if route.dev is not None:
            argv += ["dev", route.dev]
        if route.metric is not None:
            argv += ["metric", str(route.metric)]
        family = ["-6"] if ":" in route.to or (route.via is not None and route.via.version == 6) else []
        plan.add(f"route {route.to}", ["ip", *family, *argv], ["ip", *family, "route", "del", *argv[2:]])
    # per-source policy routing: each subflow leaves through the link its source address belongs to
    policy = spec.policy_routing if spec.policy_routing is not None else len(links) > 1
    if policy:
        used_tables = {json.loads(r).get("table") for r in before.rules}
        for index, (ifname, address) in enumerate(topology.addresses_of(host)):
            table = TABLE_BASE + index
            while str(table) in used_tables:
                table += 1
            pref = RULE_PREF_BASE + index
            fam = "-6" if address.version == 6 else "-4"
            net = str(address.network)
            src, tbl, prf = str(address.ip), str(table), str(pref)
            plan.add(
                f"table {table} {net}",
                ["ip", fam, "route", "add", net, "dev", ifname, "src", src, "table", tbl],
                ["ip", fam, "route", "del", net, "dev", ifname, "table", tbl],
            )
            plan.add(
                f"rule from {address.ip}",
                ["ip", fam, "rule", "add", "from", src, "table", tbl, "pref", prf],
                ["ip", fam, "rule", "del", "from", src, "table", tbl, "pref", prf],
            )
    # MPTCP limits and endpoints
    mptcp = spec.mptcp
    if mptcp.subflows is not None or mptcp.add_addr_accepted is not None:
        old_sub = before.limits.get("subflows", 2)
        old_acc = before.limits.get("add_addr_accepted", 0)
        new_sub = mptcp.subflows if mptcp.subflows is not None else old_sub
        new_acc = mptcp.add_addr_accepted if mptcp.add_addr_accepted is not None else old_acc
        if (new_sub, new_acc) != (old_sub, old_acc):
            limits = ["ip", "mptcp", "limits", "set", "subflows"]
            plan.add(
                "mptcp limits",
                [*limits, str(new_sub), "add_addr_accepted", str(new_acc)],
                [*limits, str(old_sub), "add_addr_accepted", str(old_acc)],
            )
    used_ids = {int(e["id"]) for e in before.endpoints if "id" in e}
    used_addrs = {ipaddress.ip_address(e["address"]) for e in before.endpoints if "address" in e}
    next_id = ENDPOINT_ID_BASE
    for endpoint in mptcp.endpoints:
        if endpoint.address in used_addrs:
            raise LabError(f"{host}: an MPTCP endpoint for {endpoint.address} already exists there")
        if endpoint.id is not None:
            if endpoint.id in used_ids:
                raise LabError(f"{host}: MPTCP endpoint id {endpoint.id} is already used there")
            eid = endpoint.id
        else:
            while next_id in used_ids:
                next_id += 1
            eid = next_id
        used_ids.add(eid)
        argv = ["ip", "mptcp", "endpoint", "add", str(endpoint.address)]
        if endpoint.dev is not None:
            argv += ["dev", endpoint.dev]
        argv += ["id", str(eid)]
        if endpoint.port is not None:
            argv += ["port", str(endpoint.port)]
        argv += sorted(endpoint.flags)
        plan.add(f"endpoint {endpoint.address}", argv, ["ip", "mptcp", "endpoint", "delete", "id", str(eid)])
    # shaping, egress of each link end
    roots = {q["dev"]: q for q in before.qdiscs if q.get("root")}
    for link in links:
        direction = link.direction_from(host)
        if not direction.shaped:
            continue
        dev = link.end(host).ifname
        root = roots.get(dev)
        if root is not None and root.get("handle") not in ("0:", None):
            raise LabError(
                f"{host}: {dev} already has a configured root qdisc "
                f"({root.get('kind')} {root.get('handle')}); the lab would replace it",
                hint=f"remove it (tc qdisc del dev {dev} root) or use another interface for '{link.name}'",
            )
        plan.add(
            f"shape {dev}",
            _qdisc_argv(dev, direction, link.mtu, has_netem),
            ["tc", "qdisc", "del", "dev", dev, "root"],
        )
    return plan

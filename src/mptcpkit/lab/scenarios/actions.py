"""Timed actions on a running lab, and putting the lab back after each repetition.

Actions use only the backend-neutral Lab/Host interface (link state, sysctls, commands on hosts: `ip mptcp`,
`ss -K`), so they work on every backend. Changing a link's shape mid-run uses `Lab.set_link_shape(name,
a_to_b, b_to_a)`: the namespace backend reshapes its wire (forwarder control socket, `tc qdisc change`),
SSH and multi-VM labs run `tc qdisc replace` on the senders, the single VM asks its guest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mptcpkit.errors import LabError
from mptcpkit.lab.backends.base import Lab
from mptcpkit.lab.model import Topology
from mptcpkit.lab.scenarios.resolve import reshape
from mptcpkit.lab.scenarios.spec import ActionSpec, ScenarioSpec

_ENDPOINT_LINE = re.compile(r"^(\S+)\s+(?:port \d+\s+)?id (\d+)\b")


def _endpoint_id(lab: Lab, host: str, address: str) -> int:
    shown = lab.host(host).run(["ip", "mptcp", "endpoint", "show"], check=False).stdout
    for line in shown.splitlines():
        match = _ENDPOINT_LINE.match(line.strip())
        if match and match.group(1) == address:
            return int(match.group(2))
    raise LabError(
        f"{host}: {address} is not an MPTCP endpoint now (ip mptcp endpoint show: {shown.strip()!r})"
    )


def _ifname_of(topology: Topology, host: str, address: str) -> str:
    for ifname, iface in topology.addresses_of(host):
        if str(iface.ip) == address:
            return ifname
    raise LabError(f"{host} has no address {address}")


def _run(lab: Lab, host: str, argv: list[str]) -> None:
    result = lab.host(host).run(argv, check=False)
    if result.returncode != 0:
        raise LabError(f"{host}: {' '.join(argv)} failed: {(result.stderr or result.stdout).strip()}")


@dataclass
class LabState:
    """What actions changed during one repetition, so `restore` can undo exactly that."""

    topology: Topology
    links_touched: set[str] = field(default_factory=set)
    shapes_touched: set[str] = field(default_factory=set)
    endpoint_hosts: set[str] = field(default_factory=set)
    sysctls: dict[tuple[str, str], str] = field(default_factory=dict)


def apply_action(lab: Lab, action: ActionSpec, state: LabState, flow: tuple[str, int] | None = None) -> None:
    """Do `action` now on `lab`; `flow` is (client host, server port) of the action's flow, if it names one."""
    topo = state.topology
    kind = action.kind
    if kind in ("link-down", "link-up") and action.link:
        lab.set_link_up(action.link, kind == "link-up")
        state.links_touched.add(action.link)
    elif kind == "set-link" and action.link:
        setter: Callable[..., None] | None = getattr(lab, "set_link_shape", None)
        if setter is None:
            raise LabError(
                f"this lab ({lab.info.backend}) cannot change a link's shape while it runs; "
                "set-link needs a backend with Lab.set_link_shape"
            )
        link = topo.link(action.link)
        a_to_b = reshape(link.a_to_b, action.shape) if action.direction in ("both", "a_to_b") else link.a_to_b
        b_to_a = reshape(link.b_to_a, action.shape) if action.direction in ("both", "b_to_a") else link.b_to_a
        setter(action.link, a_to_b, b_to_a)
        state.shapes_touched.add(action.link)
    elif kind == "add-endpoint" and action.host and action.address:
        dev = action.dev or _ifname_of(topo, action.host, action.address)
        flags = list(action.flags) or ["subflow"]
        state.endpoint_hosts.add(action.host)
        _run(lab, action.host, ["ip", "mptcp", "endpoint", "add", action.address, "dev", dev, *flags])
    elif kind == "remove-endpoint" and action.host and action.address:
        state.endpoint_hosts.add(action.host)
        ident = _endpoint_id(lab, action.host, action.address)
        _run(lab, action.host, ["ip", "mptcp", "endpoint", "delete", "id", str(ident)])
    elif kind in ("set-backup", "clear-backup") and action.host and action.address:
        state.endpoint_hosts.add(action.host)
        change = "backup" if kind == "set-backup" else "nobackup"
        ident = _endpoint_id(lab, action.host, action.address)
        _run(lab, action.host, ["ip", "mptcp", "endpoint", "change", "id", str(ident), change])
    elif kind == "close-subflow" and action.link and flow is not None:
        _close_subflow(lab, action, *flow)
    elif kind == "set-sysctl" and action.host and action.key and action.value is not None:
        host = lab.host(action.host)
        state.sysctls.setdefault((action.host, action.key), host.sysctl(action.key))
        host.set_sysctl(action.key, action.value)
    else:  # the loader and check_spec make this unreachable
        raise LabError(f"cannot do action {action.label()}")


def _close_subflow(lab: Lab, action: ActionSpec, client: str, port: int) -> None:
    """Kill the flow's subflow on `link` on the client (`ss -K`, needs CONFIG_INET_DIAG_DESTROY)."""
    end = lab.topology.link(action.link or "").end(client)
    for iface in end.addresses:
        argv = ["ss", "-K", "-t", "-n", "state", "established", "src", str(iface.ip)]
        result = lab.host(client).run([*argv, "dport", "=", f":{port}"], check=False)
        if result.returncode == 0 and len(result.stdout.strip().splitlines()) > 1:
            return
    raise LabError(f"no subflow of flow {action.flow} on link {action.link} to close (port {port})")


def restore(lab: Lab, state: LabState) -> None:
    """Undo what the repetition's actions changed; the next repetition starts from the topology."""
    problems = []
    for name in sorted(state.links_touched):
        try:
            lab.set_link_up(name, True)
        except LabError as exc:
            problems.append(str(exc))
    setter = getattr(lab, "set_link_shape", None)
    for name in sorted(state.shapes_touched):
        link = state.topology.link(name)
        if setter is not None:
            setter(name, link.a_to_b, link.b_to_a)
    for host in sorted(state.endpoint_hosts):
        _run(lab, host, ["ip", "mptcp", "endpoint", "flush"])
        for ep in state.topology.host(host).mptcp.endpoints:
            argv = ["ip", "mptcp", "endpoint", "add", str(ep.address)]
            argv += ["dev", ep.dev or _ifname_of(state.topology, host, str(ep.address))]
            argv += ["id", str(ep.id)] if ep.id is not None else []
            argv += ["port", str(ep.port)] if ep.port is not None else []
            _run(lab, host, [*argv, *sorted(ep.flags)])
    for (host, key), value in state.sysctls.items():
        lab.host(host).set_sysctl(key, value)
    state.links_touched.clear()
    state.shapes_touched.clear()
    state.endpoint_hosts.clear()
    state.sysctls.clear()
    if problems:
        raise LabError("restoring the lab after a repetition failed: " + "; ".join(problems))


def needs_restore(spec: ScenarioSpec) -> bool:
    return spec.restore and bool(spec.actions)

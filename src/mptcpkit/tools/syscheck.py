"""`mptcpkit check` without target: turn SystemFacts into findings, each problem with its fixing command.

`evaluate()` is pure (facts in, findings out) so every rule is unit-tested on made-up machines.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from mptcpkit.tools.sysfacts import AddressFact, SystemFacts, gather


class Level(enum.Enum):
    OK = "ok"
    INFO = "info"
    PROBLEM = "problem"


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    title: str
    detail: str = ""
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    findings: tuple[Finding, ...]

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level is Level.PROBLEM]


def _usable(addrs: list[AddressFact]) -> list[AddressFact]:
    """Addresses that could carry extra subflows: global scope, interface up, not link-local/loopback."""
    out = []
    for a in addrs:
        try:
            ip = ipaddress.ip_address(a.addr)
        except ValueError:
            continue
        if a.up and a.scope == "global" and not (ip.is_loopback or ip.is_link_local):
            out.append(a)
    return out


def _nm_manages(version: str | None) -> bool:
    if not version:
        return False
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (1, 40)


def evaluate(f: SystemFacts) -> Report:
    """Every rule, in the order a user should fix things."""
    out: list[Finding] = []
    if not f.mptcp_sysctls:
        out.append(
            Finding(
                Level.PROBLEM,
                "the kernel has no MPTCP support",
                f"kernel {f.kernel}: /proc/sys/net/mptcp is missing",
                "boot a kernel >= 5.6 built with CONFIG_MPTCP=y (and CONFIG_MPTCP_IPV6=y)",
            )
        )
        return Report(tuple(out))
    out.append(Finding(Level.OK, "the kernel supports MPTCP", f"kernel {f.kernel}"))
    if f.enabled == 0:
        out.append(
            Finding(
                Level.PROBLEM,
                "MPTCP is disabled (net.mptcp.enabled = 0)",
                "new MPTCP sockets cannot be created",
                "sysctl -w net.mptcp.enabled=1  # persist: echo net.mptcp.enabled=1 > "
                "/etc/sysctl.d/90-mptcp.conf",
            )
        )
    elif f.enabled == 1:
        out.append(Finding(Level.OK, "MPTCP is enabled (net.mptcp.enabled = 1)"))
    if f.socket_error is None:
        out.append(Finding(Level.OK, "an MPTCP socket can be created"))
    elif f.enabled != 0:
        out.append(
            Finding(
                Level.PROBLEM,
                "creating an MPTCP socket fails",
                f.socket_error,
                "sysctl -w net.mptcp.enabled=1; check that no seccomp/LSM policy blocks IPPROTO_MPTCP",
            )
        )

    daemons = list(f.pm_daemons)
    managers = daemons + (
        ["NetworkManager " + (f.networkmanager or "")]
        if f.networkmanager_running and _nm_manages(f.networkmanager)
        else []
    )
    pm = f.path_manager or "unknown"
    if pm == "userspace":
        if daemons:
            out.append(Finding(Level.OK, f"path manager: userspace, driven by {', '.join(daemons)}"))
        else:
            out.append(
                Finding(
                    Level.PROBLEM,
                    "path manager is `userspace` but no path-manager daemon runs",
                    "connections will never get extra subflows",
                    "mptcpkit pm run  # or: sysctl -w net.mptcp.path_manager=kernel",
                )
            )
    else:
        out.append(
            Finding(
                Level.OK, f"path manager: {pm}", "available: " + (" ".join(f.available_path_managers) or "?")
            )
        )
    if f.scheduler:
        out.append(
            Finding(
                Level.INFO,
                f"packet scheduler: {f.scheduler}",
                "available: " + (" ".join(f.available_schedulers) or "?"),
            )
        )

    usable = _usable(f.addresses)
    if f.endpoints is None:
        out.append(
            Finding(
                Level.INFO,
                "endpoints and limits could not be read",
                "; ".join(f.notes),
                "run `mptcpkit check` as root",
            )
        )
    elif pm != "userspace":
        endpoint_addrs = {e.addr for e in f.endpoints}
        if not f.endpoints:
            by_dev: dict[str, AddressFact] = {}
            for a in usable:
                by_dev.setdefault(a.dev, a)
            extra = list(by_dev.values())
            if managers:
                detail = f"managed by {', '.join(managers)}, which adds endpoints when addresses appear"
                out.append(Finding(Level.INFO, "no MPTCP endpoints yet", detail))
            elif len(extra) >= 2:
                cmd = "; ".join(f"ip mptcp endpoint add {a.addr} dev {a.dev} subflow" for a in extra[1:])
                out.append(
                    Finding(
                        Level.PROBLEM,
                        "no MPTCP endpoints: connections use a single path",
                        f"{len(extra)} interfaces with usable addresses, none is an endpoint",
                        cmd,
                    )
                )
            else:
                out.append(
                    Finding(
                        Level.INFO,
                        "no MPTCP endpoints",
                        "fine with a single interface, or for a server (clients add the extra subflows); "
                        "a client with several interfaces needs endpoints",
                        "ip mptcp endpoint add ADDRESS dev IFACE subflow",
                    )
                )
        else:
            desc = ", ".join(f"{e.addr} ({'+'.join(e.flags) or 'no flags'})" for e in f.endpoints)
            who = f"; managed by {', '.join(managers)}" if managers else ""
            out.append(Finding(Level.OK, f"{len(f.endpoints)} MPTCP endpoint(s)", desc + who))
        local = {a.addr for a in f.addresses}
        for addr in sorted(endpoint_addrs - local):
            if addr:
                ep = next(e for e in f.endpoints if e.addr == addr)
                out.append(
                    Finding(
                        Level.PROBLEM,
                        f"endpoint {addr} is not an address of this machine",
                        "stale endpoint: its subflows cannot be created",
                        f"ip mptcp endpoint delete id {ep.id}",
                    )
                )
        if f.limits is not None:
            subflows, accepted = f.limits
            n_sub = sum(1 for e in f.endpoints if "subflow" in e.flags)
            detail = f"subflows {subflows}, add_addr_accepted {accepted}"
            if n_sub > subflows:
                out.append(
                    Finding(
                        Level.PROBLEM,
                        "the subflows limit is lower than the subflow endpoints",
                        detail + f"; {n_sub} endpoint(s) with the subflow flag",
                        f"ip mptcp limits set subflows {min(8, n_sub)} add_addr_accepted "
                        f"{max(accepted, min(8, n_sub))}",
                    )
                )
            elif subflows == 0:
                out.append(
                    Finding(
                        Level.PROBLEM,
                        "the subflows limit is 0: no extra subflow can be created",
                        detail,
                        "ip mptcp limits set subflows 2 add_addr_accepted 2",
                    )
                )
            elif accepted == 0 and usable:
                out.append(
                    Finding(
                        Level.INFO,
                        "limits: ADD_ADDR from servers are ignored (add_addr_accepted 0)",
                        detail + "; a client cannot use extra server addresses",
                        f"ip mptcp limits set subflows {subflows} add_addr_accepted {subflows}",
                    )
                )
            else:
                out.append(Finding(Level.OK, "limits", detail))
    if f.networkmanager:
        state = "running" if f.networkmanager_running else "not running"
        mptcp = "manages MPTCP endpoints (>= 1.40)" if _nm_manages(f.networkmanager) else "too old for MPTCP"
        out.append(Finding(Level.INFO, f"NetworkManager {f.networkmanager} ({state})", mptcp))
    return Report(tuple(out))


def diagnose() -> Report:
    return evaluate(gather())


_MARK = {Level.OK: "ok     ", Level.INFO: "info   ", Level.PROBLEM: "PROBLEM"}


def format_report(report: Report) -> str:
    lines = []
    for item in report.findings:
        lines.append(f"{_MARK[item.level]} {item.title}")
        if item.detail:
            lines.append(f"        {item.detail}")
        if item.fix and item.level is not Level.OK:
            lines.append(f"        fix: {item.fix}")
    n = len(report.problems)
    lines.append("")
    lines.append("no problem found" if n == 0 else f"{n} problem(s) found")
    return "\n".join(lines)

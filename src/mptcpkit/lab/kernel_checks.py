"""Checks that need the target kernel, run at `lab up` before anything is created.

A topology can name an MPTCP scheduler, a path manager, a congestion control or a sysctl that this kernel lacks.
The lab used to find out half-way through building (exit 1, no file:line, a broken lab left behind). Here the
facts are read once, in a throw-away network namespace that dies with the probe process (`unshare --net`), so
per-namespace sysctls are judged exactly as a lab namespace will see them, and nothing is left behind.

`needed_keys` and `check_topology` are pure; `probe` does the I/O; `preflight` ties them to the file's lines.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from mptcpkit.lab.model import DEFAULT_SYSCTLS, ModelError, Topology
from mptcpkit.lab.sysctl_rules import sysctl_key_problem

Facts = Mapping[str, str | None]
"""sysctl key -> its value in a fresh namespace ('' when it exists but cannot be read), None when missing."""

SCHEDULERS = "net.mptcp.available_schedulers"
PATH_MANAGERS = "net.mptcp.available_path_managers"
PATH_MANAGER = "net.mptcp.path_manager"
PM_TYPE = "net.mptcp.pm_type"
CONGESTION = "net.ipv4.tcp_available_congestion_control"
CC_KEY = "net.ipv4.tcp_congestion_control"
_PER_DEVICE = {
    ("net", "ipv4", "conf"),
    ("net", "ipv6", "conf"),
    ("net", "ipv4", "neigh"),
    ("net", "ipv6", "neigh"),
}


def probe_key(key: str, ifnames: set[str]) -> str:
    """The key to look for before the lab's interfaces exist: per-device keys are judged by their 'default'."""
    parts = key.split(".")
    if len(parts) > 4 and tuple(parts[:3]) in _PER_DEVICE and parts[3] in ifnames:
        return ".".join([*parts[:3], "default", *parts[4:]])
    return key


def per_device_keys(topology: Topology, host: str) -> frozenset[str]:
    """`host`'s sysctls that name one of its lab interfaces: they can only be written once the links exist."""
    ifnames = _ifnames(topology).get(host, set())
    return frozenset(k for k in topology.host(host).sysctls if probe_key(k, ifnames) != k)


def needed_keys(topology: Topology) -> set[str]:
    """Every sysctl whose existence or value `check_topology` needs."""
    keys = {SCHEDULERS, PATH_MANAGERS, PATH_MANAGER, PM_TYPE, CONGESTION}
    ifnames_of = _ifnames(topology)
    for host in topology.hosts:
        keys.update(
            probe_key(k, ifnames_of[host.name]) for k in host.sysctls if sysctl_key_problem(k) is None
        )
    return keys


def check_topology(topology: Topology, facts: Facts) -> None:
    """Raise ModelError (with the field path) for the first setting this kernel cannot honour."""
    schedulers = (facts.get(SCHEDULERS) or "").split()
    path_managers = (facts.get(PATH_MANAGERS) or "").split()
    congestion = (facts.get(CONGESTION) or "").split()
    ifnames_of = _ifnames(topology)
    for host in topology.hosts:
        base = ("hosts", host.name)
        mptcp = host.mptcp
        if mptcp.scheduler is not None and mptcp.scheduler not in schedulers:
            have = ", ".join(schedulers) if schedulers else "none: this kernel cannot choose schedulers"
            raise ModelError(
                (*base, "mptcp", "scheduler"),
                f"MPTCP scheduler '{mptcp.scheduler}' is not available on this kernel (available: {have})",
            )
        if mptcp.path_manager != "kernel":
            if path_managers and mptcp.path_manager not in path_managers:
                raise ModelError(
                    (*base, "mptcp", "path_manager"),
                    f"path manager '{mptcp.path_manager}' is not available (available: {', '.join(path_managers)})",
                )
            if not path_managers and facts.get(PM_TYPE) is None:
                raise ModelError(
                    (*base, "mptcp", "path_manager"),
                    "this kernel has no choice of path manager (no net.mptcp.pm_type or path_manager)",
                )
        cc = host.sysctls.get(CC_KEY, DEFAULT_SYSCTLS[CC_KEY])
        if congestion and cc not in congestion:
            where = (*base, "sysctls", CC_KEY) if CC_KEY in host.sysctls else base
            raise ModelError(
                where,
                f"congestion control '{cc}' is not available on this kernel (available: {', '.join(congestion)}; "
                f"`modprobe tcp_{cc}` may add it)",
            )
        for key in host.sysctls:
            if facts.get(probe_key(key, ifnames_of[host.name]), "") is None:
                raise ModelError(
                    (*base, "sysctls", key),
                    f"sysctl '{key}' does not exist in a network namespace of this kernel",
                )


def probe(keys: set[str]) -> dict[str, str | None]:
    """Read `keys` in a fresh, anonymous network namespace (falls back to this one without `unshare`)."""
    safe = sorted(k for k in keys if sysctl_key_problem(k) is None)
    script = "; ".join(
        f"if [ -e {p} ]; then printf '%s=' {shlex.quote(k)}; (cat {p} 2>/dev/null || echo) | head -c 4096 | "
        f"tr '\\n' ' '; echo; else echo {shlex.quote(k)}'!'; fi"
        for k in safe
        for p in [shlex.quote("/proc/sys/" + k.replace(".", "/"))]
    )
    argv = ["sh", "-c", script or "true"]
    unshare = shutil.which("unshare")
    if unshare is not None:
        argv = [unshare, "--net", *argv]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {k: _read_here(k) for k in safe}
    facts: dict[str, str | None] = {}
    for line in out.splitlines():
        if line.endswith("!"):
            facts[line[:-1]] = None
        else:
            key, _, value = line.partition("=")
            facts[key] = value.strip()
    return facts


def preflight(topology: Topology) -> None:
    """Refuse (TopologyError, exit 2, file:line when the file is at hand) what this kernel cannot build.

    Validates the topology first: one built in Python (or changed with `with_host`) never went through a file.
    """
    from mptcpkit.lab.model import validate
    from mptcpkit.lab.topology_file import located

    try:
        validate(topology)
        check_topology(topology, probe(needed_keys(topology)))
    except ModelError as exc:
        raise located(exc, topology.source or "<topology>") from None


def _read_here(key: str) -> str | None:
    try:
        return Path("/proc/sys", *key.split(".")).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError:
        return ""


def _ifnames(topology: Topology) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {h.name: set() for h in topology.hosts}
    for link in topology.links:
        for end in (link.a, link.b):
            names.setdefault(end.host, set()).add(end.ifname)
    return names

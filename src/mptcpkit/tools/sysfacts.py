"""Read-only facts about this machine's MPTCP setup, shared by `mptcpkit check` and `mptcpkit debug`.

Every reader degrades to None / empty on failure (non-root, old kernel): callers decide what that means.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mptcpkit.mptcp_socket import IPPROTO_MPTCP

SYSCTL_DIR = Path("/proc/sys/net/mptcp")


@dataclass(frozen=True, slots=True)
class EndpointFact:
    addr: str
    id: int
    flags: tuple[str, ...]
    dev: str | None


@dataclass(frozen=True, slots=True)
class AddressFact:
    dev: str
    addr: str
    prefixlen: int
    scope: str
    up: bool


@dataclass
class SystemFacts:
    """What `check` reasons about. None means "could not be read"."""

    kernel: str
    mptcp_sysctls: bool
    enabled: int | None
    path_manager: str | None
    available_path_managers: list[str]
    available_schedulers: list[str]
    scheduler: str | None
    endpoints: list[EndpointFact] | None
    limits: tuple[int, int] | None  # (subflows, add_addr_accepted)
    addresses: list[AddressFact]
    socket_error: str | None  # None: an MPTCP socket could be created
    networkmanager: str | None  # version string when installed
    networkmanager_running: bool
    pm_daemons: list[str] = field(default_factory=list)  # running path-manager daemons (mptcpd, mptcpkit pm)
    notes: list[str] = field(default_factory=list)


def read_sysctl(name: str) -> str | None:
    try:
        return (SYSCTL_DIR / name).read_text().strip()
    except OSError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def run_text(argv: list[str], timeout: float = 10.0) -> tuple[int, str]:
    """(exit code, stdout+stderr) of a command; 127 when it is not installed."""
    if shutil.which(argv[0]) is None:
        return 127, f"{argv[0]}: not installed\n"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(argv)}: timed out after {timeout} s\n"
    return proc.returncode, proc.stdout + proc.stderr


def pm_endpoints_limits() -> tuple[list[EndpointFact] | None, tuple[int, int] | None, str | None]:
    """Endpoints and limits from the kernel over mptcp_pm netlink; (None, None, why) when unreadable."""
    try:
        from mptcpkit.netlink import MptcpPmClient

        with MptcpPmClient() as pm:
            eps = pm.dump_endpoints()
            lim = pm.get_limits()
    except Exception as exc:  # any failure means "unknown", reported as a note
        return None, None, f"mptcp_pm netlink: {exc}"
    names = {idx: name for idx, name in socket.if_nameindex()}
    out = [
        EndpointFact(
            str(e.addr) if e.addr is not None else "",
            e.id,
            tuple(e.flags.names()),
            names.get(e.ifindex) if e.ifindex else None,
        )
        for e in eps
    ]
    return out, (lim.subflows, lim.add_addr_accepted), None


def addresses() -> list[AddressFact]:
    code, text = run_text(["ip", "-j", "addr", "show"])
    if code != 0:
        return []
    try:
        links = json.loads(text)
    except json.JSONDecodeError:
        return []
    out = []
    for link in links:
        up = "UP" in link.get("flags", []) and "LOWER_UP" in link.get("flags", [])
        for a in link.get("addr_info", []):
            out.append(
                AddressFact(
                    link.get("ifname", "?"),
                    a.get("local", ""),
                    int(a.get("prefixlen", 0)),
                    a.get("scope", ""),
                    up,
                )
            )
    return out


def try_mptcp_socket() -> str | None:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP).close()
    except OSError as exc:
        return f"{exc.strerror} (errno {exc.errno})"
    return None


def running_programs(*, same_netns: bool = True) -> list[str]:
    """Command lines of the processes (best effort), by default only those in our network namespace."""
    try:
        own_ns = os.readlink("/proc/self/ns/net")
    except OSError:
        own_ns = ""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if same_netns and own_ns:
            try:
                if os.readlink(f"/proc/{pid}/ns/net") != own_ns:
                    continue
            except OSError:
                pass  # not ours to inspect (non-root): keep it
        if raw:
            out.append(raw.replace(b"\0", b" ").decode(errors="replace").strip())
    return out


def _is_mptcpkit_pm_daemon(argv: list[str]) -> bool:
    """`mptcpkit pm [flags]` / `mptcpkit pm run` / `python -m mptcpkit pm`, but not `pm status|monitor`."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) == "mptcpkit" or (arg == "mptcpkit" and i > 0 and argv[i - 1] == "-m"):
            rest = argv[i + 1 :]
            if not rest or rest[0] != "pm":
                return False
            if "--netns" in rest or any(w.startswith("--netns=") for w in rest):
                return False  # it manages another namespace
            if any(w in ("-h", "--help", "-?", "-V", "--version", "--usage") for w in rest):
                return False
            from mptcpkit.pm.daemon_args import wants_lean  # the daemon's own rule: no subcommand

            return wants_lean(rest[1:])
    return False


def pm_daemons(cmdlines: list[str]) -> list[str]:
    """Running path-manager daemons recognised from process command lines."""
    found = []
    for line in cmdlines:
        argv = line.split()
        base = os.path.basename(argv[0]) if argv else ""
        if base == "mptcpd":
            found.append("mptcpd")
        elif _is_mptcpkit_pm_daemon(argv):
            found.append("mptcpkit pm")
    return sorted(set(found))


def networkmanager() -> tuple[str | None, bool]:
    version = None
    for prog in ("NetworkManager", "nmcli"):
        code, text = run_text([prog, "--version"], timeout=5)
        if code == 0:
            m = re.search(r"(\d+\.\d+(\.\d+)?)", text)
            version = m.group(1) if m else text.strip()
            break
    running = any(os.path.basename(c.split()[0]) == "NetworkManager" for c in running_programs() if c)
    return version, running


def gather() -> SystemFacts:
    notes = []
    eps, limits, why = pm_endpoints_limits()
    if why:
        notes.append(why)
    nm_version, nm_running = networkmanager()
    pm_name = read_sysctl("path_manager")
    if pm_name is None:
        pm_type = read_sysctl("pm_type")
        pm_name = {"0": "kernel", "1": "userspace"}.get(pm_type or "", pm_type)
    return SystemFacts(
        kernel=os.uname().release,
        mptcp_sysctls=SYSCTL_DIR.is_dir(),
        enabled=_int(read_sysctl("enabled")),
        path_manager=pm_name,
        available_path_managers=(read_sysctl("available_path_managers") or "").split(),
        available_schedulers=(read_sysctl("available_schedulers") or "").split(),
        scheduler=read_sysctl("scheduler"),
        endpoints=eps,
        limits=limits,
        addresses=addresses(),
        socket_error=try_mptcp_socket(),
        networkmanager=nm_version,
        networkmanager_running=nm_running,
        pm_daemons=pm_daemons(running_programs()),
        notes=notes,
    )

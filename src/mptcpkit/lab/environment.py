"""What a run records about where it ran, so results are comparable and regressions explainable."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

from mptcpkit import __version__
from mptcpkit.lab.backends.base import LabHost

MPTCP_SYSCTLS = (
    "enabled",
    "path_manager",
    "pm_type",
    "scheduler",
    "available_schedulers",
    "available_path_managers",
    "checksum_enabled",
    "allow_join_initial_addr_port",
    "add_addr_timeout",
    "stale_loss_cnt",
    "blackhole_timeout",
    "close_timeout",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mptcp_sysctls(host: LabHost | None = None) -> dict[str, str]:
    """net.mptcp.* as seen by `host` (or this machine)."""
    values = {}
    for name in MPTCP_SYSCTLS:
        key = f"net.mptcp.{name}"
        try:
            values[name] = (
                host.sysctl(key)
                if host is not None
                else (Path("/proc/sys/net/mptcp") / name).read_text().strip()
            )
        except Exception:  # absent on this kernel version
            continue
    return values


def capture(label: str | None, backend: str, emulation: str, host: LabHost | None = None) -> dict[str, Any]:
    """The environment block stored with every run."""
    uname = os.uname()
    sysctls = mptcp_sysctls(host)
    release, version = uname.release, uname.version
    if host is not None:  # the kernel under test is the lab hosts' (a VM or a remote machine), not ours
        try:
            release = host.read_file("/proc/sys/kernel/osrelease").strip() or release
            version = host.read_file("/proc/sys/kernel/version").strip() or version
        except Exception:  # an unreadable file must not lose the run
            pass
    return {
        "label": label,
        "hostname": socket.gethostname(),
        "kernel_release": release,
        "kernel_version": version,
        "machine": uname.machine,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "mptcpkit_version": __version__,
        "python": platform.python_version(),
        "backend": backend,
        "emulation": emulation,
        "mptcp_sysctls": sysctls,
        "available_schedulers": sysctls.get("available_schedulers", "").split(),
        "available_path_managers": sysctls.get("available_path_managers", "").split(),
        "congestion_control": _read("/proc/sys/net/ipv4/tcp_available_congestion_control"),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""

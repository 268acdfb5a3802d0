"""Is the process that writes a run still alive? Decides when a "running" run is really "incomplete"."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from mptcpkit.lab.store.model import ProcessRef

Liveness = Literal["alive", "dead", "unknown"]


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None when no such process (or it is a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def current_process() -> ProcessRef:
    pid = os.getpid()
    return ProcessRef(
        hostname=socket.gethostname(), boot_id=boot_id(), pid=pid, start_ticks=start_ticks(pid) or 0
    )


def liveness(ref: ProcessRef) -> Liveness:
    """ "dead" only when sure: same host and (other boot, or no process with that pid and start time)."""
    if ref.hostname != socket.gethostname():
        return "unknown"
    current_boot = boot_id()
    if not current_boot or not ref.boot_id:
        return "unknown"
    if ref.boot_id != current_boot:
        return "dead"
    ticks = start_ticks(ref.pid)
    if ticks is None or ticks != ref.start_ticks:
        return "dead"
    return "alive"

"""Guest processes and their state files: a guest never outlives its owner.

QEMU runs in its own process group, killed on every exit path; a state file under STATE_DIR names the guest,
its owner (pid + start time) and what it made on this machine, so `cleanup_vms()` can find a guest left behind
by an owner killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_DIR = Path("/run/mptcpkit/vm")
WORK_PARENT = Path("/tmp")  # visible inside the guest (the host root is its lower layer)
NAME_PREFIX = "mkt-vm-"


def kill_group(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """SIGTERM the whole process group of `proc` (virtme-run and its QEMU), SIGKILL after `grace`."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of an exited leader
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_ours(pid: int, name: str) -> bool:
    """True when `pid` is a virtme-run or QEMU process started for the guest called `name`."""
    argv = _cmdline(pid)
    return name in argv or any(arg.startswith(f"guest={name}") or arg == name for arg in argv)


def cleanup_vms(*, include_live_owners: bool = False) -> list[str]:
    """Kill guests whose owner died (kill -9) and remove their files; returns the guest names cleaned.

    Only processes whose command line carries a guest name recorded in a state file are touched; guests of a
    process that still runs are left alone unless `include_live_owners` (for `lab down --all`).
    """
    cleaned: list[str] = []
    for state_file in sorted(STATE_DIR.glob(f"{NAME_PREFIX}*.json")):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state_file.unlink(missing_ok=True)
            continue
        name = str(state.get("name", ""))
        owner = int(state.get("owner", 0))
        if not include_live_owners and owner and start_time(owner) == state.get("owner_start"):
            continue  # its owner still runs and will clean up itself
        for pid in (int(state.get("pgid", 0)), _read_pid(Path(str(state.get("pidfile", ""))))):
            if pid and _is_ours(pid, name):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if pid == int(state.get("pgid", 0)):
                        os.killpg(pid, signal.SIGKILL)
                    else:
                        os.kill(pid, signal.SIGKILL)
        for link in state.get("links", []):  # multi-VM mode: TAPs and bridges on this machine
            if str(link).startswith("mk"):
                subprocess.run(["ip", "link", "del", str(link)], capture_output=True, check=False)
        workdir = Path(str(state.get("workdir", "")))
        if workdir.name.startswith(NAME_PREFIX):
            shutil.rmtree(workdir, ignore_errors=True)
        state_file.unlink(missing_ok=True)
        cleaned.append(name)
    return cleaned


def running_vms() -> list[dict[str, Any]]:
    """State of the guests started by mptcpkit that are still recorded (for `lab status`)."""
    states = []
    for state_file in sorted(STATE_DIR.glob(f"{NAME_PREFIX}*.json")):
        with contextlib.suppress(OSError, ValueError):
            states.append(json.loads(state_file.read_text()))
    return states


def start_time(pid: int) -> str | None:
    """The process start time (clock ticks since boot), to tell a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while a guest runs, so `finally` blocks kill it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

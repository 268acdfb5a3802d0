"""Small network-namespace primitives: enter a namespace in-process, find and kill its processes.

Entering a namespace with setns() in the calling thread lets us write /proc/sys/net and open netlink sockets
there without forking a process per step; the socket keeps its namespace after we switch back.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from mptcpkit.errors import LabError
from mptcpkit.lab.sysctl_rules import require_safe_sysctl, sysctl_read_path

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the body with this thread inside network namespace `netns`, then switch back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_RUN_DIR / netns, os.O_RDONLY)
    except FileNotFoundError:
        os.close(own)
        raise LabError(
            f"network namespace {netns} does not exist (was the lab torn down meanwhile?)"
        ) from None
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def write_sysctl(netns: str, key: str, value: str) -> None:
    """Write net.* (or other per-namespace) sysctl `key` inside `netns`."""
    require_safe_sysctl(key, value)
    with entered(netns):
        Path("/proc/sys", *key.split(".")).write_text(value)


def read_sysctl(netns: str | None, key: str) -> str:
    """Read a sysctl inside `netns` (None: the current namespace)."""
    path = sysctl_read_path(key)
    if netns is None:
        return path.read_text().strip()
    with entered(netns):
        return path.read_text().strip()


def list_netns() -> list[str]:
    """Names of the named network namespaces (`ip netns list`)."""
    try:
        return sorted(p.name for p in NETNS_RUN_DIR.iterdir())
    except FileNotFoundError:
        return []


def netns_inode(netns: str) -> int | None:
    """The inode identifying `netns`, or None when it does not exist."""
    try:
        return os.stat(NETNS_RUN_DIR / netns).st_ino
    except FileNotFoundError:
        return None


def pids_in(inodes: set[int]) -> list[int]:
    """Pids of every process whose network namespace is one of `inodes` (like `ip netns pids`)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino in inodes:
                found.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def kill_processes_in(netns_names: list[str], grace: float = 1.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process living in these namespaces; returns the pids found."""
    inodes = {ino for name in netns_names if (ino := netns_inode(name)) is not None}
    if not inodes:
        return []
    me = os.getpid()
    pids = [p for p in pids_in(inodes) if p != me]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids_alive = [p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        if not pids_alive:
            break
        time.sleep(0.02)
    for pid in pids_in(inodes):
        if pid != me:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def delete_netns(name: str) -> None:
    """Delete a named namespace (unmount and remove its file); missing is fine, and so is a name pyroute2 cannot
    encode (a record written before names were validated): then the mount is detached and the file removed here."""
    from pyroute2 import netns as pr_netns

    try:
        pr_netns.remove(name)
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        path = NETNS_RUN_DIR / name
        if "/" in name or name in (".", "..") or not os.path.lexists(path):
            return
        _libc.umount2(os.fsencode(path), 2)  # MNT_DETACH
        with contextlib.suppress(OSError):
            path.unlink()

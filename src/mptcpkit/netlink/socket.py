"""Thin AF_NETLINK socket layer: open (optionally inside a named network namespace), join groups.

A socket belongs to the network namespace of the thread that created it, for its whole life. To open one in
another namespace we setns() a short-lived helper thread, create the socket there and let the thread die: the
calling thread (and the rest of the process) never changes namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mptcpkit.errors import EnvironmentProblem, UsageError

NETLINK_ROUTE = 0
NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")
RCVBUF = 4 * 1024 * 1024
T = TypeVar("T")

# the process already links libc; CDLL(None) finds setns() without ctypes.util (which imports subprocess etc.)
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(netns: str) -> Path:
    """Resolve a namespace name (as `ip netns` makes it) or an explicit path like /proc/PID/ns/net."""
    path = Path(netns) if "/" in netns else NETNS_RUN_DIR / netns
    if not path.exists():
        raise UsageError(f"network namespace {netns!r} not found ({path})")
    return path


def _open_here(protocol: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


def run_in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run `fn` in a short-lived thread that has entered `netns`; the caller's namespace never changes."""
    if netns is None:
        return fn()
    path = netns_path(netns)
    result: list[T] = []
    error: list[BaseException] = []

    def worker() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise EnvironmentProblem(
                        f"cannot enter network namespace {netns!r}: {os.strerror(err)}",
                        hint="entering a namespace needs CAP_SYS_ADMIN (run as root)",
                    )
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread below
            error.append(exc)

    t = threading.Thread(target=worker, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def open_netlink(protocol: int = NETLINK_GENERIC, netns: str | None = None) -> socket.socket:
    """Open and bind an AF_NETLINK socket in `netns` (None = ours), with extended acks on."""
    return run_in_netns(netns, lambda: _open_here(protocol))


def ifindex(dev: str, netns: str | None = None) -> int | None:
    """Interface index of `dev` in `netns`, None if there is no such interface."""

    def lookup() -> int | None:
        try:
            return socket.if_nametoindex(dev)
        except OSError:
            return None

    return run_in_netns(netns, lookup)


def add_membership(sock: socket.socket, group: int) -> None:
    sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)

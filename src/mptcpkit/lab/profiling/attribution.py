"""Which samples belong to the lab: processes inside the lab's network namespaces, and kernel context.

A system-wide profile on a shared machine also samples everyone else (another user's compiler, a VM). The
profiler polls the pids in the lab's namespaces during the window; at folding time, stacks of other processes
get a root frame `[other]COMM` so the differential view can leave them out while the stored stacks stay
complete. Kernel context (pid 0: softirq work on an otherwise idle CPU, ksoftirqd) is counted as the lab's:
veth traffic is processed there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OTHER = "[other]"


def is_other(stack: str) -> bool:
    return stack.startswith(OTHER)


def lab_netns(lab: Any) -> list[str]:
    """The network namespaces of a netns-backend lab (hosts and the emulation's wire), [] for other backends."""
    record = getattr(lab, "record", None)
    names = getattr(record, "all_netns", None)
    return list(names) if names else []


def pids_of(netns: list[str]) -> set[int]:
    from mptcpkit.lab.backends import nsutil

    inodes = {ino for name in netns if (ino := nsutil.netns_inode(name)) is not None}
    return set(nsutil.pids_in(inodes)) if inodes else set()


@dataclass
class PidWatch:
    """Collect the pids in `netns` every `interval` seconds until stopped (processes come and go)."""

    netns: list[str]
    interval: float = 0.3
    pids: set[int] = field(default_factory=set)
    lookup: Callable[[list[str]], set[int]] = pids_of
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.netns:
            return
        self._thread = threading.Thread(target=self._run, name="profile-pids", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.pids |= self.lookup(self.netns)
            if self._stop.wait(self.interval):
                return

    def stop(self) -> set[int] | None:
        """The pids seen; None when nothing was watched (all samples then count as the lab's)."""
        self._stop.set()
        if self._thread is None:
            return None
        self._thread.join(timeout=5)
        self.pids |= self.lookup(self.netns)
        return self.pids


def lab_sample(pid: int, comm: str, lab_pids: set[int]) -> bool:
    return pid in lab_pids or pid == 0 or comm.startswith("ksoftirqd")

"""The forwarder's scheduling policy: SCHED_RR while lightly loaded, nice -20 once busy (see Priority).

Stdlib only, like the forwarder, which loads it as a sibling file when it runs as a script (``python -I``).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import time

SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}.get(os.uname().machine)
FAIR_SLICE_NS = 100_000


def set_priority(priority: str) -> None:
    """Scheduling class, so frames leave on time on a busy machine.

    "rr" = SCHED_RR 1: wake-ups preempt ordinary tasks at once (tightest timing), but a saturated
    emulator would then starve every ordinary task on its CPU (up to the kernel's RT throttling).
    "fair" = nice -20 with a 0.1 ms EEVDF slice: quick wake-ups, still sharing the CPU fairly.
    "normal" = nice 0. ("adaptive" switches between rr and fair, see Priority.)
    """
    if priority == "rr":
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        return
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    if priority == "fair":
        os.setpriority(os.PRIO_PROCESS, 0, -20)
        if SYS_SCHED_SETATTR is not None:
            # struct sched_attr VER0 (48 bytes): size, policy, flags, nice, priority, runtime, deadline, period
            attr = struct.pack("IIQiIQQQ", 48, os.SCHED_OTHER, 0, -20, 0, FAIR_SLICE_NS, 0, 0)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall(SYS_SCHED_SETATTR, 0, attr, 0)  # before 6.12 slices are ignored: nice still helps
    else:
        os.setpriority(os.PRIO_PROCESS, 0, 0)


class Priority:
    """The "adaptive" policy: SCHED_RR while the emulator is lightly loaded (probes, Mbit/s links), where
    timing matters; fair nice -20 once it uses more than half a CPU (Gbit/s bulk), so it never
    monopolises a core. Re-evaluated every watch interval from the process's own CPU time.
    """

    BUSY, IDLE = 0.5, 0.25

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.current = ""
        self.switches = 0
        self.last_cpu = self._cpu()
        self.last_wall = time.monotonic()
        self.apply("rr" if policy == "adaptive" else policy)

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system

    def apply(self, priority: str) -> None:
        if priority == self.current:
            return
        try:
            set_priority(priority)
        except OSError as e:  # no CAP_SYS_NICE: keep running at normal priority
            print(f"forwarder: cannot set priority {priority}: {e}", file=sys.stderr)
            self.policy = "normal"
            return
        self.current = priority
        self.switches += 1

    def tick(self, now: float) -> None:
        if self.policy != "adaptive":
            return
        cpu = self._cpu()
        busy = (cpu - self.last_cpu) / max(now - self.last_wall, 1e-3)
        self.last_cpu, self.last_wall = cpu, now
        if self.current == "rr" and busy > self.BUSY:
            self.apply("fair")
        elif self.current == "fair" and busy < self.IDLE:
            self.apply("rr")

"""CPU cost of moving bytes: process user+system time of both ends plus the kernel's softirq time.

Why three sources: the engine processes account their own syscall work (rusage, reported in each
`TrafficResult.cpu`), but most of the TCP/MPTCP receive path and the veth forwarding run in softirq context, on
whatever task happens to be on the CPU, and are charged to no process. So the namespace hosts are pinned to
separate CPUs (sender on one, receiver on the other, `sched_setaffinity` on every thread of every process in
the host's namespace) and the per-CPU softirq time from /proc/stat is sampled every 50 ms; a flow's softirq
cost is the increase over its own [start, end] window, so two flows run one after the other in the same
repetition (MPTCP, then TCP) are told apart.

`perf stat` is used where it helps: with a hardware PMU, each pinned process is attached to
`perf stat -e task-clock,cycles,instructions` (cycles and instructions per byte). Without a PMU (this machine,
most VMs) cycles are not supported, system-wide `cpu-clock` only counts wall time, and process task-clock equals
rusage: then perf is not used. The result always records the method, the CPUs and the load average, because
/proc/stat is machine-wide and any other load on the pinned CPUs adds to the softirq figure.

Scenario files switch this on with a `[cpu]` table (see docs/traffic.md):

    [cpu]
    pin = { client = 0, server = 1 }   # default: client on CPU 0, server on the last CPU
    perf = "auto"                      # auto | off
"""

from __future__ import annotations

import bisect
import contextlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mptcpkit.lab.backends import nsutil

if TYPE_CHECKING:
    from mptcpkit.lab.backends.base import Lab
    from mptcpkit.lab.scenarios.spec import ScenarioSpec

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SAMPLE_S = 0.05
PIN_POLL_S = 0.005
PERF_EVENTS = "task-clock,cycles,instructions"


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """One CPU's cumulative times (seconds) from a /proc/stat `cpuN` line."""

    user: float
    nice: float
    system: float
    idle: float
    iowait: float
    irq: float
    softirq: float
    steal: float = 0.0

    @property
    def busy(self) -> float:
        return self.user + self.nice + self.system + self.irq + self.softirq + self.steal


def parse_proc_stat(text: str, tick: float = 1.0 / CLK_TCK) -> dict[int, CpuTimes]:
    """Per-CPU times from /proc/stat (the aggregate `cpu` line is skipped)."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        parts = line.split()
        nums = [int(v) * tick for v in parts[1:9]]
        nums += [0.0] * (8 - len(nums))
        out[int(parts[0][3:])] = CpuTimes(*nums)
    return out


def read_proc_stat() -> dict[int, CpuTimes]:
    return parse_proc_stat(Path("/proc/stat").read_text())


def parse_perf_stat(text: str) -> dict[str, float | None]:
    """`perf stat -x,` output -> event -> value (task-clock in ms; None when `<not supported>`/`<not counted>`)."""
    out: dict[str, float | None] = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) < 3 or line.startswith("#"):
            continue
        value, event = parts[0], parts[2]
        if not event:
            continue
        try:
            out[event.split(":")[0]] = float(value)
        except ValueError:
            out[event.split(":")[0]] = None
    return out


def perf_supports_cycles() -> bool:
    """True when `perf stat -e cycles` counts (a hardware PMU is there)."""
    try:
        cp = subprocess.run(
            ["perf", "stat", "-x,", "-e", "cycles", "--", "true"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return parse_perf_stat(cp.stderr).get("cycles") is not None


@dataclass(slots=True)
class SoftirqSeries:
    """(unix time, per-CPU softirq+irq seconds) samples; `between` interpolates a window's increase."""

    cpus: tuple[int, ...]
    times: list[float] = field(default_factory=list)
    values: list[dict[int, float]] = field(default_factory=list)

    def add(self, t: float, stat: Mapping[int, CpuTimes]) -> None:
        self.times.append(t)
        self.values.append({c: stat[c].softirq + stat[c].irq for c in self.cpus if c in stat})

    def _at(self, t: float, cpu: int) -> float:
        i = bisect.bisect_left(self.times, t)
        if i <= 0:
            return self.values[0].get(cpu, 0.0)
        if i >= len(self.times):
            return self.values[-1].get(cpu, 0.0)
        t0, t1 = self.times[i - 1], self.times[i]
        v0, v1 = self.values[i - 1].get(cpu, 0.0), self.values[i].get(cpu, 0.0)
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1

    def between(self, start: float, end: float) -> dict[int, float]:
        """Softirq+irq seconds each CPU spent in [start, end] (0 when nothing was sampled)."""
        if not self.times:
            return {c: 0.0 for c in self.cpus}
        return {c: max(0.0, self._at(end, c) - self._at(start, c)) for c in self.cpus}


def default_pins(lab: Lab, hosts: tuple[str, ...] = ("client", "server")) -> dict[str, int]:
    """Client on CPU 0, server on the last CPU the process may use (sender and receiver apart)."""
    cpus = sorted(os.sched_getaffinity(0))
    names = [h.name for h in lab.topology.hosts]
    present = [h for h in hosts if h in names]
    return {h: cpus[0] if i == 0 else cpus[-1] for i, h in enumerate(present)}


class Pinner:
    """Pins every thread of every process in each host's namespace to that host's CPU, while running.

    Threads created after a process was pinned inherit its affinity; new processes are caught by polling
    every 5 ms (engine processes spend far longer than that importing Python before they open sockets).
    With `perf`, each new process also gets a `perf stat -p PID` whose output is collected at the end.
    """

    def __init__(self, namespaces: Mapping[str, tuple[str, int]], perf: bool) -> None:
        self.inodes = {
            ino: (host, cpu) for host, (ns, cpu) in namespaces.items() if (ino := nsutil.netns_inode(ns))
        }
        self.perf = perf
        self.series = SoftirqSeries(tuple(sorted({cpu for _, cpu in namespaces.values()})))
        self.pinned: dict[int, str] = {}
        self.perf_runs: list[tuple[int, str, subprocess.Popen[bytes], Path]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._last_sample = 0.0
        self._me = os.getpid()

    def start(self) -> None:
        self.series.add(time.time(), read_proc_stat())
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(PIN_POLL_S):
            self._pin_new()
            now = time.time()
            if now - self._last_sample >= SAMPLE_S:
                self.series.add(now, read_proc_stat())
                self._last_sample = now

    def _pin_new(self) -> None:
        for pid in nsutil.pids_in(set(self.inodes)):
            if pid == self._me:
                continue
            try:
                host, cpu = self.inodes[os.stat(f"/proc/{pid}/ns/net").st_ino]
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(int(tid), {cpu})
            except (OSError, KeyError):
                continue
            if pid not in self.pinned:
                self.pinned[pid] = host
                if self.perf:
                    self._attach_perf(pid, host)

    def _attach_perf(self, pid: int, host: str) -> None:
        fd, name = tempfile.mkstemp(prefix="mptcpkit-perf-", suffix=".csv")
        os.close(fd)
        argv = ["perf", "stat", "-x,", "-e", PERF_EVENTS, "-p", str(pid), "-o", name]
        with contextlib.suppress(OSError):
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.perf_runs.append((pid, host, proc, Path(name)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.series.add(time.time(), read_proc_stat())

    def perf_results(self) -> list[dict[str, Any]]:
        """Per attached process: host and counters (perf exits when its process does)."""
        out = []
        for pid, host, proc, path in self.perf_runs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=5)
            with contextlib.suppress(OSError):
                out.append({"pid": pid, "host": host, **parse_perf_stat(path.read_text())})
            path.unlink(missing_ok=True)
        return out


def _namespaces(lab: Lab, pins: Mapping[str, int]) -> dict[str, tuple[str, int]]:
    out = {}
    for host, cpu in pins.items():
        netns = getattr(lab.host(host), "netns", None)
        if isinstance(netns, str):
            out[host] = (netns, cpu)
    return out


def method_text(pinned: bool, perf: bool) -> str:
    parts = ["process user+sys (rusage)", "softirq+irq of the pinned CPUs (/proc/stat)"]
    if not pinned:
        parts[1] = "softirq not attributed (hosts not pinned: backend has no namespaces)"
    if perf:
        parts.append("perf stat task-clock,cycles,instructions per process")
    return "; ".join(parts)


@contextlib.contextmanager
def account(lab: Lab, spec: ScenarioSpec, extras: dict[str, Any]) -> Iterator[None]:
    """Repetition hook: pin the hosts, sample softirq, attach perf where useful; results in extras['cpu']."""
    section = spec.sections.get("cpu")
    if section is None:
        yield
        return
    pins = dict(section.get("pin") or default_pins(lab))
    perf = section.get("perf", "auto") == "auto" and perf_supports_cycles()
    namespaces = _namespaces(lab, pins)
    pinner = Pinner(namespaces, perf) if namespaces else None
    load_before = os.getloadavg()
    if pinner is not None:
        pinner.start()
    try:
        yield
    finally:
        if pinner is not None:
            pinner.stop()
        stored = {
            "method": method_text(pinner is not None, perf),
            "pins": pins,
            "load_avg": [round(v, 2) for v in load_before],
            "perf": pinner.perf_results() if pinner is not None else [],
        }
        extras["cpu"] = {**stored, "series": pinner.series if pinner is not None else None}
        extras.setdefault("details", {})["cpu"] = stored


def parse_section(table: Mapping[str, Any]) -> dict[str, Any]:
    """The `[cpu]` table of a scenario file."""
    unknown = set(table) - {"pin", "perf"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} (allowed: pin, perf)")
    pin = table.get("pin", {})
    if not isinstance(pin, Mapping) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pin.values()
    ):
        raise ValueError("pin must be a table of host = CPU number, e.g. { client = 0, server = 1 }")
    perf = table.get("perf", "auto")
    if perf not in ("auto", "off"):
        raise ValueError(f"perf must be 'auto' or 'off', got {perf!r}")
    return {"pin": dict(pin), "perf": perf}

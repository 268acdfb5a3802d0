"""Running `perf`: is it usable here, which event samples, argv builders, and one recording session.

`probe()` answers once per process whether `perf record -a -g` works (binary present, perf_event_paranoid low
enough or root with CAP_PERFMON/CAP_SYS_ADMIN, not refused by a container's seccomp) and which event it really
samples: perf silently falls back from `cycles` to `cpu-clock` where there is no hardware PMU (virtual machines,
this lab machine), so the event is read back from the recording (`perf evlist`) instead of being assumed.
The argv builders are pure; `Recording` is the only part with a process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Events tried in order: the hardware cycle counter where there is a PMU, else the kernel's hrtimer clock.
EVENTS = ("cycles", "cpu-clock")
#: Default sampling frequency (Hz per CPU). 499 (prime: no lockstep with 100/250/1000 Hz timers) costs < 1 %
#: on a CPU-bound MPTCP transfer here; see docs/profiling.md.
DEFAULT_FREQUENCY = 499


@dataclass(frozen=True)
class Support:
    """What `probe` found: usable or not, and why not in one line."""

    ok: bool
    event: str = ""
    perf: str = ""
    version: str = ""
    reason: str = ""


def record_argv(
    perf: str, output: str, *, event: str, frequency: int, duration: float | None = None
) -> list[str]:
    """System-wide, with call stacks (frame pointers: the kernel is built with them; DWARF would cost more),
    time-stamped with CLOCK_MONOTONIC so a window can be cut out by the runner's clock (`time.monotonic()`)."""
    argv = [
        perf,
        "record",
        "-a",
        "-g",
        "-k",
        "mono",
        "-e",
        event,
        "-F",
        str(frequency),
        "-o",
        output,
        "--quiet",
    ]
    if duration is not None:
        argv += ["--", "sleep", f"{duration:.3f}"]
    return argv


def script_argv(
    perf: str,
    data: str,
    *,
    kallsyms: str | None = None,
    vmlinux: str | None = None,
    window: tuple[float, float] | None = None,
) -> list[str]:
    argv = [perf, "script", "-F", "comm,pid,tid,time,event,ip,sym,dso", "-i", data]
    if window is not None:
        argv += ["--time", f"{window[0]:.6f},{window[1]:.6f}"]
    if kallsyms:
        argv += ["--kallsyms", kallsyms]
    if vmlinux:
        argv += ["--vmlinux", vmlinux]
    return argv


def paranoid_level(path: str = "/proc/sys/kernel/perf_event_paranoid") -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


_cache: dict[str, Support] = {}


def probe(perf: str | None = None) -> Support:
    """Can we record system-wide stacks here? Tries a 50 ms recording per event; cached per process/PATH."""
    binary = perf or shutil.which("perf")
    key = f"{binary}:{os.environ.get('PATH', '')}:{paranoid_level()}"
    if key in _cache:
        return _cache[key]
    _cache[key] = support = _probe(binary)
    return support


def _probe(binary: str | None) -> Support:
    if binary is None:
        return Support(False, reason="perf is not installed (Debian: apt install linux-perf)")
    try:
        version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Support(False, perf=binary, reason=f"{binary} does not run: {exc}")
    paranoid = paranoid_level()
    problems = []
    with tempfile.TemporaryDirectory(prefix="mptcpkit-perf-probe-") as tmp:
        for event in EVENTS:
            data = os.path.join(tmp, f"{event}.data")
            argv = record_argv(binary, data, event=event, frequency=99, duration=0.05)
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            except (OSError, subprocess.TimeoutExpired) as exc:
                problems.append(f"{event}: {exc}")
                continue
            if done.returncode != 0 or not os.path.exists(data):
                problems.append(f"{event}: {_first_error(done.stderr)}")
                continue
            used = _recorded_event(binary, data) or event
            return Support(True, event=used, perf=binary, version=version)
    hint = f" (kernel.perf_event_paranoid={paranoid})" if paranoid is not None and paranoid > 1 else ""
    return Support(
        False,
        perf=binary,
        version=version,
        reason=f"perf record -a is not allowed here{hint}: " + "; ".join(problems),
    )


def _first_error(stderr: str) -> str:
    for line in stderr.splitlines():
        line = line.strip()
        if line and not line.startswith(("WARNING", "[")):
            return line[:160]
    return stderr.strip()[:160] or "failed"


def _recorded_event(binary: str, data: str) -> str | None:
    done = subprocess.run([binary, "evlist", "-i", data], capture_output=True, text=True, timeout=20)
    for line in done.stdout.splitlines():
        name = line.strip()
        if name and not name.startswith("dummy"):
            return name.split(":")[0]
    return None


@dataclass
class Recording:
    """One `perf record -a -g` in the background, started at once and stopped (SIGINT, so perf writes a complete
    file) `delay + duration` seconds later or at `stop()`, whichever comes first; `window` is the steady state.

    perf needs 0.5-1.5 s to start system-wide (it first walks every process's memory maps), so it is started at
    the beginning of the repetition, its start-up overlapping the warm-up; only samples inside the window
    (from `delay` on, by CLOCK_MONOTONIC) are folded (`perf script --time`).
    """

    support: Support
    output: Path
    frequency: int = DEFAULT_FREQUENCY
    delay: float = 1.0
    duration: float | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    error: str | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="perf-record", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        argv = record_argv(
            self.support.perf, str(self.output), event=self.support.event, frequency=self.frequency
        )
        with self._lock:
            if self._done.is_set():
                return
            try:
                self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            except OSError as exc:
                self.error = str(exc)
                return
            self.started_at = time.monotonic() + self.delay
        if self.duration is not None:
            self._done.wait(self.delay + self.duration)
            self._interrupt()

    def _interrupt(self) -> None:
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                if self.stopped_at is None:
                    self.stopped_at = time.monotonic()

    def stop(self) -> Path | None:
        """End the recording (if still running) and wait for perf; the data file, or None (see `error`)."""
        self._done.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(timeout=10)
        proc = self._proc
        if proc is None:
            self.error = self.error or "the repetition ended before the steady state"
            return None
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        if not self.output.exists() or self.output.stat().st_size == 0:
            self.error = (
                f"perf exited with {proc.returncode}: {_first_error(stderr.decode(errors='replace'))}"
            )
            return None
        return self.output

    @property
    def window(self) -> tuple[float, float] | None:
        """(start, end) of the steady state in CLOCK_MONOTONIC seconds; None if it never began."""
        if self.started_at is None or self.stopped_at is None or self.stopped_at <= self.started_at:
            return None
        return self.started_at, self.stopped_at

    @property
    def seconds(self) -> float:
        window = self.window
        return window[1] - window[0] if window else 0.0


def script(
    support: Support,
    data: Path,
    *,
    kallsyms: str | None = None,
    vmlinux: str | None = None,
    window: tuple[float, float] | None = None,
) -> str:
    """`perf script` text of a recording (symbols resolved from /proc/kallsyms unless told otherwise)."""
    done = subprocess.run(
        script_argv(support.perf, str(data), kallsyms=kallsyms, vmlinux=vmlinux, window=window),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.stdout

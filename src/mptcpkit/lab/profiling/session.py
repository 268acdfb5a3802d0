"""The runner's hook: profile the steady state of each profiled repetition, fold it, keep it with the run.

The runner calls `Profiler.repetition(...)` around `scenario.run_once` and `Profiler.finish(...)` after it.
Everything perf-specific stays here; when perf cannot run, the profiler says so once and turns itself off, so the
run goes on without profiles.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mptcpkit.lab.profiling import folded, perf
from mptcpkit.lab.profiling.attribution import PidWatch, lab_netns
from mptcpkit.lab.profiling.storage import Profile, save_profile

#: Seconds skipped at the start of a repetition (connection setup, slow start) and before its end.
WARMUP_S = 1.0
COOLDOWN_S = 0.5


@dataclass
class ProfileOptions:
    """What `lab run --profile` asked for."""

    frequency: int = perf.DEFAULT_FREQUENCY
    symbols: str | None = None
    """vmlinux or System.map of the kernel under test (default: /proc/kallsyms of the running kernel)."""
    artifacts: Path | None = None
    """Directory for the folded stacks as files (default: next to the results database, see artifact_dir)."""
    scenarios: frozenset[str] | None = None
    """Profile only these scenarios (None: every scenario)."""


def flow_seconds(scenario: Any) -> float | None:
    """How long a repetition's flows run when they are timed (None: sized by bytes, end unknown)."""
    durations = [f.duration for f in getattr(scenario, "flows", ()) if getattr(f, "duration", None)]
    return max(durations) if durations else None


@dataclass
class Profiler:
    """One run's profiling state: the probe result and what was recorded."""

    options: ProfileOptions
    say: Callable[[str], None] = print
    support: perf.Support = field(default_factory=lambda: perf.Support(False, reason="not asked"))
    _tmp: Path | None = None
    _lab_pids: dict[int, set[int] | None] = field(default_factory=dict)
    recorded: int = 0

    @classmethod
    def begin(
        cls,
        options: ProfileOptions | None,
        say: Callable[[str], None],
        backend: str,
        scenarios: Sequence[Any] = (),
    ) -> Profiler:
        """Probe perf; on any problem say it in one line and return a disabled profiler.

        `options` None (no --profile): only scenarios whose file says `profile = true` are profiled.
        """
        wanted = frozenset(s.name for s in scenarios if getattr(getattr(s, "spec", None), "profile", False))
        if options is None and wanted:
            options = ProfileOptions(scenarios=wanted)
        profiler = cls(options or ProfileOptions(), say)
        if options is None:
            return profiler
        if backend not in ("netns",):
            say(f"profiling: not supported on the {backend} backend yet; the run goes on without profiles")
            return profiler
        profiler.support = perf.probe()
        if not profiler.support.ok:
            say(f"profiling: {profiler.support.reason}; the run goes on without profiles")
        return profiler

    @property
    def enabled(self) -> bool:
        return self.support.ok

    def wants(self, scenario: str) -> bool:
        return self.enabled and (self.options.scenarios is None or scenario in self.options.scenarios)

    def environment(self) -> dict[str, Any]:
        """What goes into the run's environment record (the event actually sampled, the frequency)."""
        if not self.enabled:
            return {}
        return {
            "profile": {
                "event": self.support.event,
                "frequency_hz": self.options.frequency,
                "perf": self.support.version,
                "symbols": self.options.symbols or "/proc/kallsyms",
                "warmup_s": WARMUP_S,
            }
        }

    @contextmanager
    def repetition(
        self, scenario: str, flow_seconds: float | None, lab: Any = None
    ) -> Iterator[perf.Recording | None]:
        """Record during the steady state of one repetition: from WARMUP_S to COOLDOWN_S before its end."""
        if not self.wants(scenario):
            yield None
            return
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="mptcpkit-profile-"))
        duration = None
        if flow_seconds is not None:
            duration = max(0.5, flow_seconds - WARMUP_S - COOLDOWN_S)
        recording = perf.Recording(
            self.support,
            self._tmp / f"rep-{self.recorded}.data",
            frequency=self.options.frequency,
            delay=WARMUP_S,
            duration=duration,
        )
        watch = PidWatch(lab_netns(lab))
        recording.start()
        watch.start()
        try:
            yield recording
        finally:
            recording.stop()
            self._lab_pids[id(recording)] = watch.stop()

    def finish(
        self, recording: perf.Recording | None, store: Any, run_id: str, scenario: str, rep: int
    ) -> Profile | None:
        """Fold the recording, store it with the run and as a file; None when nothing was recorded."""
        if recording is None:
            return None
        data = recording.output
        if recording.error or not data.exists() or recording.window is None:
            why = recording.error or "the repetition ended before its steady state"
            self.say(f"profiling: {scenario} rep {rep + 1}: no profile ({why})")
            data.unlink(missing_ok=True)
            return None
        symbols = self.options.symbols
        kallsyms = symbols if symbols and "System.map" in Path(symbols).name else None
        vmlinux = symbols if symbols and not kallsyms else None
        lab_pids = self._lab_pids.pop(id(recording), None)
        text = perf.script(self.support, data, kallsyms=kallsyms, vmlinux=vmlinux, window=recording.window)
        data.unlink(missing_ok=True)
        stacks = folded.parse_perf_script(text.splitlines(), lab_pids)
        profile = Profile(
            run_id=run_id,
            scenario=scenario,
            rep=rep,
            event=self.support.event,
            frequency=recording.frequency,
            seconds=recording.seconds,
            stacks=stacks,
        )
        save_profile(store, profile, artifacts=self.options.artifacts)
        self.recorded += 1
        return profile

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

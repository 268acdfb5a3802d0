"""`lab bisect`: find the first bad step of an ordered series by enqueuing midpoints on the fleet.

Each probed step runs SCENARIO with enough repetitions (5 by default) for `lab compare`'s test to decide; a
step is bad when its METRIC is a significant regression against the good end, else good. Runs already in the
store under a step's label (with enough samples) are reused, so an interrupted bisect resumes for free.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mptcpkit.errors import LabError, UsageError
from mptcpkit.lab.analysis.compare import compare
from mptcpkit.lab.fleet.queue import Fleet
from mptcpkit.lab.fleet.spec import JobSpec
from mptcpkit.lab.fleet.steps import Step, built_image
from mptcpkit.lab.store import Result, Store


def search(n: int, is_bad: Callable[[int], bool]) -> int:
    """Index of the first bad step, given step 0 good and step n-1 bad (classic bisection, log2(n) probes)."""
    lo, hi = 0, n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if is_bad(mid):
            hi = mid
        else:
            lo = mid
    return hi


@dataclass
class Bisect:
    fleet: Fleet
    store: Store
    steps: list[Step]
    scenario: str
    metric: str
    machine_class: str
    reps: int = 5
    scale: float | None = None
    repo: Path | None = None
    profile: bool = False
    poll_s: float = 1.0
    log: Callable[[str], None] = print

    def result(self, step: Step) -> Result:
        """The step's result for SCENARIO:METRIC: from the store, or measured now on the fleet."""
        found = self._stored(step)
        if found is not None:
            return found
        kernel = built_image(step, self.repo or Path.cwd()) if step.build else step.kernel
        spec = JobSpec(
            scenarios=[step.scenario or self.scenario],
            reps=self.reps,
            scale=self.scale,
            self_check=False,
            kernel=kernel,
            label=step.label,
            profile=self.profile,
        )
        job_id = self.fleet.submit(spec, self.machine_class, self.reps)
        self.log(
            f"  {step.label}: job {job_id} queued ({self.reps} repetitions on class {self.machine_class})"
        )
        while (row := self.fleet.job(job_id)).state in ("queued", "running"):
            time.sleep(self.poll_s)
        if row.state != "done":
            raise LabError(f"bisect step {step.label}: job {job_id} {row.state}: {row.error or ''}")
        found = self._stored(step)
        if found is None:
            raise LabError(f"bisect step {step.label}: run {row.run_id} has no {self.scenario}:{self.metric}")
        return found

    def _stored(self, step: Step) -> Result | None:
        try:
            run = self.store.get_run(step.label)
        except UsageError:
            return None
        for r in self.store.results(run.run_id):
            if r.scenario == self.scenario and r.metric == self.metric and len(r.samples) >= self.reps:
                return r
        return None

    def run(self, good: str, bad: str) -> Step:
        labels = [s.label for s in self.steps]
        for end in (good, bad):
            if end not in labels:
                raise UsageError(f"{end!r} is not a step label (steps: {', '.join(labels[:8])}...)")
        lo, hi = labels.index(good), labels.index(bad)
        if lo >= hi:
            raise UsageError("--good must come before --bad in the series")
        window = self.steps[lo : hi + 1]
        good_result = self.result(window[0])
        bad_result = self.result(window[-1])
        verdict = compare(good_result.samples, bad_result.samples, good_result.direction).verdict
        if verdict != "regression":
            raise UsageError(
                f"{bad} is not a significant regression of {self.scenario}:{self.metric} against {good} "
                f"({verdict}): nothing to bisect"
            )

        def is_bad(index: int) -> bool:
            probe = self.result(window[index])
            bad_here = compare(good_result.samples, probe.samples, probe.direction).verdict == "regression"
            self.log(
                f"  {window[index].label}: median {probe.median:.4g} {probe.unit} -> {'bad' if bad_here else 'good'}"
            )
            return bad_here

        return window[search(len(window), is_bad)]

"""The lab runner: scenarios x repetitions on a backend, in randomized interleaved order, stored as they finish.

Every scenario's lab is brought up (and self-checked) first, then repetitions of all scenarios are shuffled
together, so slow drifts of the machine (thermal, other load) spread over every scenario instead of biasing the
last one. Each finished repetition is written to the store at once: a run killed half-way stays readable and is
shown as incomplete.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mptcpkit.errors import LabError, UsageError
from mptcpkit.lab import environment
from mptcpkit.lab.backends.base import Backend, Lab
from mptcpkit.lab.fleet import identity as fleet_identity
from mptcpkit.lab.profiling.session import ProfileOptions, Profiler, flow_seconds
from mptcpkit.lab.scenarios.base import Measurement, RepOutcome, Scenario
from mptcpkit.lab.store import Result, Series, Store


@dataclass
class RunOptions:
    """What `mptcpkit lab run` was asked to do."""

    scenarios: list[Scenario]
    reps: int = 3
    label: str | None = None
    emulation: str = "auto"
    seed: int | None = None
    until_ci_pct: float | None = None
    max_reps: int = 10
    self_check: bool = True
    extra_environment: dict[str, Any] = field(default_factory=dict)
    profile: ProfileOptions | None = None  # lab/profiling: perf during the steady state of each repetition


@dataclass
class ScenarioStatus:
    """Per-scenario progress: measurements by metric, failures by repetition."""

    scenario: Scenario
    lab: Lab | None = None
    measurements: dict[str, list[Measurement]] = field(default_factory=lambda: defaultdict(list))
    failures: list[str] = field(default_factory=list)
    reps_done: int = 0
    self_check: list[dict[str, Any]] = field(default_factory=list)
    rep_details: list[dict[str, Any]] = field(default_factory=list)  # per repetition: connections, actions
    profiled: dict[str, list[bool]] = field(
        default_factory=lambda: defaultdict(list)
    )  # per metric, per sample


@dataclass
class RunReport:
    """What the runner hands back: the run id and the per-metric results (also in the store)."""

    run_id: str
    results: list[Result]
    failures: dict[str, list[str]]
    environment: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results) and not any(self.failures.values())


class Reporter:
    """Progress callbacks (the CLI draws rich progress bars; tests pass a silent one)."""

    def total(self, reps: int) -> None: ...
    def stage(self, text: str) -> None: ...
    def rep_done(self, scenario: str, rep: int, outcome: RepOutcome) -> None: ...
    def note(self, text: str) -> None: ...


def aggregate(run_id: str, status: ScenarioStatus) -> list[Result]:
    """Turn per-repetition measurements into one Result per metric (median, score, pass)."""
    results = []
    failed = bool(status.failures)
    spec = status.scenario.spec
    sweep = spec.sweep if spec is not None else None
    params = dict(spec.params) if spec is not None and spec.params else None
    for name, measurements in status.measurements.items():
        first = measurements[0]
        samples = [m.value for m in measurements]
        finite = [v for v in samples if not math.isnan(v)]
        median = statistics.median(finite) if finite else math.nan
        expectations = [m.expected for m in measurements if m.expected is not None]
        expected = statistics.median(expectations) if expectations else None
        score = median / expected if expected and not math.isnan(median) else None
        rule = first.rule
        if rule is not None and expected is not None and not math.isnan(median):
            passed = rule.check(median, expected) and not failed
            rule_text = rule.text(expected, first.unit)
        else:
            passed = not failed
            rule_text = "informational (no analytic expectation)"
        if failed:
            rule_text += f"; every repetition must succeed ({len(status.failures)} failed)"
        results.append(
            Result(
                run_id=run_id,
                scenario=status.scenario.name,
                metric=name,
                unit=first.unit,
                direction=first.better,
                samples=samples,
                expected=expected,
                score=score,
                passed=passed,
                rule=rule_text,
                details={
                    "failures": status.failures,
                    "description": status.scenario.description,
                    "self_check": status.self_check,
                    "reps": status.rep_details,
                    "origin": status.scenario.origin,
                    **({"profiled": status.profiled[name]} if any(status.profiled[name]) else {}),
                },
                sweep=sweep,
                params=params,
            )
        )
    if not status.measurements and failed:
        results.append(
            Result(
                run_id=run_id,
                scenario=status.scenario.name,
                metric="completed",
                unit="",
                direction="higher",
                samples=[0.0],
                expected=1.0,
                score=0.0,
                passed=False,
                rule="the scenario must complete",
                details={"failures": status.failures, "origin": status.scenario.origin},
                sweep=sweep,
                params=params,
            )
        )
    return results


def _order(names: Sequence[str], reps: int, rng: random.Random) -> list[tuple[str, int]]:
    """Randomized, interleaved: each round runs every scenario once, in a fresh random order."""
    order = []
    for rep in range(reps):
        round_ = list(names)
        rng.shuffle(round_)
        order += [(name, rep) for name in round_]
    return order


def run(
    options: RunOptions,
    backend: Backend,
    store: Store,
    reporter: Reporter | None = None,
    on_run_created: Callable[[str], None] | None = None,
) -> RunReport:
    """Run the suite, store everything, return the report. Labs are torn down on every exit path."""
    rep = reporter or Reporter()
    if options.reps < 1:
        raise UsageError("--reps must be at least 1")
    seed = options.seed if options.seed is not None else int(time.time())
    rng = random.Random(seed)
    statuses = {s.name: ScenarioStatus(s) for s in options.scenarios}
    checked: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    try:
        for status in statuses.values():
            topology = status.scenario.topology()
            rep.stage(f"bringing up {status.scenario.name} ({topology.name})")
            try:
                status.lab = backend.up(topology, emulation=options.emulation)
            except LabError as exc:
                _record_setup_failure(options, backend, store, statuses, status.scenario.name, exc)
                raise
            if options.self_check:
                from mptcpkit.lab.selfcheck import self_check

                # Labs whose links are shaped alike share one self-check: the emulation is the same.
                key = tuple((lk.name, lk.a_to_b, lk.b_to_a, lk.mtu) for lk in topology.links)
                if key not in checked:
                    rep.stage(f"self-check of {status.scenario.name}'s links")
                    checked[key] = [c.to_dict() for c in self_check(status.lab, rate_duration=1.5)]
                status.self_check = checked[key]
        first_lab = next(iter(statuses.values())).lab
        emulation = first_lab.info.emulation.get("mode", "none") if first_lab else "none"
        env = environment.capture(
            options.label,
            backend.name,
            emulation,
            first_lab.host(first_lab.topology.hosts[0].name) if first_lab else None,
        )
        env["self_check"] = {name: st.self_check for name, st in statuses.items()}
        env["seed"] = seed
        env.update(options.extra_environment)
        env.update(fleet_identity.from_environment())  # the lab machine, when a fleet worker runs us
        profiler = Profiler.begin(options.profile, rep.note, backend.name, options.scenarios)
        env.update(profiler.environment())
        config = {
            "scenarios": list(statuses),
            "origins": {name: st.scenario.origin for name, st in statuses.items()},
            "reps": options.reps,
            "until_ci_pct": options.until_ci_pct,
            "max_reps": options.max_reps,
            "emulation": options.emulation,
            "backend": backend.name,
        }
        run_record = store.create_run(options.label, env, config)
        if on_run_created:
            on_run_created(run_record.run_id)
        order = _order(list(statuses), options.reps, rng)
        rep.total(len(order))
        status_final = "failed"
        try:
            _execute(order, statuses, store, run_record.run_id, rep, profiler)
            if options.until_ci_pct is not None:
                _until_confident(options, statuses, store, run_record.run_id, rep, rng, profiler)
            # Already stored after each repetition; here only gathered for the report.
            results = [r for status in statuses.values() for r in aggregate(run_record.run_id, status)]
            status_final = "complete"
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (runview): stopped before the end, not a failure
            status_final = "incomplete"
            raise
        finally:
            profiler.close()
            store.finish_run(run_record.run_id, status_final)  # type: ignore[arg-type]
        return RunReport(run_record.run_id, results, {n: s.failures for n, s in statuses.items()}, env)
    finally:
        for status in statuses.values():
            if status.lab is not None:
                status.lab.close()


def _record_setup_failure(
    options: RunOptions,
    backend: Backend,
    store: Store,
    statuses: dict[str, ScenarioStatus],
    scenario: str,
    exc: LabError,
) -> None:
    """A lab that cannot be built (host unreachable, kernel refuses) still leaves a failed run in the store."""
    env = environment.capture(options.label, backend.name, "unknown")
    env["setup_error"] = str(exc)
    env.update(fleet_identity.from_environment())
    run_record = store.create_run(
        options.label, env, {"scenarios": list(statuses), "reps": options.reps, "backend": backend.name}
    )
    statuses[scenario].failures.append(f"setup: {exc}")
    for result in aggregate(run_record.run_id, statuses[scenario]):
        store.add_result(result)
    store.finish_run(run_record.run_id, "failed")


def _execute(
    order: list[tuple[str, int]],
    statuses: dict[str, ScenarioStatus],
    store: Store,
    run_id: str,
    rep: Reporter,
    profiler: Profiler,
) -> None:
    for name, index in order:
        status = statuses[name]
        assert status.lab is not None
        rep.stage(f"{name}: repetition {index + 1}")
        with profiler.repetition(name, flow_seconds(status.scenario), status.lab) as recording:
            try:
                outcome = status.scenario.run_once(status.lab)
            except LabError as exc:
                outcome = RepOutcome([], failure=str(exc))
        profiled = profiler.finish(recording, store, run_id, name, index) is not None
        if profiled:
            outcome.details["profiled"] = True
        if outcome.failure:
            status.failures.append(f"rep {index + 1}: {outcome.failure}")
        status.rep_details.append({"rep": index + 1, "failure": outcome.failure, **outcome.details})
        for measurement in outcome.measurements:
            status.measurements[measurement.metric].append(measurement)
            status.profiled[measurement.metric].append(profiled)
        for series_name, interval, values in outcome.series:
            store.add_series(Series(run_id, name, index, series_name, interval, values))
        status.reps_done += 1
        for result in aggregate(run_id, status):  # upsert: a killed run keeps what it measured
            store.add_result(result)
        rep.rep_done(name, index, outcome)


def _until_confident(
    options: RunOptions,
    statuses: dict[str, ScenarioStatus],
    store: Store,
    run_id: str,
    rep: Reporter,
    rng: random.Random,
    profiler: Profiler,
) -> None:
    """Add repetitions to scenarios whose metrics' median CI is wider than the target, up to max_reps."""
    from mptcpkit.lab.analysis import ci_width_pct

    target = options.until_ci_pct or 0.0
    while True:
        pending = []
        for name, status in statuses.items():
            if status.reps_done >= options.max_reps:
                continue
            widths = [
                ci_width_pct([m.value for m in ms])
                for metric, ms in status.measurements.items()
                if any(m.rule is not None for m in ms)
            ]
            if any(math.isnan(w) or w > target for w in widths):
                pending.append(name)
        if not pending:
            return
        rng.shuffle(pending)
        rep.total(len(pending))
        pending_order = [(name, statuses[name].reps_done) for name in pending]
        _execute(pending_order, statuses, store, run_id, rep, profiler)

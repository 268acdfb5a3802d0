"""What a report shows, as plain data: gathered once from the store, then drawn by plotly, matplotlib or text.

The `collect_*` functions read a Store; everything else here is pure (data in, data out), so the HTML report,
the PNG files, JUnit, Markdown and the web dashboard all draw the very same numbers.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mptcpkit.lab.analysis import MetricComparison, compare_runs, history_change_points
from mptcpkit.lab.store import Result, Run, Series, Store

_RULE = re.compile(r"median\s*(>=|<=)\s*(?:([0-9.eE+-]+)\s*x\s*)?expected")

#: Environment fields shown in the environment table, in this order (others follow, sorted).
ENVIRONMENT_ORDER: tuple[str, ...] = (
    "label",
    "kernel_release",
    "kernel_version",
    "emulation",
    "backend",
    "hostname",
    "cpu_model",
    "cpu_count",
    "machine",
    "congestion_control",
    "mptcpkit_version",
    "python",
    "seed",
)
_ENVIRONMENT_HIDDEN = ("self_check", "mptcp_sysctls")


@dataclass(frozen=True, slots=True)
class PassRule:
    """A pass rule read back from its text: the median must be >= (or <=) `threshold`."""

    op: Literal[">=", "<="]
    threshold: float


def parse_rule(rule: str, expected: float | None) -> PassRule | None:
    """The threshold of "median >= 0.97 x expected (...)" style rules; None for informational ones."""
    match = _RULE.search(rule)
    if match is None or expected is None:
        return None
    factor = float(match.group(2)) if match.group(2) else 1.0
    op: Literal[">=", "<="] = ">=" if match.group(1) == ">=" else "<="
    return PassRule(op, factor * expected)


def misses_rule(result: Result) -> bool:
    """Does the median itself miss the pass rule? (False when the rule is informational or unreadable.)"""
    rule = parse_rule(result.rule, result.expected)
    median = result.median
    if rule is None or median is None or not math.isfinite(median):
        return False
    return not (median >= rule.threshold if rule.op == ">=" else median <= rule.threshold)


def result_state(result: Result) -> Literal["pass", "fail", "warn"]:
    """ "warn": the median meets its rule, but the metric failed because a repetition of the scenario failed."""
    if result.passed:
        return "pass"
    if misses_rule(result):
        return "fail"
    readable = parse_rule(result.rule, result.expected) is not None
    return "warn" if readable or result.rule.startswith("informational") else "fail"


@dataclass(slots=True)
class RepSeries:
    """One repetition's time series: application goodput and each subflow's share (Mbit/s)."""

    rep: int
    interval_s: float
    goodput: list[float]
    subflows: dict[str, list[float]] = field(default_factory=dict)
    cdfs: dict[str, list[float]] = field(default_factory=dict)
    """flow -> latency at the quantiles of cost_metrics.CDF_QUANTILES (us), from `latency-cdf:` series"""

    @property
    def mean_goodput(self) -> float:
        finite = [v for v in self.goodput if math.isfinite(v)]
        if finite:
            return statistics.fmean(finite)
        sums = [sum(vals) for vals in zip(*self.subflows.values(), strict=False)]
        return statistics.fmean(sums) if sums else 0.0


@dataclass(slots=True)
class ScenarioData:
    """Everything the report shows about one scenario of one run."""

    name: str
    description: str
    results: list[Result]
    failures: list[str]
    self_check: list[dict[str, Any]]
    reps: list[RepSeries]
    history: list[MetricHistory] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results) and not self.failures

    @property
    def failed_results(self) -> list[Result]:
        return [r for r in self.results if not r.passed]

    @property
    def missed(self) -> list[tuple[Result, str]]:
        """(result, its own pass rule) of every metric whose median misses that rule.

        A metric that failed only because a repetition failed is left out: the failed repetitions are the
        cause, and are listed on their own.
        """
        out = []
        for r in self.failed_results:
            own_rule = r.rule.split(";")[0].strip()
            if misses_rule(r) or (parse_rule(r.rule, r.expected) is None and not self.failures):
                out.append((r, own_rule))
        return out

    @property
    def typical_rep(self) -> RepSeries | None:
        """The repetition whose mean goodput is the median one: the fairest single picture of the run."""
        return pick_typical(self.reps)

    @property
    def anchor(self) -> str:
        return "s-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.name)


@dataclass(slots=True)
class HistoryPoint:
    run_id: str
    label: str | None
    started_at: str
    median: float
    minimum: float
    maximum: float
    n: int
    current: bool = False

    @property
    def name(self) -> str:
        return self.label or self.run_id[:8]


@dataclass(slots=True)
class ChangeMark:
    """A change point placed on a history: `index` is the first point at the new level."""

    index: int
    run_id: str
    label: str | None
    kind: Literal["regression", "improvement"]
    change_pct: float
    before_median: float
    after_median: float
    p_value: float


@dataclass(slots=True)
class MetricHistory:
    """The per-run medians of one (scenario, metric) on one machine (environment), with change points."""

    scenario: str
    metric: str
    unit: str
    direction: str
    environment_key: str
    points: list[HistoryPoint]
    changes: list[ChangeMark]


@dataclass(slots=True)
class RunData:
    run: Run
    scenarios: list[ScenarioData]
    environment: list[tuple[str, str]]
    sysctls: list[tuple[str, str]]

    @property
    def passed_count(self) -> int:
        return sum(1 for s in self.scenarios if s.passed)

    @property
    def failed(self) -> list[ScenarioData]:
        return [s for s in self.scenarios if not s.passed]

    @property
    def title(self) -> str:
        return run_title(self.run)


@dataclass(slots=True)
class CompareData:
    base: Run
    new: Run
    rows: list[MetricComparison]

    def count(self, verdict: str) -> int:
        return sum(1 for r in self.rows if r.comparison.verdict == verdict)

    @property
    def regressions(self) -> list[MetricComparison]:
        return [r for r in self.rows if r.comparison.verdict == "regression"]

    @property
    def ordered(self) -> list[MetricComparison]:
        """Regressions first, then improvements, inconclusive, unchanged; suite order within each."""
        rank = {"regression": 0, "improvement": 1, "inconclusive": 2, "unchanged": 3}
        return sorted(self.rows, key=lambda r: rank[r.comparison.verdict])

    @property
    def title(self) -> str:
        return f"{run_title(self.base)} vs {run_title(self.new)}"


def run_title(run: Run) -> str:
    return f"{run.label} ({run.run_id})" if run.label else run.run_id


def pick_typical(reps: Sequence[RepSeries]) -> RepSeries | None:
    if not reps:
        return None
    ordered = sorted(reps, key=lambda r: (r.mean_goodput, r.rep))
    return ordered[(len(ordered) - 1) // 2]


def group_series(series: Sequence[Series]) -> list[RepSeries]:
    """Series rows of one scenario -> one RepSeries per repetition, subflows in name order."""
    reps: dict[int, RepSeries] = {}
    for s in sorted(series, key=lambda s: (s.rep, s.name)):
        rep = reps.setdefault(s.rep, RepSeries(s.rep, s.interval_s, []))
        if s.name.startswith("latency-cdf:"):  # not a time series: see report/cost.py
            rep.cdfs[s.name.removeprefix("latency-cdf:")] = list(s.values)
        elif s.name == "goodput":
            rep.goodput = list(s.values)
            rep.interval_s = s.interval_s
        else:
            rep.subflows[s.name.removeprefix("subflow:")] = list(s.values)
            if not rep.goodput:
                rep.interval_s = s.interval_s
    return [reps[k] for k in sorted(reps)]


def scenarios_of(results: Sequence[Result], series: Sequence[Series]) -> list[ScenarioData]:
    """Group a run's results and series by scenario, keeping the suite's order."""
    out: dict[str, ScenarioData] = {}
    for r in results:
        data = out.get(r.scenario)
        if data is None:
            details = r.details
            data = out[r.scenario] = ScenarioData(
                name=r.scenario,
                description=str(details.get("description") or ""),
                results=[],
                failures=[str(f) for f in details.get("failures") or []],
                self_check=[_check_row(c) for c in details.get("self_check") or [] if isinstance(c, dict)],
                reps=[],
            )
        data.results.append(r)
    by_scenario: dict[str, list[Series]] = {}
    for s in series:
        by_scenario.setdefault(s.scenario, []).append(s)
    for name, rows in by_scenario.items():
        if name in out:
            out[name].reps = group_series(rows)
    return list(out.values())


_CHECK_KEYS = (
    "link",
    "quantity",
    "direction",
    "configured",
    "measured",
    "error_pct",
    "tolerance",
    "unit",
    "note",
)


def _check_row(row: dict[str, Any]) -> dict[str, Any]:
    """A self-check row with every column the table shows (older or foreign rows may lack some)."""
    out: dict[str, Any] = dict.fromkeys(_CHECK_KEYS, None)
    out.update(row)
    out["ok"] = bool(row.get("ok", False))
    out["unit"] = out["unit"] or ""
    out["note"] = out["note"] or ""
    return out


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value)
    if value is None:
        return "-"
    return str(value)


def environment_rows(environment: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(main rows, MPTCP sysctl rows) of a run's environment, in a stable reading order."""
    keys = [k for k in ENVIRONMENT_ORDER if k in environment]
    keys += sorted(k for k in environment if k not in ENVIRONMENT_ORDER and k not in _ENVIRONMENT_HIDDEN)
    rows = [(k, _show(environment[k])) for k in keys]
    sysctls = environment.get("mptcp_sysctls")
    sys_rows = [(k, _show(v)) for k, v in sorted(sysctls.items())] if isinstance(sysctls, dict) else []
    return rows, sys_rows


def history_points(pairs: Sequence[tuple[Run, Result]], current: str | None) -> list[HistoryPoint]:
    points = []
    for run, res in pairs:
        finite = [v for v in res.samples if math.isfinite(v)]
        if not finite:
            continue
        points.append(
            HistoryPoint(
                run_id=run.run_id,
                label=run.label,
                started_at=run.started_at.strftime("%Y-%m-%d %H:%M"),
                median=statistics.median(finite),
                minimum=min(finite),
                maximum=max(finite),
                n=len(finite),
                current=run.run_id == current,
            )
        )
    return points


# -- reading the store --------------------------------------------------------------------------------------


def collect_history(
    store: Store, scenario: str, metric: str, environment_key: str | None, current: str | None = None
) -> MetricHistory | None:
    """One metric's history on one machine with its change points; None when the metric was never measured.

    Without `environment_key`, the machine of the newest run that measured it is used: change points are only
    meaningful between runs on the same machine.
    """
    pairs = store.history(scenario, metric, environment_key)
    if not pairs:
        return None
    key = environment_key or pairs[-1][0].environment_key
    pairs = [(run, res) for run, res in pairs if run.environment_key == key]
    points = history_points(pairs, current)
    index = {p.run_id: i for i, p in enumerate(points)}
    changes = []
    if len(points) >= 2:
        for ch in history_change_points(store, scenario, metric, key):
            if ch.run.run_id in index:
                changes.append(
                    ChangeMark(
                        index=index[ch.run.run_id],
                        run_id=ch.run.run_id,
                        label=ch.run.label,
                        kind=ch.kind,
                        change_pct=ch.change.change_pct,
                        before_median=ch.change.before_median,
                        after_median=ch.change.after_median,
                        p_value=ch.change.p_value,
                    )
                )
    last = pairs[-1][1]
    return MetricHistory(scenario, metric, last.unit, last.direction, key, points, changes)


def collect_run(store: Store, run_ref: str, *, with_history: bool = True) -> RunData:
    """Everything a run report shows. `run_ref`: id, id prefix, label or "latest" (UsageError otherwise)."""
    run = store.get_run(run_ref)
    scenarios = scenarios_of(store.results(run.run_id), store.series(run.run_id))
    if with_history:
        for scenario in scenarios:
            for result in scenario.results:
                hist = collect_history(store, scenario.name, result.metric, run.environment_key, run.run_id)
                if hist is not None and len(hist.points) >= 2:
                    scenario.history.append(hist)
    env_rows, sysctls = environment_rows(run.environment)
    return RunData(run, scenarios, env_rows, sysctls)


def collect_compare(store: Store, base_ref: str, new_ref: str) -> CompareData:
    base, new = store.get_run(base_ref), store.get_run(new_ref)
    return CompareData(base, new, compare_runs(store, base.run_id, new.run_id))


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for tables: 4 significant digits, "-" for missing or not-a-number."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def fmt_pct(value: float | None, signed: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) < 0.05:
        value = 0.0  # no "-0.0 %"
    return f"{value:+.1f} %" if signed else f"{value:.1f} %"


def metric_label(result: Result | MetricComparison) -> str:
    return f"{result.metric} [{result.unit}]" if result.unit else result.metric

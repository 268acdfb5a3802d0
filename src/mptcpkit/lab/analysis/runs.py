"""Statistics over stored runs: A/B comparison of two runs and change points over a metric's history.

Thin layer: reads the store, hands raw samples to the pure functions in compare.py and changepoints.py.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mptcpkit.lab.analysis.changepoints import ChangePoint, change_points
from mptcpkit.lab.analysis.compare import DEFAULT_MIN_EFFECT, Comparison, compare
from mptcpkit.lab.profiling.marks import figure_samples
from mptcpkit.lab.store import Result, Run, Store

MinEffect = float | Mapping[str, float]
"""One fraction for every metric, or per metric name (missing names use DEFAULT_MIN_EFFECT)."""


def min_effect_for(metric: str, min_effect: MinEffect | None) -> float:
    if min_effect is None:
        return DEFAULT_MIN_EFFECT
    if isinstance(min_effect, Mapping):
        return float(min_effect.get(metric, DEFAULT_MIN_EFFECT))
    return float(min_effect)


@dataclass(frozen=True, slots=True)
class MetricComparison:
    """One (scenario, metric) of a run comparison; `base` or `new` is None when only one run has it."""

    scenario: str
    metric: str
    unit: str
    direction: Literal["higher", "lower"]
    base: Result | None
    new: Result | None
    comparison: Comparison

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types: `lab compare --json` and the dashboard's API."""
        c = self.comparison
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "unit": self.unit,
            "direction": self.direction,
            "verdict": c.verdict,
            "reason": c.reason,
            "change_pct": c.change_pct,
            "ci_low_pct": c.ci_low,
            "ci_high_pct": c.ci_high,
            "p_value": c.p_value,
            "base_median": c.base_median,
            "new_median": c.new_median,
            "n_base": c.n_base,
            "n_new": c.n_new,
            "min_effect": c.min_effect,
        }


def compare_runs(
    store: Store,
    base_ref: str,
    new_ref: str,
    *,
    min_effect: MinEffect | None = None,
) -> list[MetricComparison]:
    """Compare every (scenario, metric) of two runs (ids, id prefixes, labels or "latest")."""
    base_run, new_run = store.get_run(base_ref), store.get_run(new_ref)
    base = {(r.scenario, r.metric): r for r in store.results(base_run.run_id)}
    new = {(r.scenario, r.metric): r for r in store.results(new_run.run_id)}
    keys = list(base) + [k for k in new if k not in base]
    out = []
    for scenario, metric in keys:
        b, n = base.get((scenario, metric)), new.get((scenario, metric))
        ref = n or b
        assert ref is not None
        effect = min_effect_for(metric, min_effect)
        if b is None or n is None:
            which = "new" if b is None else "base"
            cmp = Comparison(
                None,
                None,
                None,
                None,
                "inconclusive",
                f"only the {which} run has this metric",
                n_base=len(b.samples) if b else 0,
                n_new=len(n.samples) if n else 0,
                min_effect=effect,
            )
        else:
            # Profiled repetitions are left out when enough unprofiled ones remain (lab/profiling/marks.py).
            cmp = compare(
                figure_samples(b.samples, b.details),
                figure_samples(n.samples, n.details),
                n.direction,
                effect,
            )
        out.append(MetricComparison(scenario, metric, ref.unit, ref.direction, b, n, cmp))
    return out


@dataclass(frozen=True, slots=True)
class HistoryChange:
    """A change point in the history of one (scenario, metric, environment), tied to the runs around it."""

    scenario: str
    metric: str
    environment_key: str
    run: Run
    """The first run at the new level: the one that introduced the change (its label names the suspect)."""
    previous_run: Run
    """The last run at the old level."""
    change: ChangePoint
    kind: Literal["regression", "improvement"]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types: `lab history --json` and the dashboard's API."""
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "environment_key": self.environment_key,
            "kind": self.kind,
            "run": run_brief(self.run),
            "previous_run": run_brief(self.previous_run),
            "change_pct": self.change.change_pct,
            "before_median": self.change.before_median,
            "after_median": self.change.after_median,
            "p_value": self.change.p_value,
        }


def run_brief(run: Run) -> dict[str, Any]:
    """Who a run is, in plain JSON types (without its results)."""
    return {
        "run_id": run.run_id,
        "label": run.label,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": None if run.finished_at is None else run.finished_at.isoformat(),
        "environment_key": run.environment_key,
        "kernel_release": run.environment.get("kernel_release"),
    }


def history_change_points(
    store: Store,
    scenario: str,
    metric: str,
    environment_key: str | None = None,
    *,
    min_effect: MinEffect | None = None,
) -> list[HistoryChange]:
    """Change points in the per-run medians of one metric, separately for each environment (machine)."""
    history = [(run, res) for run, res in store.history(scenario, metric, environment_key) if res.samples]
    groups: dict[str, list[tuple[Run, Result]]] = {}
    for run, res in history:
        groups.setdefault(run.environment_key, []).append((run, res))
    effect = min_effect_for(metric, min_effect)
    found = []
    for key, items in groups.items():
        medians = [statistics.median(res.samples) for _, res in items]
        direction = items[-1][1].direction
        for cp in change_points(medians, min_effect=effect):
            worse = cp.change_pct < 0 if direction == "higher" else cp.change_pct > 0
            found.append(
                HistoryChange(
                    scenario,
                    metric,
                    key,
                    items[cp.index][0],
                    items[cp.index - 1][0],
                    cp,
                    "regression" if worse else "improvement",
                )
            )
    found.sort(key=lambda h: h.run.started_at)
    return found

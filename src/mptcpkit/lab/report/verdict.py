"""The latest run judged against a baseline, for the dashboard's Regressions page and /api/regressions/latest.

Change points need about 5 runs on each side; a single slower run shows up here at once. The baseline is the newest
older run on the same machine whose label has the same pattern (digits ignored), or one the user pins. The
verdicts are `lab compare`'s (compare_runs), so the page and the CLI never disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mptcpkit.errors import UsageError
from mptcpkit.lab.analysis.runs import MetricComparison, compare_runs, run_brief
from mptcpkit.lab.store import Run, Store


def label_pattern(label: str | None) -> str | None:
    """'nightly-2026-11-29' -> 'nightly-#-#-#': runs of one series share a pattern, whatever their numbers."""
    return None if label is None else re.sub(r"[0-9]+", "#", label)


def baseline_of(runs: list[Run], latest: Run) -> Run | None:
    """The run `latest` is judged against: the newest older run on the same machine with the same label pattern."""
    pattern = label_pattern(latest.label)
    for run in runs:
        if run.started_at >= latest.started_at or run.run_id == latest.run_id:
            continue
        if run.environment_key == latest.environment_key and label_pattern(run.label) == pattern:
            return run
    return None


@dataclass(slots=True)
class LatestVerdict:
    """The latest run against its baseline, by `lab compare`'s rules: one verdict per metric and overall."""

    latest: Run
    baseline: Run | None
    pinned: bool
    rows: list[MetricComparison]

    @property
    def counts(self) -> dict[str, int]:
        out = {"regression": 0, "improvement": 0, "unchanged": 0, "inconclusive": 0}
        for row in self.rows:
            out[row.comparison.verdict] = out.get(row.comparison.verdict, 0) + 1
        return out

    @property
    def verdict(self) -> str:
        """'regression' if any metric regressed, else 'improvement', 'unchanged', 'inconclusive' or 'no baseline'."""
        if self.baseline is None:
            return "no baseline"
        counts = self.counts
        for verdict in ("regression", "improvement", "unchanged"):
            if counts.get(verdict):
                return verdict
        return "inconclusive"

    def to_json(self) -> dict[str, Any]:
        return {
            "latest": run_brief(self.latest),
            "baseline": run_brief(self.baseline) if self.baseline is not None else None,
            "pinned": self.pinned,
            "verdict": self.verdict,
            "counts": self.counts,
            "metrics": [r.to_json() for r in self.rows],
        }


def latest_verdict(store: Store, pinned: str | None = None) -> LatestVerdict | None:
    """The latest run against `pinned` (a run reference) or, by default, `baseline_of` it; None without runs."""
    runs = store.list_runs(limit=None)
    if not runs:
        return None
    latest = runs[0]
    baseline = store.get_run(pinned) if pinned is not None else baseline_of(runs, latest)
    if baseline is not None and baseline.run_id == latest.run_id:
        raise UsageError("the baseline is the latest run itself; pin an older run")
    rows = compare_runs(store, baseline.run_id, latest.run_id) if baseline is not None else []
    order = {"regression": 0, "improvement": 1, "inconclusive": 2, "unchanged": 3}
    rows.sort(key=lambda r: (order.get(r.comparison.verdict, 4), r.scenario, r.metric))
    return LatestVerdict(latest, baseline, pinned is not None, rows)

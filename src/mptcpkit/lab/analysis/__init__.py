"""Statistics for the lab: A/B comparison, median confidence intervals, change points in history.

The functions on raw samples (compare, ci_width_pct, change_points) are pure; compare_runs and
history_change_points read a Store. docs/statistics.md explains the rules in plain words.
"""

from mptcpkit.lab.analysis.changepoints import ChangePoint, change_points
from mptcpkit.lab.analysis.ci import ci_width_pct, median_ci
from mptcpkit.lab.analysis.compare import DEFAULT_MIN_EFFECT, Comparison, Verdict, compare
from mptcpkit.lab.analysis.runs import (
    HistoryChange,
    MetricComparison,
    MinEffect,
    compare_runs,
    history_change_points,
    min_effect_for,
)

__all__ = [
    "DEFAULT_MIN_EFFECT",
    "ChangePoint",
    "Comparison",
    "HistoryChange",
    "MetricComparison",
    "MinEffect",
    "Verdict",
    "change_points",
    "ci_width_pct",
    "compare",
    "compare_runs",
    "history_change_points",
    "median_ci",
    "min_effect_for",
]

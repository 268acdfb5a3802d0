"""Differential profiles of two stored runs, for `lab compare --profile`, the HTML report, the dashboard and the
fleet's bisect: which scenarios to look at, and the diffs themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mptcpkit.lab.profiling.diff import ProfileDiff, differential
from mptcpkit.lab.profiling.storage import load_profiles, profiled_scenarios


def flagged_scenarios(rows: Iterable[Any]) -> list[str]:
    """Scenarios with a regression verdict on any metric (throughput, CPU cost, latency...), in row order."""
    out: list[str] = []
    for row in rows:
        if row.comparison.verdict == "regression" and row.scenario not in out:
            out.append(row.scenario)
    return out


def scenario_diff(
    store: Any, base_run: str, new_run: str, scenario: str, *, top: int = 25
) -> ProfileDiff | None:
    """The differential profile of one scenario between two runs (ids), or None when a side has no profile."""
    base = load_profiles(store, base_run, scenario)
    new = load_profiles(store, new_run, scenario)
    if not base or not new:
        return None
    event = new[0].event if new[0].event == base[0].event else f"{base[0].event} -> {new[0].event}"
    return differential(scenario, [p.stacks for p in base], [p.stacks for p in new], top=top, event=event)


def compare_profiles(
    store: Any, base_run: str, new_run: str, rows: Sequence[Any], *, top: int = 25
) -> tuple[list[ProfileDiff], str]:
    """Diffs for the flagged regressions (or, when none is flagged, every scenario profiled on both sides).

    Returns the diffs and a one-line note on what was chosen and what is missing.
    """
    both = sorted(set(profiled_scenarios(store, base_run)) & set(profiled_scenarios(store, new_run)))
    flagged = flagged_scenarios(rows)
    if flagged:
        chosen = [s for s in flagged if s in both]
        missing = [s for s in flagged if s not in both]
        note = f"profiles of the {len(flagged)} regressed scenario(s)"
        if missing:
            note += f"; no profile on both sides for {', '.join(missing)} (run them with --profile)"
    else:
        chosen = both
        note = "no regression flagged: profiles of every scenario profiled in both runs"
    if not both:
        note = "neither pair of runs has profiles of the same scenario (record them with `lab run --profile`)"
    diffs = [d for s in chosen if (d := scenario_diff(store, base_run, new_run, s, top=top)) is not None]
    return diffs, note

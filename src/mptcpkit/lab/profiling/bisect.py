"""The hook for the fleet's bisect (issue 12): attach the differential profile of the first bad step.

The bisect knows the run of the last good kernel and of the first bad one; it calls `first_bad_step_profile`
and puts the result (plain JSON, with the flame graph tree) into its report, or renders it with `profile_html`.
"""

from __future__ import annotations

from typing import Any

from mptcpkit.lab.profiling.flamegraph import section_html
from mptcpkit.lab.profiling.views import scenario_diff


def first_bad_step_profile(
    store: Any, good_run: str, bad_run: str, scenario: str, *, top: int = 25
) -> dict[str, Any] | None:
    """JSON of the differential profile good -> bad for `scenario` (None when either run has no profile)."""
    diff = scenario_diff(
        store, store.get_run(good_run).run_id, store.get_run(bad_run).run_id, scenario, top=top
    )
    if diff is None:
        return None
    return diff.to_json(top) | {"flame": diff.flame, "good_run": good_run, "bad_run": bad_run}


def first_bad_step_html(store: Any, good_run: str, bad_run: str, scenario: str) -> str:
    """The same as a self-contained HTML section (tables + differential flame graph), '' without profiles."""
    diff = scenario_diff(store, store.get_run(good_run).run_id, store.get_run(bad_run).run_id, scenario)
    if diff is None:
        return ""
    return section_html([diff], note=f"first bad step: {good_run} -> {bad_run}")

"""JUnit XML for CI systems: one test case per scenario; a failed scenario's message names the failed metrics
and their pass rules. With `compare=(base, new)`, a scenario fails when one of its metrics regressed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from mptcpkit.errors import UsageError
from mptcpkit.lab.analysis import MetricComparison
from mptcpkit.lab.report.data import (
    CompareData,
    RunData,
    ScenarioData,
    collect_compare,
    collect_run,
    fmt,
    fmt_pct,
    metric_label,
)
from mptcpkit.lab.store import Store


def _metric_line(s: ScenarioData) -> list[str]:
    return [
        f"{metric_label(r)}: median {fmt(r.median)} (n={len(r.samples)}), expected {fmt(r.expected)}, "
        f"{'pass' if r.passed else 'FAIL'}: {r.rule}"
        for r in s.results
    ]


def _duration(s: ScenarioData) -> float:
    """Measured time of the scenario: the length of its recorded series (0 when none)."""
    return round(
        sum(
            max((len(v) for v in [r.goodput, *r.subflows.values()]), default=0) * r.interval_s for r in s.reps
        ),
        3,
    )


def run_junit(data: RunData) -> str:
    suite_name = f"mptcpkit lab {data.title}"
    suites = ET.Element("testsuites", name="mptcpkit lab")
    failures = len(data.failed)
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=suite_name,
        tests=str(len(data.scenarios)),
        failures=str(failures),
        errors="0",
        skipped="0",
        timestamp=data.run.started_at.strftime("%Y-%m-%dT%H:%M:%S"),
        hostname=str(data.run.environment.get("hostname", "")),
    )
    props = ET.SubElement(suite, "properties")
    for key in ("run_id", "label", "status"):
        ET.SubElement(props, "property", name=key, value=str(getattr(data.run, key) or ""))
    for key, value in data.environment:
        if key == "label":
            continue
        ET.SubElement(props, "property", name=key, value=value)
    for s in data.scenarios:
        case = ET.SubElement(suite, "testcase", classname="mptcpkit.lab", name=s.name, time=str(_duration(s)))
        if not s.passed:
            parts = [
                f"{r.metric} {fmt(r.median)}{(' ' + r.unit) if r.unit else ''}: needs {rule}"
                for r, rule in s.missed
            ]
            if s.failures:
                parts.append(f"{len(s.failures)} failed repetition(s)")
            failure = ET.SubElement(case, "failure", message="; ".join(parts), type="ScenarioFailed")
            failure.text = "\n".join(_metric_line(s) + s.failures)
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(([s.description] if s.description else []) + _metric_line(s))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _cmp_line(r: MetricComparison) -> str:
    c = r.comparison
    return (
        f"{metric_label(r)}: {fmt(c.base_median)} -> {fmt(c.new_median)}, change {fmt_pct(c.change_pct)}, "
        f"{c.verdict}: {c.reason}"
    )


def compare_junit(data: CompareData) -> str:
    by_scenario: dict[str, list[MetricComparison]] = {}
    for row in data.rows:
        by_scenario.setdefault(row.scenario, []).append(row)
    suites = ET.Element("testsuites", name="mptcpkit lab compare")
    regressed = [name for name, rows in by_scenario.items() if _regressions(rows)]
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"mptcpkit lab compare {data.title}",
        tests=str(len(by_scenario)),
        failures=str(len(regressed)),
        errors="0",
        skipped="0",
        timestamp=data.new.started_at.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="base", value=data.base.run_id)
    ET.SubElement(props, "property", name="new", value=data.new.run_id)
    for name, rows in by_scenario.items():
        case = ET.SubElement(suite, "testcase", classname="mptcpkit.lab.compare", name=name, time="0")
        bad = _regressions(rows)
        if bad:
            message = "; ".join(
                f"{r.metric} regressed {fmt_pct(r.comparison.change_pct)} "
                f"(CI {fmt_pct(r.comparison.ci_low)} .. {fmt_pct(r.comparison.ci_high)})"
                for r in bad
            )
            failure = ET.SubElement(case, "failure", message=message, type="Regression")
            failure.text = "\n".join(_cmp_line(r) for r in bad)
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(_cmp_line(r) for r in rows)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _regressions(rows: Sequence[MetricComparison]) -> list[MetricComparison]:
    return [r for r in rows if r.comparison.verdict == "regression"]


def junit_xml(store: Store, run_id: str | None = None, *, compare: tuple[str, str] | None = None) -> str:
    """JUnit XML of a run (a scenario fails when it failed) or of a comparison (when it regressed)."""
    if (run_id is None) == (compare is None):
        raise UsageError("give either a run or compare=(base, new), not both or neither")
    if compare is not None:
        return compare_junit(collect_compare(store, *compare))
    assert run_id is not None
    return run_junit(collect_run(store, run_id, with_history=False))

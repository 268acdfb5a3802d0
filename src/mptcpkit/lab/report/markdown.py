"""A Markdown summary fit for a pull-request comment (GitHub/GitLab flavoured): verdict first, then tables."""

from __future__ import annotations

from mptcpkit.errors import UsageError
from mptcpkit.lab.analysis import MetricComparison
from mptcpkit.lab.report.data import CompareData, RunData, collect_compare, collect_run, fmt, fmt_pct
from mptcpkit.lab.store import Store


def _cell(text: str) -> str:
    """Table-cell safe: no pipes or newlines."""
    return " ".join(text.replace("|", "\\|").split())


def _run_name(run_id: str, label: str | None) -> str:
    return f"`{label}` (`{run_id}`)" if label else f"`{run_id}`"


def run_markdown(data: RunData) -> str:
    run = data.run
    n, ok = len(data.scenarios), data.passed_count
    env = run.environment
    head = "PASSED" if not data.failed and n else "FAILED"
    lines = [
        f"### mptcpkit lab run {_run_name(run.run_id, run.label)}: {head}, {ok} of {n} scenarios passed",
        "",
        f"Kernel `{env.get('kernel_release', '?')}`, emulation `{env.get('emulation', '?')}`, "
        f"backend `{env.get('backend', '?')}`, {run.config.get('reps', '?')} repetitions, "
        f"started {run.started_at.strftime('%Y-%m-%d %H:%M UTC')}, status `{run.status}`.",
        "",
    ]
    if data.failed:
        lines += ["**Failed scenarios**", ""]
        for s in data.failed:
            parts = [
                f"{r.metric} median {fmt(r.median)}{(' ' + r.unit) if r.unit else ''}, needs {rule}"
                for r, rule in s.missed
            ]
            if s.failures:
                parts.append(f"{len(s.failures)} failed repetition(s)")
            lines.append(f"- **{s.name}**: " + "; ".join(parts))
            lines += [f"  - {_cell(f)}" for f in s.failures[:5]]
        lines.append("")
    lines += [
        "<details><summary>All results</summary>"
        if not data.failed
        else "<details open><summary>All results</summary>",
        "",
        "| scenario | metric | median | min .. max | expected | score | result |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for s in data.scenarios:
        for r in s.results:
            unit = f" {r.unit}" if r.unit else ""
            lines.append(
                f"| {_cell(s.name)} | {_cell(r.metric)} | {fmt(r.median)}{unit} | {fmt(r.minimum)} .. "
                f"{fmt(r.maximum)} | {fmt(r.expected)} | {fmt(r.score, 3)} | {'pass' if r.passed else '**FAIL**'} |"
            )
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def compare_markdown(data: CompareData) -> str:
    counts = {v: data.count(v) for v in ("regression", "improvement", "inconclusive", "unchanged")}
    head = "REGRESSION" if counts["regression"] else "no regression"
    lines = [
        f"### mptcpkit lab compare: {head}",
        "",
        f"Base {_run_name(data.base.run_id, data.base.label)} vs new {_run_name(data.new.run_id, data.new.label)}: "
        f"{counts['regression']} regression(s), {counts['improvement']} improvement(s), "
        f"{counts['inconclusive']} inconclusive, {counts['unchanged']} unchanged.",
        "",
    ]
    if data.base.environment_key != data.new.environment_key:
        lines += [
            "> Note: the runs come from different machines or emulations; differences may come from the machine.",
            "",
        ]
    notable = [r for r in data.ordered if r.comparison.verdict != "unchanged"]
    header = [
        "| scenario | metric | base | new | change | 95 % CI | verdict |",
        "|---|---|---:|---:|---:|---:|---|",
    ]

    def row(r: MetricComparison) -> str:
        c = r.comparison
        ci = f"{fmt_pct(c.ci_low)} .. {fmt_pct(c.ci_high)}" if c.ci_low is not None else "-"
        verdict = f"**{c.verdict}**" if c.verdict in ("regression", "improvement") else c.verdict
        unit = f" {r.unit}" if r.unit else ""
        return (
            f"| {_cell(r.scenario)} | {_cell(r.metric)} ({r.direction} is better) | {fmt(c.base_median)}{unit} | "
            f"{fmt(c.new_median)}{unit} | {fmt_pct(c.change_pct)} | {ci} | {verdict} |"
        )

    if notable:
        lines += header + [row(r) for r in notable] + [""]
        for r in notable:
            lines.append(f"- {r.scenario} / {r.metric}: {_cell(r.comparison.reason)}")
        lines.append("")
    unchanged = [r for r in data.ordered if r.comparison.verdict == "unchanged"]
    if unchanged:
        lines += [f"<details><summary>{len(unchanged)} unchanged metrics</summary>", ""]
        lines += header + [row(r) for r in unchanged] + ["", "</details>", ""]
    if not data.rows:
        lines += ["Neither run has results to compare.", ""]
    return "\n".join(lines)


def markdown_summary(
    store: Store, run_id: str | None = None, *, compare: tuple[str, str] | None = None
) -> str:
    """Markdown for a pull-request comment: a run's pass/fail summary, or a comparison's verdicts."""
    if (run_id is None) == (compare is None):
        raise UsageError("give either a run or compare=(base, new), not both or neither")
    if compare is not None:
        return compare_markdown(collect_compare(store, *compare))
    assert run_id is not None
    return run_markdown(collect_run(store, run_id, with_history=False))

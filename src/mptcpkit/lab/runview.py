"""Terminal front of the runner: rich progress bars while running, the results table at the end, JSON output."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from mptcpkit.errors import UsageError
from mptcpkit.interrupts import sigterm_as_interrupt
from mptcpkit.lab.runner import Reporter, RunOptions, RunReport, run
from mptcpkit.lab.scenarios.base import RepOutcome, Scenario
from mptcpkit.lab.store import Result, open_store, run_to_json


class ProgressReporter(Reporter):
    """Two lines: what is happening now, and repetitions done out of planned."""

    def __init__(self, progress: Progress, console: Console) -> None:
        self.progress = progress
        self.console = console
        self.task = progress.add_task("starting", total=None)

    def total(self, reps: int) -> None:
        task = self.progress.tasks[self.task]
        self.progress.update(self.task, total=(task.total or 0) + reps)

    def stage(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]{text}[/]", highlight=False)

    def rep_done(self, scenario: str, rep: int, outcome: RepOutcome) -> None:
        self.progress.advance(self.task)
        summary = ", ".join(
            f"{m.metric}={_fmt(m.value)}{(' ' + m.unit) if m.unit else ''}" for m in outcome.measurements[:3]
        )
        mark = "[red]FAILED[/] " + outcome.failure if outcome.failure else "[green]ok[/]"
        self.console.print(f"  {escape(scenario)} #{rep + 1}: {summary}  {mark}", highlight=False)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def print_results(results: Sequence[Result], console: Console) -> None:
    """The final table: median, min, max, CV, expected, score, pass, per scenario and metric."""
    table = Table(
        "scenario", "metric", "median", "min", "max", "CV", "expected", "score", "pass", title="results"
    )
    for r in results:
        cv = r.cv
        verdict = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        table.add_row(
            escape(r.scenario),
            f"{r.metric}{(' [' + r.unit + ']') if r.unit else ''}",
            _fmt(r.median),
            _fmt(r.minimum),
            _fmt(r.maximum),
            f"{100 * cv:.1f} %" if cv is not None else "-",
            _fmt(r.expected),
            f"{r.score:.3f}" if r.score is not None else "-",
            verdict,
        )
    console.print(table)
    failed = [r for r in results if not r.passed]
    for r in failed:
        console.print(f"[red]FAIL[/] {escape(r.scenario)} {r.metric}: {r.rule}", highlight=False)
        for failure in r.details.get("failures", [])[:3]:
            console.print(f"     {failure}", highlight=False)


def run_with_progress(
    scenarios: list[Scenario],
    *,
    reps: int,
    label: str | None,
    db: str | None,
    json_path: str | None,
    emulation: str,
    until_ci: float | None,
    max_reps: int,
    seed: int | None,
    self_check: bool,
    backend: Any = None,
    store: Any = None,
    profile: Any = None,
) -> RunReport:
    """Run with progress bars on stderr; print the table; write JSON; labs are removed even on SIGTERM."""
    from mptcpkit.lab.backends.netns import NetnsBackend

    if json_path and json_path != "-" and not Path(json_path).parent.exists():
        raise UsageError(f"--json: directory {Path(json_path).parent} does not exist")
    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = 130
    options = RunOptions(
        scenarios=scenarios,
        reps=reps,
        label=label,
        emulation=emulation,
        seed=seed,
        until_ci_pct=until_ci,
        max_reps=max_reps,
        self_check=self_check,
        profile=profile,
    )

    with (
        sigterm_as_interrupt(),
        contextlib.nullcontext(store) if store is not None else open_store(db) as store,
    ):
        console.print(f"results database: {store.where}", highlight=False)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            reporter = ProgressReporter(progress, console)
            report = run(
                options,
                backend or NetnsBackend(progress=lambda m: None),
                store,
                reporter,
                on_run_created=lambda rid: console.print(f"run [bold]{rid}[/] started", highlight=False),
            )
        print_results(report.results, console)
        if json_path:
            write_run_json(store, report.run_id, json_path)
        verdict = "[green]all scenarios passed[/]" if report.passed else "[red]some scenarios failed[/]"
        console.print(f"run {report.run_id}: {verdict}; see `mptcpkit lab show {report.run_id}`")
        return report


def write_run_json(store: Any, run_id: str, json_path: str) -> None:
    """Write a stored run and its profiles as JSON to `json_path` ('-': stdout): `lab run --json`, here or in a VM."""
    from mptcpkit.lab.profiling.storage import profiles_json

    document = json.dumps(run_to_json(store, run_id) | profiles_json(store, run_id), indent=2, default=str)
    if json_path == "-":
        sys.stdout.write(document + "\n")
    else:
        Path(json_path).write_text(document + "\n")

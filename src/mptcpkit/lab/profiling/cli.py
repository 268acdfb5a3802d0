"""Command-line pieces of profiling: options of `lab run --profile`, the `lab compare --profile` tables, and
`lab profile` (show / export a run's folded stacks). lab/cli/__init__.py only registers them.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mptcpkit.errors import UsageError
from mptcpkit.lab.profiling import folded
from mptcpkit.lab.profiling.perf import DEFAULT_FREQUENCY
from mptcpkit.lab.profiling.session import ProfileOptions

if TYPE_CHECKING:  # numpy stays out of `mptcpkit lab --help`
    from mptcpkit.lab.profiling.diff import ProfileDiff, ShareChange

app = typer.Typer(help="CPU profiles recorded with `lab run --profile`.", no_args_is_help=True)


def run_options(
    profile: bool, frequency: int | None, symbols: str | None, only: Sequence[str] = ()
) -> ProfileOptions | None:
    """`lab run --profile [--profile-freq HZ] [--profile-symbols FILE]` -> ProfileOptions (None: not asked)."""
    if not profile:
        if frequency is not None or symbols:
            raise UsageError("--profile-freq and --profile-symbols go with --profile")
        return None
    if frequency is not None and not 1 <= frequency <= 20000:
        raise UsageError(f"--profile-freq must be between 1 and 20000 Hz, not {frequency}")
    if symbols and not Path(symbols).is_file():
        raise UsageError(f"--profile-symbols: {symbols} is not a file (give a vmlinux or System.map)")
    return ProfileOptions(
        frequency=frequency or DEFAULT_FREQUENCY,
        symbols=symbols,
        scenarios=frozenset(only) if only else None,
    )


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def _change_rows(table: Table, rows: Sequence[ShareChange], top: int) -> None:
    for c in rows[:top]:
        name = f"[bold magenta]{escape(c.name)}[/]" if c.mptcp else escape(c.name)
        color = "red" if c.delta > 0 else "blue"
        sure = "[bold]yes[/]" if c.confident else "[dim]no[/]"
        table.add_row(
            name,
            _pct(c.base_share),
            _pct(c.new_share),
            f"[{color}]{100 * c.delta:+.2f}[/]",
            f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]",
            f"{sure} ({c.method})",
        )


def print_diffs(diffs: Sequence[ProfileDiff], note: str, out: Console, err: Console, top: int = 12) -> None:
    """Per scenario: the functions (self) and call paths whose share of busy samples changed most."""
    err.print(f"[bold]profiles[/]: {note}", highlight=False)
    for d in diffs:
        err.print(
            f"\n[bold]{d.scenario}[/]: {d.base_reps} -> {d.new_reps} profiled repetitions, "
            f"{d.base_samples} -> {d.new_samples} busy samples of the lab ({d.event}; "
            f"{100 * d.other_fraction:.0f} % of the machine's were other processes, left out); "
            "change in points of share, MPTCP functions in magenta",
            highlight=False,
        )
        for title, rows in (("function (self)", d.self_changes), ("call path (leaf last)", d.path_changes)):
            table = Table(
                title, "base", "new", "change", "95 % CI", "confident", title=f"{d.scenario}: {title}"
            )
            _change_rows(table, rows, top)
            out.print(table)


def diffs_json(diffs: Sequence[ProfileDiff], note: str, top: int = 25) -> dict[str, Any]:
    return {"note": note, "scenarios": [d.to_json(top) for d in diffs]}


@app.command("show")
def show_cmd(
    run: str = typer.Argument(..., help="Run id (or unique prefix), label, or 'latest'."),
    scenario: str = typer.Option(None, "--scenario", "-s", help="Only this scenario."),
    top: int = typer.Option(20, "--top", min=1, help="How many functions."),
    db: str = typer.Option(None, "--db", help="SQLite path or postgresql:// URL."),
) -> None:
    """The hottest functions (self share of busy samples) of a run's profiles, per scenario."""
    from mptcpkit.lab.profiling.diff import is_mptcp, reduce_rep
    from mptcpkit.lab.profiling.storage import load_profiles
    from mptcpkit.lab.store import open_store

    out = Console()
    with open_store(db) as store:
        run_id = store.get_run(run).run_id
        profiles = load_profiles(store, run_id, scenario)
        if not profiles:
            raise UsageError(f"run {run_id} has no profiles" + (f" of {scenario}" if scenario else ""))
        by_scenario: dict[str, list[Any]] = {}
        for p in profiles:
            by_scenario.setdefault(p.scenario, []).append(p)
        for name, items in by_scenario.items():
            merged = reduce_rep(folded.merge(p.stacks for p in items))
            table = Table(
                "function",
                "self",
                "total",
                title=f"{name}: {len(items)} repetitions, {merged.busy} busy samples "
                f"({merged.idle} idle, {merged.other} in other processes), {items[0].event} at {items[0].frequency} Hz",
            )
            for fn, count in merged.self_counts.most_common(top):
                label = f"[bold magenta]{escape(fn)}[/]" if is_mptcp(fn) else escape(fn)
                table.add_row(label, _pct(count / merged.busy), _pct(merged.total_counts[fn] / merged.busy))
            out.print(table)


@app.command("export")
def export_cmd(
    run: str = typer.Argument(..., help="Run id (or unique prefix), label, or 'latest'."),
    scenario: str = typer.Option(..., "--scenario", "-s", help="The scenario."),
    output: Path = typer.Option(None, "--output", "-o", help="File (.gz compresses); default: stdout."),
    db: str = typer.Option(None, "--db", help="SQLite path or postgresql:// URL."),
) -> None:
    """Folded stacks of a scenario (all its profiled repetitions merged), for flamegraph.pl, inferno, speedscope."""
    from mptcpkit.lab.profiling.storage import load_profiles
    from mptcpkit.lab.store import open_store

    with open_store(db) as store:
        run_id = store.get_run(run).run_id
        profiles = load_profiles(store, run_id, scenario)
    if not profiles:
        raise UsageError(f"run {run_id} has no profile of {scenario}")
    text = folded.to_text(folded.merge(p.stacks for p in profiles))
    if output is None:
        sys.stdout.write(text)
    elif output.suffix == ".gz":
        output.write_bytes(gzip.compress(text.encode()))
    else:
        output.write_text(text)

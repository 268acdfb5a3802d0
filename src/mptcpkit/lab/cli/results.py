"""`lab runs|show|compare|history|report|serve`: read stored runs, compare them, report and browse them."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from mptcpkit.errors import UsageError
from mptcpkit.lab.cli.common import app, err, num, out, say


@app.command("runs")
def runs_cmd(
    db: str = typer.Option(None, "--db", help="SQLite path or postgresql:// URL."),
    limit: int = typer.Option(20, "--limit", min=1),
    label: str = typer.Option(None, "--label", help="Only runs with this label."),
) -> None:
    """List stored runs, newest first."""
    from mptcpkit.lab.store import open_store

    with open_store(db, create=False) as store:
        runs = store.list_runs(limit=limit, label=label)
        if not runs:
            err.print(f"no runs in {store.where} yet (start one with `mptcpkit lab run`)")
            return
        table = Table("run", "started (UTC)", "label", "status", "kernel", "scenarios", "passed")
        for r in runs:
            results = store.results(r.run_id)
            scenarios = {x.scenario for x in results}
            failed = {x.scenario for x in results if not x.passed}
            table.add_row(
                r.run_id,
                r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                r.label or "",
                r.status,
                str(r.environment.get("kernel_release", "")),
                str(len(scenarios)),
                f"{len(scenarios) - len(failed)}/{len(scenarios)}",
            )
        out.print(table)


@app.command("show")
def show_cmd(
    run_ref: str = typer.Argument(
        ..., metavar="RUN", help="Run id (or unique prefix), a label, or 'latest'."
    ),
    db: str = typer.Option(None, "--db", help="SQLite path or postgresql:// URL."),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Print one stored run: environment and every scenario's result."""
    from mptcpkit.lab.runview import print_results
    from mptcpkit.lab.store import open_store, run_to_json

    with open_store(db, create=False) as store:
        run = store.get_run(run_ref)
        if as_json:
            print(json.dumps(run_to_json(store, run.run_id), indent=2, default=str))
            return
        env = run.environment
        err.print(
            f"run [bold]{run.run_id}[/] label={run.label or '-'} status={run.status} "
            f"started={run.started_at:%Y-%m-%d %H:%M:%S} kernel={env.get('kernel_release', '?')} "
            f"backend={env.get('backend', '?')} emulation={env.get('emulation', '?')}",
            highlight=False,
        )
        print_results(store.results(run.run_id), out)


@app.command("compare")
def compare_cmd(
    base: str = typer.Argument(..., help="Base run: id (or unique prefix), label, or 'latest'."),
    new: str = typer.Argument(..., help="New run: id (or unique prefix), label, or 'latest'."),
    db: str = typer.Option(None, "--db", help="SQLite path or postgresql:// URL."),
    min_effect: float = typer.Option(
        None,
        "--min-effect",
        help="Smallest change in %% worth reporting (default: per metric, see docs/statistics.md).",
    ),
    confirm: bool = typer.Option(
        False,
        "--confirm",
        help="Re-run the regressed scenarios here before calling "
        "it a regression (a regression must show in both).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    profile: bool = typer.Option(
        False,
        "--profile",
        help="Also show where the CPU time went (differential profile of each regression).",
    ),
) -> None:
    """Per scenario and metric: change with confidence interval, rank test, verdict. Exit 1 on a regression."""
    from mptcpkit.lab.analysis import compare_runs
    from mptcpkit.lab.report.commands import confirmed_verdicts
    from mptcpkit.lab.store import open_store

    effect = None if min_effect is None else min_effect / 100
    with open_store(db, create=False) as store:
        base_run, new_run = store.get_run(base), store.get_run(new)
        rows = compare_runs(store, base_run.run_id, new_run.run_id, min_effect=effect)
        if not rows:
            raise UsageError(f"runs {base_run.run_id} and {new_run.run_id} have no results to compare")
        if confirm:
            verdicts = confirmed_verdicts(store, base_run.run_id, new_run, rows, effect, say)
        else:
            verdicts = [r.comparison.verdict for r in rows]
        if as_json:
            # --confirm may downgrade a regression: the verdict printed is the confirmed one.
            rows_json = [r.to_json() | {"verdict": v} for r, v in zip(rows, verdicts, strict=True)]
            if profile:
                from mptcpkit.lab.profiling.cli import diffs_json
                from mptcpkit.lab.profiling.views import compare_profiles

                diffs, note = compare_profiles(store, base_run.run_id, new_run.run_id, rows)
                print(json.dumps({"comparisons": rows_json, "profiles": diffs_json(diffs, note)}, indent=2))
            else:
                print(json.dumps(rows_json, indent=2))
        else:
            err.print(
                f"base {base_run.run_id} ({base_run.label or '-'}, "
                f"{base_run.environment.get('kernel_release', '?')})  ->  new {new_run.run_id} "
                f"({new_run.label or '-'}, {new_run.environment.get('kernel_release', '?')})",
                highlight=False,
            )
            table = Table(
                "scenario", "metric", "base", "new", "change", "95 % CI", "p", "verdict", title="comparison"
            )
            colors = {
                "regression": "bold red",
                "improvement": "green",
                "unchanged": "dim",
                "inconclusive": "yellow",
            }
            for r, v in zip(rows, verdicts, strict=True):
                c = r.comparison
                ci = (
                    f"[{c.ci_low:+.1f}, {c.ci_high:+.1f}] %"
                    if c.ci_low is not None and c.ci_high is not None
                    else "-"
                )
                table.add_row(
                    escape(r.scenario),
                    r.metric,
                    num(c.base_median),
                    num(c.new_median),
                    f"{c.change_pct:+.1f} %" if c.change_pct is not None else "-",
                    ci,
                    f"{c.p_value:.3f}" if c.p_value is not None else "-",
                    f"[{colors[v]}]{v}[/]",
                )
            out.print(table)
            if profile:
                from mptcpkit.lab.profiling.cli import print_diffs
                from mptcpkit.lab.profiling.views import compare_profiles

                print_diffs(*compare_profiles(store, base_run.run_id, new_run.run_id, rows), out, err)
        if "regression" in verdicts:
            raise typer.Exit(1)


@app.command("history")
def history_cmd(
    scenario: str = typer.Option(None, "--scenario", "-s", help="Only this scenario."),
    metric: str = typer.Option(None, "--metric", "-m", help="Only this metric."),
    db: str = typer.Option(None, "--db", help="SQLite path or postgresql:// URL."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Change points in each (scenario, metric, machine) series of runs, with the run that introduced them."""
    from mptcpkit.lab.analysis import history_change_points
    from mptcpkit.lab.store import open_store

    with open_store(db, create=False) as store:
        pairs = [
            (s, m)
            for s, m in store.metrics()
            if (scenario is None or s == scenario) and (metric is None or m == metric)
        ]
        if not pairs:
            what = " ".join(x for x in (scenario, metric) if x) or "any metric"
            raise UsageError(f"no stored results for {what} in {store.where}")
        changes = [c for s, m in pairs for c in history_change_points(store, s, m)]
        if as_json:
            # Flat run_id, label and previous_run_id beside the nested run briefs: easy to read in scripts.
            flat = [
                c.to_json()
                | {"run_id": c.run.run_id, "label": c.run.label, "previous_run_id": c.previous_run.run_id}
                for c in changes
            ]
            print(json.dumps(flat, indent=2, default=str))
            return
        runs = {run.run_id for s, m in pairs for run, _ in store.history(s, m)}
        err.print(f"{len(pairs)} series over {len(runs)} runs in {store.where}", highlight=False)
        if not changes:
            err.print("no change point: every series is stable (single outliers are ignored)")
            return
        table = Table(
            "scenario",
            "metric",
            "run",
            "label",
            "started",
            "change",
            "before",
            "after",
            "kind",
            title="change points",
        )
        for c in changes:
            color = "bold red" if c.kind == "regression" else "green"
            table.add_row(
                escape(c.scenario),
                c.metric,
                c.run.run_id,
                c.run.label or "-",
                f"{c.run.started_at:%Y-%m-%d %H:%M}",
                f"{c.change.change_pct:+.1f} %",
                num(c.change.before_median),
                num(c.change.after_median),
                f"[{color}]{c.kind}[/]",
            )
        out.print(table)


@app.command("report")
def report_cmd(
    run_ref: str = typer.Argument(None, metavar="[RUN]", help="Run id, prefix, label or 'latest' (default)."),
    compare: tuple[str, str] | None = typer.Option(
        None, "--compare", metavar="BASE NEW", help="Report a comparison of two runs instead."
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Self-contained HTML file to write."),
    png: Path = typer.Option(None, "--png", help="Directory for the same plots as PNG."),
    junit: Path = typer.Option(
        None, "--junit", help="JUnit XML file ('-' for stdout), one test case per scenario."
    ),
    markdown: Path = typer.Option(
        None, "--markdown", help="Markdown summary for a pull request ('-' for stdout)."
    ),
    db: str = typer.Option(None, "--db", help="SQLite path or postgresql:// URL."),
) -> None:
    """Write a run's (or a comparison's) report: HTML with plots, PNG, JUnit XML, Markdown.

    Exit status 1 when the run failed or the comparison found a regression.
    """
    from mptcpkit.lab.report.commands import report_cmd as build

    pair = compare if compare and all(compare) else None
    if pair and run_ref:
        raise UsageError("give either RUN or --compare BASE NEW, not both")
    if not any((output, png, junit, markdown)):
        raise UsageError("nothing to write: give -o FILE.html, --png DIR, --junit FILE or --markdown FILE")
    outcome = build(run_ref, compare=pair, output=output, png_dir=png, junit=junit, markdown=markdown, db=db)
    raise typer.Exit(outcome.exit_code)


@app.command("serve")
def serve_cmd(
    db: str = typer.Option(None, "--db", help="SQLite path or postgresql:// URL."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="TCP port."),
) -> None:
    """Browse runs, comparisons, history and regressions in a web browser (read-only)."""
    from mptcpkit.lab.report.commands import serve_cmd as serve

    serve(db, host, port)

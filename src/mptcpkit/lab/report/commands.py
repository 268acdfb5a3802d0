"""CLI glue for `mptcpkit lab report` and `mptcpkit lab serve`: check the arguments, open the store, write files.

Plain functions (the typer wiring lives in the lab CLI); every mistake a user can make is a UsageError with a
hint, never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mptcpkit.errors import UsageError
from mptcpkit.lab.report.data import collect_compare, collect_run
from mptcpkit.lab.report.html import compare_html, run_html
from mptcpkit.lab.report.junit import compare_junit, run_junit
from mptcpkit.lab.report.markdown import compare_markdown, run_markdown
from mptcpkit.lab.report.png import write_png
from mptcpkit.lab.store import Store, default_sqlite_path, open_store

STDOUT = "-"


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


@dataclass(slots=True)
class ReportOutcome:
    """What `report_cmd` wrote, and whether the subject failed (a failed scenario, or a regression)."""

    subject: str
    failed: bool
    files: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """For CI: 1 when the run failed or the comparison found a regression, else 0."""
        return 1 if self.failed else 0


def existing_store(db: str | None) -> Store:
    """Open the results database for reading, refusing to create an empty one where the user mistyped a path."""
    target = db or os.environ.get("MPTCPKIT_DB") or None
    is_url = target is not None and "://" in target and not target.startswith("sqlite:///")
    if not is_url:
        path = (
            default_sqlite_path() if target is None else Path(target.removeprefix("sqlite://")).expanduser()
        )
        if not path.exists():
            raise UsageError(
                f"no results database at {path}",
                hint="record a run first with 'mptcpkit lab run', or point --db at your database",
            )
        if path.is_dir():
            raise UsageError(f"results database {path} is a directory", hint="give the database file")
    return open_store(target)


def _check_output(option: str, path: Path | None, *, allow_stdout: bool) -> None:
    if path is None:
        return
    if str(path) == STDOUT:
        if not allow_stdout:
            raise UsageError(f"{option} cannot write to standard output")
        return
    if path.is_dir():
        raise UsageError(f"{option}: {path} is a directory", hint="give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option}: directory {parent} does not exist")


def _write(option: str, path: Path, text: str, outcome: ReportOutcome, say: Callable[[str], None]) -> None:
    if str(path) == STDOUT:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        path.write_text(text)
    except OSError as exc:
        raise UsageError(f"{option}: cannot write {path}: {exc.strerror}") from exc
    outcome.files.append(path)
    say(f"wrote {path}")


def report_cmd(
    run_ref: str | None = None,
    *,
    compare: tuple[str, str] | None = None,
    output: Path | None = None,
    png_dir: Path | None = None,
    junit: Path | None = None,
    markdown: Path | None = None,
    db: str | None = None,
    say: Callable[[str], None] = _stderr,
) -> ReportOutcome:
    """`mptcpkit lab report [RUN | --compare BASE NEW] -o FILE.html [--png DIR] [--junit F] [--markdown F]`.

    RUN defaults to "latest". `--junit -` / `--markdown -` print to standard output.
    """
    if run_ref is not None and compare is not None:
        raise UsageError("give a run or --compare BASE NEW, not both")
    if compare is not None and (len(compare) != 2 or not all(ref.strip() for ref in compare)):
        raise UsageError("--compare takes two runs: BASE NEW (ids, labels or 'latest')")
    if output is None and png_dir is None and junit is None and markdown is None:
        raise UsageError(
            "nothing to write",
            hint="give -o FILE.html, --png DIR, --junit FILE.xml and/or --markdown FILE.md",
        )
    _check_output("-o/--output", output, allow_stdout=False)
    _check_output("--junit", junit, allow_stdout=True)
    _check_output("--markdown", markdown, allow_stdout=True)
    if junit is not None and markdown is not None and str(junit) == str(markdown) == STDOUT:
        raise UsageError("only one of --junit and --markdown can write to standard output")
    with existing_store(db) as store:
        if compare is not None:
            cdata = collect_compare(store, *compare)
            outcome = ReportOutcome(f"comparison {cdata.title}", failed=bool(cdata.regressions))
            if output is not None:
                _write("-o/--output", output, compare_html(cdata), outcome, say)
            if junit is not None:
                _write("--junit", junit, compare_junit(cdata), outcome, say)
            if markdown is not None:
                _write("--markdown", markdown, compare_markdown(cdata), outcome, say)
            if png_dir is not None:
                outcome.files += _pngs(store, None, compare, png_dir, say)
            return outcome
        rdata = collect_run(store, run_ref or "latest", with_history=output is not None)
        outcome = ReportOutcome(
            f"run {rdata.title}", failed=bool(rdata.failed) or rdata.run.status != "complete"
        )
        if output is not None:
            _write("-o/--output", output, run_html(rdata), outcome, say)
        if junit is not None:
            _write("--junit", junit, run_junit(rdata), outcome, say)
        if markdown is not None:
            _write("--markdown", markdown, run_markdown(rdata), outcome, say)
        if png_dir is not None:
            outcome.files += _pngs(store, rdata.run.run_id, None, png_dir, say)
        return outcome


def _pngs(
    store: Store, run_id: str | None, compare: tuple[str, str] | None, out: Path, say: Callable[[str], None]
) -> list[Path]:
    files = write_png(store, run_id, out, compare=compare)
    say(f"wrote {len(files)} PNG file(s) to {out}")
    return files


def serve_cmd(db: str | None = None, host: str = "127.0.0.1", port: int = 8080) -> None:
    """`mptcpkit lab serve [--db DB] [--host H] [--port P]`: the dashboard, until Ctrl-C."""
    from mptcpkit.lab.report.web import serve

    with existing_store(db) as store:
        where = store.where
    serve(
        db,
        host,
        port,
        ready=lambda url: _stderr(f"mptcpkit lab dashboard on {url} (database {where}); Ctrl-C stops it"),
    )


def confirmed_verdicts(
    store: Store,
    base_id: str,
    new_run: Any,
    rows: Sequence[Any],
    effect: float | None,
    say: Callable[[str], None],
) -> list[str]:
    """`lab compare --confirm`: re-run the regressed scenarios here; a regression that does not show again against
    the base becomes inconclusive. One verdict per row of `rows`."""
    regressed = sorted({r.scenario for r in rows if r.comparison.verdict == "regression"})
    confirmed = _confirm(store, base_id, new_run, regressed, effect, say) if regressed else None
    verdicts = []
    for r in rows:
        verdict = r.comparison.verdict
        if confirmed is not None and verdict == "regression" and r.scenario not in confirmed:
            verdict = "inconclusive"
        verdicts.append(verdict)
    return verdicts


def _confirm(
    store: Store,
    base_id: str,
    new_run: Any,
    scenarios: list[str],
    effect: float | None,
    say: Callable[[str], None],
) -> set[str]:
    """Run the regressed scenarios again now and keep those that regress again against the base."""
    from mptcpkit.lab.analysis import compare_runs
    from mptcpkit.lab.runview import run_with_progress
    from mptcpkit.lab.scenarios import build, resolve

    origins = getattr(new_run, "config", {}).get("origins", {})
    chosen = []
    for name in scenarios:
        origin = str(origins.get(name, ""))
        ref = origin if origin.endswith(".toml") and Path(origin).is_file() else name
        try:
            chosen += [build(spec) for spec in resolve([ref]) if spec.name == name]
        except UsageError:
            continue  # no longer runnable here: left unconfirmed
    if not chosen:
        return set(scenarios)
    reps = int(getattr(new_run, "config", {}).get("reps", 3))
    label = f"{getattr(new_run, 'label', None) or 'new'} (confirm)"
    say(f"confirming {len(chosen)} regressed scenario(s) with {reps} fresh repetitions each")
    report = run_with_progress(
        chosen,
        reps=reps,
        label=label,
        db=getattr(store, "url", None),
        json_path=None,
        emulation="auto",
        until_ci=None,
        max_reps=10,
        seed=None,
        self_check=False,
        store=store,
    )
    again = compare_runs(store, base_id, report.run_id, min_effect=effect)
    return {r.scenario for r in again if r.comparison.verdict == "regression"}

"""`mptcpkit lab submit | worker | queue | bisect`: parse, call the fleet, print."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mptcpkit.errors import UsageError

out = Console()
err = Console(stderr=True)
for _console in (out, err):
    if not _console.is_terminal:
        _console.width = 140

DB_HELP = "The team's PostgreSQL (postgresql://...; default: $MPTCPKIT_DB)."
queue_app = typer.Typer(help="Fleet jobs: queued, running, done, failed.", invoke_without_command=True)


def _url(db: str | None) -> str:
    from mptcpkit.lab.fleet.engine import check_url

    return check_url(db or os.environ.get("MPTCPKIT_DB"))


def _fleet(db: str | None):  # type: ignore[no-untyped-def]
    from mptcpkit.lab.fleet.queue import Fleet

    return Fleet(_url(db))


def submit(
    scenario: list[str] = typer.Option(None, "--scenario", "-s", help="As for `lab run` (repeatable)."),
    suite: str = typer.Option(None, "--suite", metavar="FILE|DIR|NAME", help="As for `lab run`."),
    reps: int = typer.Option(None, "--reps", "-n", min=1, help="Repetitions per scenario (default: 3)."),
    label: str = typer.Option(None, "--label", "-l", help="Label of the runs, e.g. a kernel commit."),
    machines: list[str] = typer.Option(
        ..., "--machines", metavar="CLASS", help="Machine class to run on (repeatable: one job per class)."
    ),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    emulation: str = typer.Option("auto", help="As for `lab run`."),
    until_ci: float = typer.Option(None, "--until-ci", help="As for `lab run`."),
    max_reps: int = typer.Option(10, "--max-reps", min=1),
    scale: float = typer.Option(None, "--scale", min=0.1, help="As for `lab run`."),
    seed: int = typer.Option(None, "--seed"),
    self_check: bool = typer.Option(True, "--self-check/--no-self-check"),
    engine: str = typer.Option("mptcpkit", "--engine", help="mptcpkit or iperf3."),
    kernel: str = typer.Option(None, "--kernel", help="Kernel image the worker boots in a VM (path on it)."),
    modules: str = typer.Option(
        None, "--modules", help="Modules directory for --kernel (path on the worker)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the job ids as JSON."),
) -> None:
    """Enqueue `lab run` work for classes of lab machines; prints the job ids."""
    from mptcpkit.lab.fleet.spec import JobSpec
    from mptcpkit.lab.run_request import check_emulation_mode, check_engine
    from mptcpkit.lab.scenarios import cli as scenario_cli

    check_emulation_mode(emulation)
    check_engine(engine)
    selection = scenario_cli.select(scenario, suite)  # bad names fail here, not on a lab machine
    scenarios, suite_ref = scenario_cli.portable_refs(scenario, suite)
    spec = JobSpec(
        scenarios=scenarios or [],
        suite=suite_ref,
        reps=reps,
        scale=scale,
        emulation=emulation,
        engine=engine,
        seed=seed,
        self_check=self_check,
        until_ci=until_ci,
        max_reps=max_reps,
        kernel=kernel,
        modules=modules,
        label=label,
    )
    total = len(selection.specs) * (reps or selection.reps or 3)
    fleet = _fleet(db)
    try:
        ids = [fleet.submit(spec, cls, total) for cls in machines]
    finally:
        fleet.close()
    if as_json:
        print(json.dumps(ids))
        return
    for cls, job_id in zip(machines, ids, strict=True):
        err.print(f"job [bold]{job_id}[/] queued for class {escape(cls)}")
    print(" ".join(map(str, ids)))


def worker(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    classes: list[str] = typer.Option(..., "--class", metavar="CLASS", help="Class(es) to serve."),
    machine_id: str = typer.Option(None, "--machine-id", help="Default: the host name."),
    backend: str = typer.Option("netns", "--backend", help="netns, vm or ssh (recorded in the identity)."),
    on_crash: str = typer.Option(
        "retry", "--on-crash", help="A job whose worker died mid-job: retry or fail."
    ),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1),
    heartbeat: float = typer.Option(5.0, "--heartbeat", min=0.5, help="Seconds between heartbeats."),
    stalled: float = typer.Option(30.0, "--stalled-after", min=2, help="Heartbeat silence that means dead."),
    ssh: list[str] = typer.Option(
        None, "--ssh", metavar="HOST=USER@MACHINE[:PORT]", help="SSH backend: as for `lab run` (repeatable)."
    ),
    known_hosts: Path = typer.Option(None, "--known-hosts", help="As for `lab run --ssh`."),
    identity: list[Path] = typer.Option(None, "--identity", "-i", help="As for `lab run --ssh`."),
) -> None:
    """Run fleet jobs on this machine, one at a time, until stopped (SIGTERM finishes the current job)."""
    from mptcpkit.lab.fleet.worker import Worker, WorkerConfig

    if on_crash not in ("retry", "fail"):
        raise UsageError(f"--on-crash must be retry or fail, not '{on_crash}'")
    if backend not in ("netns", "vm", "ssh"):
        raise UsageError(f"--backend must be netns, vm or ssh, not '{backend}'")
    backend_args = [arg for item in ssh or [] for arg in ("--ssh", item)]
    backend_args += ["--known-hosts", str(known_hosts)] if known_hosts else []
    backend_args += [arg for key in identity or [] for arg in ("--identity", str(key))]
    if backend_args and backend != "ssh":
        raise UsageError("--ssh, --known-hosts and --identity go with --backend ssh")
    config = WorkerConfig(
        backend_args=backend_args,
        url=_url(db),
        classes=classes,
        machine_id=machine_id or socket.gethostname(),
        backend=backend,
        on_crash=on_crash,
        max_attempts=max_attempts,
        heartbeat_s=heartbeat,
        stalled_s=stalled,
    )
    Worker(config).serve()


@queue_app.callback()
def queue(
    ctx: typer.Context,
    db: str = typer.Option(None, "--db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    limit: int = typer.Option(50, "--limit", min=1),
) -> None:
    """Show fleet jobs with their progress (subcommands: cancel, retry, show)."""
    ctx.obj = db
    if ctx.invoked_subcommand is not None:
        return
    fleet = _fleet(db)
    try:
        rows = fleet.jobs(limit=limit)
    finally:
        fleet.close()
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        err.print("no fleet job yet (enqueue one with `mptcpkit lab submit --machines CLASS`)")
        return
    colors = {"queued": "cyan", "running": "yellow", "done": "green", "failed": "red"}
    table = Table("job", "state", "class", "label", "machine", "progress", "run", "tries", "error")
    for r in rows:
        color = colors.get(r.state, "dim")
        progress = f"{r.done}/{r.total}" if r.total else str(r.done)
        table.add_row(
            str(r.job_id),
            f"[{color}]{r.state}[/]",
            escape(r.machine_class),
            escape(r.label or ""),
            escape(r.machine_id or ""),
            progress,
            r.run_id or "",
            str(r.attempts),
            escape((r.error or "")[:60]),
        )
    out.print(table)


@queue_app.command("cancel")
def queue_cancel(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Cancel a queued job, or stop a running one (its run is marked incomplete, its lab removed)."""
    fleet = _fleet(ctx.obj)
    try:
        err.print(f"job {job_id}: {fleet.cancel(job_id)}")
    finally:
        fleet.close()


@queue_app.command("retry")
def queue_retry(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Put a failed or cancelled job back in the queue."""
    fleet = _fleet(ctx.obj)
    try:
        new_id = fleet.retry(job_id)
        err.print(f"job {job_id} queued again" + ("" if new_id == job_id else f" as job {new_id}"))
        print(new_id)
    finally:
        fleet.close()


@queue_app.command("show")
def queue_show(ctx: typer.Context, job_id: int = typer.Argument(..., metavar="ID")) -> None:
    """One job in full, with the console tail of a failure."""
    fleet = _fleet(ctx.obj)
    try:
        row = fleet.job(job_id)
        tail = fleet.console_tail(job_id)
    finally:
        fleet.close()
    print(json.dumps({**row.to_dict(), "console_tail": tail}, indent=2))


def bisect(
    good: str = typer.Option(..., "--good", help="Label of the last known good step."),
    bad: str = typer.Option(..., "--bad", help="Label of the first known bad step."),
    metric: str = typer.Option(..., "--metric", metavar="SCENARIO:METRIC", help="e.g. tcp-baseline:goodput"),
    machines: str = typer.Option(..., "--machines", metavar="CLASS", help="The machine class to measure on."),
    kernels: Path = typer.Option(None, "--kernels", help="Ordered kernel images: `LABEL PATH` per line."),
    git: str = typer.Option(None, "--git", metavar="GOOD..BAD", help="A git range (with --build)."),
    build: str = typer.Option(
        None, "--build", help="Build command for --git, {commit} substituted; prints the image path last."
    ),
    repo: Path = typer.Option(Path("."), "--repo", help="The kernel git tree for --git."),
    steps: Path = typer.Option(
        None, "--steps", help="Test/dry-run mode: steps that are variants of one scenario (docs/fleet.md)."
    ),
    reps: int = typer.Option(
        5, "--reps", "-n", min=3, help="Repetitions per probed step (5+ lets compare decide)."
    ),
    scale: float = typer.Option(None, "--scale", min=0.1),
    profile: bool = typer.Option(
        False,
        "--profile",
        help="Probe with `lab run --profile` and attach the first bad step's differential profile.",
    ),
    profile_out: Path = typer.Option(
        None, "--profile-out", help="With --profile: write the differential profile (JSON) here."
    ),
    db: str = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Find the first bad kernel between a good and a bad one: midpoints run on the fleet, compared like `lab compare`."""
    from mptcpkit.lab.fleet import steps as steps_mod
    from mptcpkit.lab.fleet.bisect import Bisect
    from mptcpkit.lab.store import open_store

    scenario, sep, metric_name = metric.partition(":")
    if not sep or not scenario or not metric_name:
        raise UsageError(f"--metric wants SCENARIO:METRIC, e.g. tcp-baseline:goodput; got '{metric}'")
    sources = [s for s in (kernels, git, steps) if s]
    if len(sources) != 1:
        raise UsageError("give exactly one of --kernels FILE, --git GOOD..BAD (with --build), --steps FILE")
    url = _url(db)
    if kernels:
        series = steps_mod.from_kernels_file(kernels)
    elif git:
        if not build:
            raise UsageError("--git needs --build 'COMMAND {commit}' that prints the kernel image path")
        series = steps_mod.from_git_range(repo, git, build)
    else:
        workdir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mptcpkit" / "bisect"
        series = steps_mod.from_steps_file(steps, workdir / steps.stem)
    fleet = _fleet(url)
    try:
        with open_store(url) as store:
            job = Bisect(
                fleet,
                store,
                series,
                scenario,
                metric_name,
                machines,
                reps=reps,
                scale=scale,
                repo=repo,
                log=lambda m: err.print(m, highlight=False),
            )
            first_bad = job.run(good, bad)
            if profile:
                _attach_profile(store, series, first_bad, scenario, profile_out)
    finally:
        fleet.close()
    err.print(f"first bad step: [bold]{escape(first_bad.label)}[/]")
    print(first_bad.label)


def _attach_profile(
    store: Any, series: list[Any], first_bad: Any, scenario: str, out_path: Path | None
) -> None:
    """The differential profile (lab/profiling) of the last good step against the first bad one."""
    from mptcpkit.lab.profiling.bisect import first_bad_step_profile

    index = series.index(first_bad)
    good_label, bad_label = series[index - 1].label, series[index].label
    found = first_bad_step_profile(store, good_label, bad_label, scenario)
    if found is None:
        err.print(f"no profiles stored for {good_label} and {bad_label}: nothing to attach")
        return
    if out_path is not None:
        out_path.write_text(json.dumps(found, indent=2, default=str) + "\n")
        err.print(f"differential profile {good_label} -> {bad_label} written to {out_path}")
    else:
        err.print(f"differential profile: mptcpkit lab compare {good_label} {bad_label} --profile")

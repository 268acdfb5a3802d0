"""`lab run`: run scenarios (here, in a VM with --kernel, or on machines over --ssh) and store the results."""

from __future__ import annotations

from pathlib import Path

import typer

from mptcpkit.errors import UsageError
from mptcpkit.lab import run_request
from mptcpkit.lab.cli.common import EMULATION_HELP, app, say


@app.command("run")
def run_cmd(
    scenario: list[str] = typer.Option(
        None,
        "--scenario",
        "-s",
        help="Scenario to run: a built-in name, a glob of names, a .toml file or a glob of files "
        "(repeatable); default: the default suite.",
    ),
    suite: str = typer.Option(
        None,
        "--suite",
        metavar="FILE|DIR|NAME",
        help="Run a suite file, every scenario file in DIR, or a built-in suite (default, full).",
    ),
    reps: int = typer.Option(None, "--reps", "-n", min=1, help="Repetitions per scenario (default: 3)."),
    label: str = typer.Option(None, "--label", "-l", help="Tag for this run, e.g. a kernel commit."),
    db: str = typer.Option(None, "--db", help="SQLite path or postgresql:// URL (default: per-user SQLite)."),
    json_path: str = typer.Option(
        None, "--json", help="Also write the run as JSON to PATH ('-' for stdout)."
    ),
    emulation: str = typer.Option("auto", help=EMULATION_HELP),
    until_ci: float = typer.Option(
        None,
        "--until-ci",
        help="Add repetitions until each metric's median 95 %% CI is narrower than PCT %% of the median.",
    ),
    max_reps: int = typer.Option(10, "--max-reps", min=1, help="Upper bound on repetitions with --until-ci."),
    scale: float = typer.Option(
        None, "--scale", min=0.1, help="Multiply every transfer's length and action time (default: 1)."
    ),
    seed: int = typer.Option(None, "--seed", help="Seed of the randomized order (recorded in the run)."),
    self_check: bool = typer.Option(
        True, "--self-check/--no-self-check", help="Check each lab's links first."
    ),
    engine: str = typer.Option(
        "mptcpkit",
        "--engine",
        help="Traffic generator: mptcpkit (default) or iperf3 "
        "(bulk scenarios only; MPTCP through --mptcp, mptcpize or `mptcpkit run`).",
    ),
    ssh: list[str] = typer.Option(
        None,
        "--ssh",
        metavar="HOST=USER@MACHINE[:PORT]",
        help="Run on real machines "
        "over SSH: map each topology host (client, server, router) to a machine "
        "(repeatable). Scenarios whose hosts are not all mapped are skipped.",
    ),
    known_hosts: Path = typer.Option(
        None,
        "--known-hosts",
        help="known_hosts file for --ssh (default: ~/.ssh/known_hosts; unknown host keys are refused).",
    ),
    identity: list[Path] = typer.Option(
        None,
        "--identity",
        "-i",
        help="Private key file for --ssh (repeatable; default: ~/.ssh/id_* and the agent).",
    ),
    kernel: str = typer.Option(
        None,
        "--kernel",
        help="Boot this kernel image in a VM and run there ('default': "
        "the distribution kernel from linux-image-amd64).",
    ),
    modules: Path = typer.Option(
        None,
        "--modules",
        help="Modules directory for --kernel (default: found next to the image or in /lib/modules/RELEASE).",
    ),
    list_only: bool = typer.Option(False, "--list", help="List the scenarios and exit."),
    profile: bool = typer.Option(
        False,
        "--profile",
        help="Record CPU profiles (perf, system-wide) of each repetition; docs/profiling.md.",
    ),
    profile_freq: int = typer.Option(
        None, "--profile-freq", help="Samples per second per CPU (default 499)."
    ),
    profile_symbols: str = typer.Option(
        None,
        "--profile-symbols",
        help="vmlinux or System.map of the kernel under test (default: /proc/kallsyms).",
    ),
) -> None:
    """Run the scenario suite (default: all scenarios), compare each with its analytic expectation, store it.

    Exit status: 0 when every scenario passes, 1 when one fails, 2 for bad input.
    """
    from mptcpkit.lab.profiling.cli import run_options
    from mptcpkit.lab.scenarios import cli as scenario_cli

    run_request.check_emulation_mode(emulation)
    selection = scenario_cli.select(scenario, suite)
    profile_options = run_options(profile, profile_freq, profile_symbols)
    if list_only:
        scenario_cli.print_list(selection.specs)
        return
    run_request.check_engine(engine)
    reps = reps if reps is not None else (selection.reps or 3)
    scale = scale if scale is not None else (selection.scale or 1.0)
    chosen = scenario_cli.build_all(selection.specs, scale, engine)
    if kernel:
        from mptcpkit.lab.backends.vm.kernel_run import command_options, run_on_kernel

        options = command_options(run_cmd, locals())  # the guest calls run_cmd with these values (as JSON)
        options["scenario"], options["suite"] = scenario_cli.portable_refs(scenario, suite)
        raise typer.Exit(run_on_kernel(kernel, modules, options, label=label, db=db, json_path=json_path))
    elif modules:
        raise UsageError("--modules goes with --kernel")
    backend = None
    if ssh:
        explicit = bool(scenario or suite)
        backend, chosen = run_request.ssh_backend(ssh, known_hosts, identity, chosen, explicit, warn=say)
    from mptcpkit.lab.runview import run_with_progress

    report = run_with_progress(
        chosen,
        backend=backend,
        reps=reps,
        label=label,
        db=db,
        json_path=json_path,
        emulation=emulation,
        until_ci=until_ci,
        max_reps=max_reps,
        seed=seed,
        self_check=self_check,
        profile=profile_options,
    )
    raise typer.Exit(0 if report.passed else 1)

"""`mptcpkit lab ...`: parse, call the lab, print. No lab logic lives here."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mptcpkit.errors import UsageError

app = typer.Typer(help="The MPTCP performance lab: topologies, scenarios, results.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)
for _console in (out, err):
    if not _console.is_terminal:
        _console.width = 140  # piped or captured: do not squeeze tables into 80 columns

EMULATION_HELP = (
    "Link emulation: auto (netem where the kernel has it, else mptcpkit's own), netem, userspace."
)


def _progress(message: str) -> None:
    err.print(f"[dim]{message}[/]", highlight=False)


@app.command("topologies")
def topologies() -> None:
    """List the built-in topologies."""
    from mptcpkit.lab.topology_file import builtin_names, load_topology

    table = Table("name", "hosts", "links", "description")
    for name in builtin_names():
        topo = load_topology(name)
        table.add_row(name, ", ".join(h.name for h in topo.hosts), str(len(topo.links)), topo.description)
    out.print(table)


@app.command("up")
def up(
    topology: str = typer.Argument(
        ..., help="A built-in topology name (see `lab topologies`) or a .toml file."
    ),
    emulation: str = typer.Option("auto", help=EMULATION_HELP),
    check: bool = typer.Option(True, "--check/--no-check", help="Run the emulation self-check once up."),
    kernel: str = typer.Option(
        None, "--kernel", help="Boot this kernel image in a VM lab ('default': linux-image-amd64's kernel)."
    ),
    modules: Path = typer.Option(None, "--modules", help="Modules directory for --kernel."),
    multi_vm: bool = typer.Option(False, "--multi-vm", help="With --kernel: one VM per lab host."),
) -> None:
    """Bring a topology up and leave it running; prints the lab id (use it with exec, check, down)."""
    from mptcpkit.lab.backends.netns import NetnsBackend
    from mptcpkit.lab.topology_file import load_topology

    _check_emulation_mode(emulation)
    topo = load_topology(topology)
    if kernel:
        from mptcpkit.lab.vm_labs import vm_lab_up

        vm_id = vm_lab_up(topo, kernel, modules, multi_vm, emulation, progress=_progress)
        err.print(
            f"VM lab [bold]{vm_id}[/] is up ({topo.name}); hosts: {', '.join(h.name for h in topo.hosts)}"
        )
        err.print(f"  open a shell:  mptcpkit lab console {vm_id} {topo.hosts[0].name}", highlight=False)
        err.print(f"  tear it down:  mptcpkit lab down {vm_id}", highlight=False)
        print(vm_id)
        return
    if modules or multi_vm:
        raise UsageError("--modules and --multi-vm go with --kernel")
    lab = NetnsBackend(progress=_progress).up(topo, emulation=emulation)
    try:
        if check:
            _print_checks(_run_self_check(lab))
    except BaseException:
        lab.close()
        raise
    lab.detach()
    err.print(
        f"lab [bold]{lab.lab_id}[/] is up ({topo.name}, emulation: {lab.info.emulation.get('mode')}); "
        f"hosts: {', '.join(h.name for h in topo.hosts)}",
        highlight=False,
    )
    err.print(
        f"  run a command:  mptcpkit lab exec {lab.lab_id} {topo.hosts[0].name} -- ip -br addr",
        highlight=False,
    )
    err.print(f"  tear it down:   mptcpkit lab down {lab.lab_id}", highlight=False)
    print(lab.lab_id)


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the labs running on this machine."""
    from mptcpkit.lab import registry
    from mptcpkit.lab.backends import nsutil

    records = registry.all_records()
    rows = []
    for record in records:
        alive = all(nsutil.netns_inode(ns) is not None for ns in record.all_netns)
        rows.append(
            {
                "lab_id": record.lab_id,
                "topology": record.topology,
                "backend": record.backend,
                "state": record.state if alive else "broken",
                "hosts": record.namespaces,
                "emulation": record.emulation.get("mode", "?"),
                "age_s": round(time.time() - record.created_at),
            }
        )
    from mptcpkit.lab.vm_labs import vm_lab_list

    for vm_lab in vm_lab_list():
        hosts = vm_lab.get("hosts") or {}
        rows.append(
            {
                "lab_id": vm_lab.get("lab_id"),
                "topology": vm_lab.get("topology", "?"),
                "backend": "multi-vm" if vm_lab.get("multi") else "vm",
                "state": vm_lab.get("state", "?"),
                "hosts": {h: f"VM {vm_lab.get('kernel_release') or vm_lab.get('kernel', '')}" for h in hosts}
                if isinstance(hosts, dict | list)
                else {},
                "emulation": vm_lab.get("emulation", "?"),
                "age_s": round(time.time() - float(vm_lab.get("created_at", time.time()))),
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        err.print("no lab is running (start one with `mptcpkit lab up two-paths`)")
        return
    table = Table("lab", "topology", "state", "hosts (namespace)", "emulation", "age")
    for row in rows:
        table.add_row(
            row["lab_id"],
            row["topology"],
            row["state"],
            "\n".join(f"{h} ({ns})" for h, ns in row["hosts"].items()),
            row["emulation"],
            f"{row['age_s']} s",
        )
    out.print(table)


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    lab_id: str = typer.Argument(..., metavar="LAB"),
    host: str = typer.Argument(...),
    command: list[str] = typer.Argument(None, metavar="-- CMD...", help="The command to run on the host."),
) -> None:
    """Run a command on a lab host (with a terminal, like `ip netns exec`); exits with its exit code."""
    from mptcpkit.lab.backends.netns import attach

    if not command:
        raise UsageError("give a command after `--`, e.g. `mptcpkit lab exec LAB client -- ip -br addr`")
    lab = attach(lab_id)
    netns = lab.host(host).netns
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", netns, *command])


@app.command("check")
def check_cmd(
    lab_id: str = typer.Argument(..., metavar="LAB"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Measure what each link of a running lab delivers (RTT, rate, loss) against its configuration."""
    from mptcpkit.lab.backends.netns import attach

    checks = _run_self_check(attach(lab_id))
    if as_json:
        print(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        _print_checks(checks)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command("down")
def down(
    lab_id: str = typer.Argument(None, metavar="[LAB]"),
    all_labs: bool = typer.Option(False, "--all", help="Remove every lab mptcpkit created on this machine."),
) -> None:
    """Tear a lab down: namespaces, links, processes, state. `--all` also removes half-built labs."""
    from mptcpkit.lab import registry
    from mptcpkit.lab.backends.netns import preflight, teardown_all, teardown_record
    from mptcpkit.lab.vm_labs import vm_lab_down, vm_lab_list

    if lab_id and not registry.LAB_ID_RE.fullmatch(lab_id):
        raise UsageError(f"{lab_id[:40]!a} is not a lab id (6 hex digits, see `mptcpkit lab status`)")
    if lab_id and not all_labs and vm_lab_down(lab_id):
        err.print(f"VM lab {lab_id} removed")
        return
    preflight()
    if all_labs:
        from mptcpkit.lab.backends.vm import cleanup_vms

        for vm_lab in vm_lab_list():
            vm_lab_down(str(vm_lab["lab_id"]))

        guests = cleanup_vms(include_live_owners=True)
        if guests:
            err.print(f"stopped {len(guests)} VM(s): {', '.join(guests)}")
        removed = teardown_all()
        err.print(f"removed {len(removed)} lab(s){': ' + ', '.join(removed) if removed else ''}")
        return
    if not lab_id:
        raise UsageError("name the lab to remove (see `mptcpkit lab status`) or use --all")
    record = registry.find(lab_id)  # also a corrupt record, or namespaces whose record was never written
    if record is None:
        from mptcpkit.lab.backends.vm_supervisor import record_path

        if record_path(lab_id).exists():  # a VM lab record nobody can read: its supervisor is long gone
            record_path(lab_id).unlink()
            err.print(f"unreadable VM lab record {lab_id} removed")
            return
        raise UsageError(f"no lab '{lab_id}' on this machine (see `mptcpkit lab status`)")
    teardown_record(record)
    err.print(f"lab {lab_id} removed")


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
        None, "--suite", metavar="FILE|DIR", help="Run a suite file, or every scenario file in DIR."
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
    from mptcpkit.lab.scenarios import cli as scenario_cli

    _check_emulation_mode(emulation)
    from mptcpkit.lab.profiling.cli import run_options

    selection = scenario_cli.select(scenario, suite)
    profile_options = run_options(profile, profile_freq, profile_symbols)
    if list_only:
        scenario_cli.print_list(selection.specs)
        return
    if engine not in ("mptcpkit", "iperf3"):
        raise UsageError(f"--engine must be mptcpkit or iperf3, not '{engine}'")
    reps = reps if reps is not None else (selection.reps or 3)
    scale = scale if scale is not None else (selection.scale or 1.0)
    chosen = scenario_cli.build_all(selection.specs, scale, engine)
    if kernel:
        from mptcpkit.lab.vmrun import run_on_kernel

        guest_args = scenario_cli.guest_refs(scenario, suite)
        guest_args += [
            "--reps",
            str(reps),
            "--emulation",
            emulation,
            "--max-reps",
            str(max_reps),
            "--scale",
            str(scale),
            "--engine",
            engine,
        ]
        guest_args += ["--label", label] if label else []
        guest_args += ["--until-ci", str(until_ci)] if until_ci is not None else []
        guest_args += ["--seed", str(seed)] if seed is not None else []
        guest_args += [] if self_check else ["--no-self-check"]
        guest_args += ["--profile"] if profile else []
        guest_args += ["--profile-freq", str(profile_freq)] if profile_freq else []
        guest_args += ["--profile-symbols", profile_symbols] if profile_symbols else []
        raise typer.Exit(run_on_kernel(kernel, modules, guest_args, label=label, db=db, json_path=json_path))
    elif modules:
        raise UsageError("--modules goes with --kernel")
    backend = None
    if ssh:
        backend, chosen = _ssh_backend(ssh, known_hosts, identity, chosen, explicit=bool(scenario or suite))
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


def _ssh_backend(
    mappings: list[str],
    known_hosts: Path | None,
    identity: list[Path] | None,
    chosen: list,  # type: ignore[type-arg]
    explicit: bool,
) -> tuple[object, list]:  # type: ignore[type-arg]
    """The SSH backend for `--ssh host=user@machine` mappings, and the scenarios it can run."""
    from mptcpkit.lab.backends.ssh import SshBackend, SshOptions

    targets = {}
    for item in mappings:
        host, sep, target = item.partition("=")
        if not sep or not host or "@" not in target:
            raise UsageError(f"--ssh wants HOST=USER@MACHINE[:PORT], e.g. client=root@bench-a; got '{item}'")
        targets[host] = target
    runnable = [s for s in chosen if {h.name for h in s.topology().hosts} <= set(targets)]
    skipped = [s.name for s in chosen if s not in runnable]
    if skipped and explicit:
        raise UsageError(
            f"--ssh maps no machine to some hosts of {', '.join(skipped)} "
            f"(mapped: {', '.join(sorted(targets))})"
        )
    if skipped:
        err.print(f"[yellow]skipping[/] {', '.join(skipped)}: their hosts are not all mapped with --ssh")
    if not runnable:
        raise UsageError("no scenario can run on the machines given with --ssh")
    options = SshOptions(
        known_hosts=known_hosts, client_keys=tuple(identity) if identity else None, targets=targets
    )
    return SshBackend(options), runnable


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
    from mptcpkit.lab.store import open_store

    effect = None if min_effect is None else min_effect / 100
    with open_store(db, create=False) as store:
        base_run, new_run = store.get_run(base), store.get_run(new)
        rows = compare_runs(store, base_run.run_id, new_run.run_id, min_effect=effect)
        if not rows:
            raise UsageError(f"runs {base_run.run_id} and {new_run.run_id} have no results to compare")
        regressed = sorted({r.scenario for r in rows if r.comparison.verdict == "regression"})
        confirmed: set[str] | None = None
        if confirm and regressed:
            confirmed = _confirm(store, base_run.run_id, new_run, regressed, effect)
        verdicts = []
        for r in rows:
            verdict = r.comparison.verdict
            if confirmed is not None and verdict == "regression" and r.scenario not in confirmed:
                verdict = "inconclusive"
            verdicts.append(verdict)
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
                    _num(c.base_median),
                    _num(c.new_median),
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


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _confirm(
    store: object, base_id: str, new_run: object, scenarios: list[str], effect: float | None
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
    err.print(f"confirming {len(chosen)} regressed scenario(s) with {reps} fresh repetitions each")
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
    again = compare_runs(store, base_id, report.run_id, min_effect=effect)  # type: ignore[arg-type]
    return {r.scenario for r in again if r.comparison.verdict == "regression"}


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
                _num(c.change.before_median),
                _num(c.change.after_median),
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


def _check_emulation_mode(mode: str) -> None:
    if mode not in ("auto", "netem", "userspace"):
        raise UsageError(f"--emulation must be auto, netem or userspace, not '{mode}'")


def _run_self_check(lab: object) -> list:  # type: ignore[type-arg]
    from mptcpkit.lab.selfcheck import self_check

    return self_check(lab, progress=_progress)  # type: ignore[arg-type]


def _print_checks(checks: list) -> None:  # type: ignore[type-arg]
    table = Table("link", "dir", "what", "configured", "measured", "error", "", title="emulation self-check")
    for c in checks:
        tol = f"{c.tolerance:.2f} pt" if c.quantity == "loss" else f"{100 * c.tolerance:.0f} %"
        verdict = f"[green]ok[/] (±{tol})" if c.ok else f"[bold red]OFF[/] (±{tol})"
        table.add_row(
            c.link,
            c.direction,
            c.quantity,
            f"{c.configured:.2f} {c.unit}",
            f"{c.measured:.2f} {c.unit}",
            f"{c.error_pct:+.1f} %",
            verdict,
        )
    err.print(table)
    bad = [c for c in checks if not c.ok]
    if bad:
        err.print(
            f"[yellow]warning:[/] {len(bad)} measurement(s) differ from the configuration by more than "
            "the tolerance; results measured on this lab may not mean what the topology says"
        )


@app.command("console")
def console_cmd(lab_id: str = typer.Argument(..., metavar="LAB"), host: str = typer.Argument(...)) -> None:
    """Open a shell on a host of a running VM lab (over vsock, else the guest's console port)."""
    from mptcpkit.lab.vm_labs import vm_lab_console

    raise typer.Exit(vm_lab_console(lab_id, host))


from mptcpkit.lab.profiling.cli import app as _profile_app  # noqa: E402
from mptcpkit.lab.scenarios.cli import app as _scenario_app  # noqa: E402

app.add_typer(_scenario_app, name="scenario")
app.add_typer(_profile_app, name="profile")

__all__ = ["Path", "app"]

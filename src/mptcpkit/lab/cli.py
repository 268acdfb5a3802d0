"""`mptcpkit lab ...`: parse, call the lab, print. No lab logic lives here."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mptcpkit.errors import UsageError

app = typer.Typer(help="The MPTCP performance lab: topologies, scenarios, results.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

EMULATION_HELP = "Link emulation: auto (netem where the kernel has it, else mptcpkit's own), netem, userspace."


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
    topology: str = typer.Argument(..., help="A built-in topology name (see `lab topologies`) or a .toml file."),
    emulation: str = typer.Option("auto", help=EMULATION_HELP),
    check: bool = typer.Option(True, "--check/--no-check", help="Run the emulation self-check once up."),
) -> None:
    """Bring a topology up and leave it running; prints the lab id (use it with exec, check, down)."""
    from mptcpkit.lab.backends.netns import NetnsBackend
    from mptcpkit.lab.topology_file import load_topology

    _check_emulation_mode(emulation)
    topo = load_topology(topology)
    lab = NetnsBackend(progress=_progress).up(topo, emulation=emulation)
    try:
        if check:
            _print_checks(_run_self_check(lab))
    except BaseException:
        lab.close()
        raise
    lab.detach()
    err.print(f"lab [bold]{lab.lab_id}[/] is up ({topo.name}, emulation: {lab.info.emulation.get('mode')}); "
              f"hosts: {', '.join(h.name for h in topo.hosts)}", highlight=False)
    err.print(f"  run a command:  mptcpkit lab exec {lab.lab_id} {topo.hosts[0].name} -- ip -br addr", highlight=False)
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
        rows.append({
            "lab_id": record.lab_id, "topology": record.topology, "backend": record.backend,
            "state": record.state if alive else "broken",
            "hosts": record.namespaces, "emulation": record.emulation.get("mode", "?"),
            "age_s": round(time.time() - record.created_at),
        })
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        err.print("no lab is running (start one with `mptcpkit lab up two-paths`)")
        return
    table = Table("lab", "topology", "state", "hosts (namespace)", "emulation", "age")
    for row in rows:
        table.add_row(row["lab_id"], row["topology"], row["state"],
                      "\n".join(f"{h} ({ns})" for h, ns in row["hosts"].items()), row["emulation"],
                      f"{row['age_s']} s")
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

    preflight()
    if all_labs:
        removed = teardown_all()
        err.print(f"removed {len(removed)} lab(s){': ' + ', '.join(removed) if removed else ''}")
        return
    if not lab_id:
        raise UsageError("name the lab to remove (see `mptcpkit lab status`) or use --all")
    record = registry.load(lab_id)
    if record is None:
        raise UsageError(f"no lab '{lab_id}' on this machine (see `mptcpkit lab status`)")
    teardown_record(record)
    err.print(f"lab {lab_id} removed")


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
        table.add_row(c.link, c.direction, c.quantity, f"{c.configured:.2f} {c.unit}", f"{c.measured:.2f} {c.unit}",
                      f"{c.error_pct:+.1f} %", verdict)
    err.print(table)
    bad = [c for c in checks if not c.ok]
    if bad:
        err.print(f"[yellow]warning:[/] {len(bad)} measurement(s) differ from the configuration by more than "
                  "the tolerance; results measured on this lab may not mean what the topology says")


__all__ = ["Path", "app"]

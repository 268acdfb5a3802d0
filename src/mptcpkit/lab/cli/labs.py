"""`lab topologies|up|status|exec|check|down|console`: bring labs up, look at them, tear them down."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from mptcpkit.errors import UsageError
from mptcpkit.lab.cli.common import EMULATION_HELP, app, err, out, print_checks, progress, run_self_check, say
from mptcpkit.lab.run_request import check_emulation_mode


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

    check_emulation_mode(emulation)
    topo = load_topology(topology)
    if kernel:
        from mptcpkit.lab.backends.vm.detached import vm_lab_up

        vm_id = vm_lab_up(topo, kernel, modules, multi_vm, emulation, progress=progress)
        err.print(
            f"VM lab [bold]{vm_id}[/] is up ({topo.name}); hosts: {', '.join(h.name for h in topo.hosts)}"
        )
        err.print(f"  open a shell:  mptcpkit lab console {vm_id} {topo.hosts[0].name}", highlight=False)
        err.print(f"  tear it down:  mptcpkit lab down {vm_id}", highlight=False)
        print(vm_id)
        return
    if modules or multi_vm:
        raise UsageError("--modules and --multi-vm go with --kernel")
    lab = NetnsBackend(progress=progress).up(topo, emulation=emulation)
    try:
        if check:
            print_checks(run_self_check(lab))
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
    from mptcpkit.lab.lifecycle import status_rows

    rows = status_rows()
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

    checks = run_self_check(attach(lab_id))
    if as_json:
        print(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        print_checks(checks)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command("down")
def down(
    lab_id: str = typer.Argument(None, metavar="[LAB]"),
    all_labs: bool = typer.Option(False, "--all", help="Remove every lab mptcpkit created on this machine."),
) -> None:
    """Tear a lab down: namespaces, links, processes, state. `--all` also removes half-built labs."""
    from mptcpkit.lab.lifecycle import down as lab_down

    lab_down(lab_id, all_labs, say)


def console_cmd(lab_id: str = typer.Argument(..., metavar="LAB"), host: str = typer.Argument(...)) -> None:
    """Open a shell on a host of a running VM lab (over vsock, else the guest's console port)."""
    from mptcpkit.lab.backends.vm.detached import vm_lab_console

    raise typer.Exit(vm_lab_console(lab_id, host))

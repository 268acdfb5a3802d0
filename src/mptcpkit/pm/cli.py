"""`mptcpkit pm`: the path-manager daemon (mptcpd drop-in), `pm status`, `pm monitor`. Parses and prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mptcpkit.errors import UsageError

app = typer.Typer(
    help="Path-manager daemon, a drop-in for mptcpd: `mptcpkit pm` (with mptcpd's flags) runs it in the foreground.",
    invoke_without_command=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help", "-?"]},
)


def _version(value: bool) -> None:
    if value:
        from mptcpkit.pm.daemon_args import version_line

        typer.echo(version_line())
        raise typer.Exit()


def _usage(ctx: typer.Context, value: bool) -> None:
    if value:
        typer.echo(ctx.get_usage())
        raise typer.Exit()


@app.callback()
def daemon(
    ctx: typer.Context,
    path_manager: Annotated[
        str | None, typer.Option("--path-manager", help="Default path-manager plugin, e.g. sspi.")
    ] = None,
    addr_flags: Annotated[
        str | None, typer.Option("--addr-flags", help="subflow,signal,backup,fullmesh")
    ] = None,
    notify_flags: Annotated[
        str | None, typer.Option("--notify-flags", help="existing,skip_link_local,skip_loopback,check_route")
    ] = None,
    load_plugins: Annotated[
        str | None, typer.Option("--load-plugins", help="Only these plugins, e.g. addr_adv,sspi.")
    ] = None,
    plugin_dir: Annotated[
        str | None, typer.Option("--plugin-dir", metavar="DIR", help="Directory of Python plugin files.")
    ] = None,
    log: Annotated[str | None, typer.Option("-l", "--log", help="stderr, syslog, journal or null.")] = None,
    debug: Annotated[bool, typer.Option("-d", "--debug", help="Debug log messages.")] = False,
    version: Annotated[
        bool, typer.Option("-V", "--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
    usage: Annotated[
        bool,
        typer.Option(
            "--usage", callback=_usage, is_eager=True, help="Print a short usage message (as mptcpd)."
        ),
    ] = False,
    config: Annotated[
        str | None,
        typer.Option(
            "-c", "--config", help="mptcpd.conf to read (default /etc/mptcpd/mptcpd.conf if present)."
        ),
    ] = None,
    netns: Annotated[str | None, typer.Option("--netns", help="Manage this named network namespace.")] = None,
    state_file: Annotated[
        str | None, typer.Option("--state-file", help="Where `pm status` finds the daemon.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics on this port.")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave endpoints and limits in place on exit (as mptcpd).")
    ] = False,
    control: Annotated[
        str | None,
        typer.Option("--control", metavar="BUS", help="Control API on D-Bus: system, session or an address."),
    ] = None,
    control_group: Annotated[
        str | None,
        typer.Option("--control-group", metavar="GROUP", help="Group allowed to use the control API."),
    ] = None,
) -> None:
    """Run the path-manager daemon in the foreground (mptcpd's command-line flags and mptcpd.conf apply)."""
    if ctx.invoked_subcommand is not None:
        return
    from mptcpkit.pm.daemon_args import start

    start(
        config=config,
        path_manager=path_manager,
        addr_flags=addr_flags,
        notify_flags=notify_flags,
        load_plugins=load_plugins,
        plugin_dir=plugin_dir,
        log=log,
        debug=debug,
        netns=netns,
        state_file=state_file,
        metrics_port=metrics_port,
        keep=keep,
        control=control,
        control_group=control_group,
    )


@app.command("check-config")
def check_config(ctx: typer.Context) -> None:
    """Check mptcpd.conf and the flags strictly: every warning the daemon would log is an error (exit 2).

    Flags go before the subcommand: `mptcpkit pm -c FILE --addr-flags subflow check-config`. Also loads the
    plugins (trust rules, name clashes) without touching the kernel."""
    from mptcpkit.pm.check import check

    parent = ctx.parent
    assert parent is not None
    problems, summary = check(dict(parent.params))
    for line in summary:
        typer.echo(line)
    for p in problems:
        typer.echo(f"warning: {p}", err=True)
    if problems:
        raise UsageError(f"{len(problems)} problem(s); the daemon would start but warn (mptcpd's behaviour)")
    typer.echo("configuration ok")


@app.command()
def status(
    netns: Annotated[str | None, typer.Option("--netns", help="The namespace the daemon manages.")] = None,
    state_file: Annotated[
        Path | None, typer.Option("--state-file", help="State file the daemon writes.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the running daemon's view: plugins, addresses, connections, and the kernel's endpoints/limits."""
    from mptcpkit.netlink.client import MptcpPmClient
    from mptcpkit.pm.observe import alive, default_state_file

    path = state_file or default_state_file(netns)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no mptcpkit pm running (no state file {path})") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read state file {path}: {exc}") from None
    state["running"] = alive(int(state.get("pid", 0)))
    with MptcpPmClient(netns=netns) as pm:
        state["kernel"] = {
            "endpoints": [e.to_dict() for e in pm.dump_endpoints()],
            "limits": pm.get_limits().to_dict(),
        }
    if as_json:
        typer.echo(json.dumps(state, indent=1))
        return
    _print_status(state)


def _print_status(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    c.print(
        f"[bold]mptcpkit pm[/] pid {s['pid']} ({'running' if s['running'] else 'NOT running'})"
        + (f" netns {s['netns']}" if s.get("netns") else "")
    )
    cfg = s["config"]
    pmgr = cfg["path_manager"] or "(by priority)"
    c.print(
        f"path-manager: {pmgr}  addr-flags: {','.join(cfg['addr_flags']) or '-'}"
        f"  notify-flags: {','.join(cfg['notify_flags']) or '-'}"
    )
    c.print("plugins: " + ", ".join(p["name"] + (" (default)" if p["default"] else "") for p in s["plugins"]))
    for w in s.get("warnings", []):
        c.print(f"[yellow]warning:[/] {w}", highlight=False, markup=True)
    t = Table(title="addresses reported to plugins")
    t.add_column("ifindex")
    t.add_column("address")
    for a in s["addresses"]:
        t.add_row(str(a["ifindex"]), a["addr"])
    c.print(t)
    t = Table(title="kernel endpoints")
    for col in ("id", "address", "flags", "ifindex", "owned"):
        t.add_column(col)
    owned = {e["id"] for e in s["owned_endpoints"]}
    for e in s["kernel"]["endpoints"]:
        t.add_row(
            str(e["id"]),
            str(e["addr"]),
            ",".join(e["flags"]),
            str(e["ifindex"]),
            "yes" if e["id"] in owned else "",
        )
    c.print(t)
    lim = s["kernel"]["limits"]
    c.print(f"limits: subflows {lim['subflows']} add_addr_accepted {lim['add_addr_accepted']}")
    t = Table(title="connections")
    for col in ("token", "plugin", "local", "remote", "side", "subflows"):
        t.add_column(col)
    for conn in s["connections"]:
        t.add_row(
            f"{conn['token']:08x}",
            conn["plugin"],
            conn["laddr"],
            conn["raddr"],
            "server" if conn["server_side"] else "client",
            str(len(conn["subflows"]) + 1),
        )
    c.print(t)
    c.print("events: " + ", ".join(f"{k} {v}" for k, v in sorted(s["events"].items())))


@app.command()
def monitor(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    netns: Annotated[str | None, typer.Option("--netns", help="Watch this named network namespace.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Stop after this many seconds.")] = None,
) -> None:
    """Print every mptcp_pm event (like `ip mptcp monitor`, with listener events decoded)."""
    from mptcpkit.netlink.client import MptcpPmClient
    from mptcpkit.pm.format import event_line

    with MptcpPmClient(netns=netns) as pm:
        pm.subscribe()
        sys.stderr.write("monitoring mptcp_pm events" + (f" in {netns}" if netns else "") + "\n")
        sys.stderr.flush()
        try:
            for e in pm.events(timeout=timeout):
                line = json.dumps(e.to_dict()) if as_json else event_line(e)
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass


BusOpt = Annotated[
    str, typer.Option("--bus", help="D-Bus of the daemon's control API: system, session or an address.")
]
NetnsOpt = Annotated[str | None, typer.Option("--netns", help="The namespace the daemon manages.")]


@app.command()
def connections(
    bus: BusOpt = "system", netns: NetnsOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """List the daemon's MPTCP connections and subflows (control API)."""
    from mptcpkit.pm.control_client import call

    conns = call(bus, netns, "ListConnections")
    if as_json:
        typer.echo(json.dumps(conns, indent=1))
        return
    for c in conns:
        typer.echo(
            f"{c['token']:08x} {c['plugin'] or '-'} {c['laddr']} -> {c['raddr']}"
            f" {'server' if c['server_side'] else 'client'} subflows {len(c['subflows']) + 1}"
        )
        for la, ra in c["subflows"]:
            typer.echo(f"  subflow {la} -> {ra}")


@app.command()
def events(
    bus: BusOpt = "system",
    netns: NetnsOpt = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Only these event types (repeat).")
    ] = None,
    token: Annotated[str | None, typer.Option("--token", help="Only this connection (hex token).")] = None,
    count: Annotated[int | None, typer.Option("--count", help="Stop after this many events.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Stop after this many seconds.")] = None,
) -> None:
    """Follow the daemon's mptcp_pm events as JSON lines, filtered by type and token (control API)."""
    from mptcpkit.pm.control_client import EventFilter
    from mptcpkit.pm.control_client import events as follow

    try:
        tok = int(token, 16) if token is not None else None
    except ValueError:
        raise UsageError(f"--token {token!r} is not a hex token") from None

    def out(d: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(d) + "\n")
        sys.stdout.flush()

    def ready() -> None:
        sys.stderr.write("following events\n")
        sys.stderr.flush()

    follow(bus, netns, EventFilter(tuple(type_ or ()), tok, count, timeout), out, ready)


def _token(value: str) -> int:
    try:
        return int(value, 16)
    except ValueError:
        raise UsageError(f"{value!r} is not a hex token") from None


@app.command("subflow-add")
def subflow_add(
    token: str,
    local: str,
    remote: str,
    port: int,
    backup: Annotated[bool, typer.Option("--backup")] = False,
    bus: BusOpt = "system",
    netns: NetnsOpt = None,
) -> None:
    """Open a subflow LOCAL -> REMOTE:PORT on connection TOKEN (user-space PM, control API)."""
    from mptcpkit.pm.control_client import call

    call(bus, netns, "AddSubflow", _token(token), local, remote, port, backup)


@app.command("subflow-remove")
def subflow_remove(
    token: str,
    local: str,
    local_port: int,
    remote: str,
    remote_port: int,
    bus: BusOpt = "system",
    netns: NetnsOpt = None,
) -> None:
    """Close the subflow LOCAL:LOCAL_PORT -> REMOTE:REMOTE_PORT of connection TOKEN (control API)."""
    from mptcpkit.pm.control_client import call

    call(bus, netns, "RemoveSubflow", _token(token), local, local_port, remote, remote_port)


@app.command("set-backup")
def set_backup(
    token: str,
    local: str,
    local_port: int,
    remote: str,
    remote_port: int,
    backup: Annotated[bool, typer.Option("--backup/--no-backup")] = True,
    bus: BusOpt = "system",
    netns: NetnsOpt = None,
) -> None:
    """Set or clear the backup flag of one subflow (MP_PRIO, user-space PM, control API)."""
    from mptcpkit.pm.control_client import call

    call(bus, netns, "SetBackup", _token(token), local, local_port, remote, remote_port, backup)


@app.command("run")
def run_alias(ctx: typer.Context) -> None:
    """Same as `mptcpkit pm` with no subcommand (flags go before `run`)."""
    parent = ctx.parent
    assert parent is not None
    params = dict(parent.params)
    params.pop("version", None)
    params.pop("usage", None)
    ctx.invoked_subcommand = None
    parent.invoked_subcommand = None
    daemon(parent, **params)  # type: ignore[arg-type]

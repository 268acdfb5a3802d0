"""`mptcpkit run/enable/disable/debug/check`: the user tools' commands. Parses and prints, nothing else."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup

RUN_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False}
TARGET_COMMAND = "target"


class CheckGroup(TyperGroup):
    """`check` takes either a subcommand (`serve`) or a TARGET: anything that is not a subcommand is a target."""

    def __init__(self, **attrs: Any) -> None:
        attrs["subcommand_metavar"] = "[TARGET [--timeout S]] | serve [--host H --port P]"
        super().__init__(**attrs)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                             list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return TARGET_COMMAND, self.commands[TARGET_COMMAND], args
        return super().resolve_command(ctx, args)


check_app = typer.Typer(
    cls=CheckGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "Is MPTCP working? Without argument: diagnose this system, each problem with the command that fixes "
        "it. With TARGET (HOST:PORT or URL): connect with MPTCP and report whether the connection is MPTCP end "
        "to end and how many subflows it has. `check serve`: run an HTTP service telling each client whether "
        "it uses MPTCP (like check.mptcp.dev)."
    ),
)


@check_app.callback()
def check_system(ctx: typer.Context) -> None:
    """Diagnose this system (no TARGET), check a server (TARGET), or serve the check (serve)."""
    if ctx.invoked_subcommand is not None:
        return
    from mptcpkit.tools import syscheck

    report = syscheck.diagnose()
    typer.echo(syscheck.format_report(report))
    raise typer.Exit(1 if report.problems else 0)


@check_app.command(TARGET_COMMAND, hidden=True)
def check_target(
    target: str = typer.Argument(..., help="HOST:PORT, [IPv6]:PORT or http(s)://URL"),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds to connect and exchange data."),
    wait: float = typer.Option(0.5, "--wait", help="Seconds to wait for extra subflows before reporting."),
) -> None:
    """Connect to TARGET with MPTCP and report MPTCP end to end / fallback / subflows."""
    from mptcpkit.tools import checkclient

    result = checkclient.check_target(target, timeout=timeout, wait=wait)
    typer.echo(checkclient.format_result(result))
    raise typer.Exit(0 if result.mptcp else 1)


@check_app.command("serve")
def check_serve(
    host: str = typer.Option("::", "--host", help="Address to listen on (`::` takes IPv4 and IPv6)."),
    port: int = typer.Option(8080, "--port", help="TCP port to listen on."),
) -> None:
    """Serve the MPTCP check over HTTP: plain text for curl, HTML for browsers, JSON on request."""
    from mptcpkit.tools.checkserve import ServeConfig, serve_forever

    asyncio.run(serve_forever(ServeConfig(host=host, port=port), announce=lambda m: typer.echo(m, err=True)))


def run(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "-d", "--debug", help="Log every socket converted to MPTCP (stderr)."),
    program: list[str] = typer.Argument(None, metavar="-- PROGRAM [ARGS...]", help="The program to run."),
) -> None:
    """Run PROGRAM with its TCP sockets created as MPTCP sockets (LD_PRELOAD shim + GODEBUG for Go)."""
    from mptcpkit.tools import preload

    preload.exec_program([*(program or []), *ctx.args], debug=debug)


def enable(
    unit: str = typer.Argument(..., help="systemd unit, e.g. nginx or nginx.service"),
    unit_dir: Path | None = typer.Option(None, "--unit-dir", envvar="MPTCPKIT_SYSTEMD_DIR",
                                         help="Where drop-ins go (default /etc/systemd/system)."),
) -> None:
    """Make a systemd service use MPTCP through a drop-in file, then daemon-reload."""
    from mptcpkit.tools import systemd

    for line in systemd.enable(unit, unit_dir=unit_dir):
        typer.echo(line)


def disable(
    unit: str = typer.Argument(..., help="systemd unit given to `mptcpkit enable`"),
    unit_dir: Path | None = typer.Option(None, "--unit-dir", envvar="MPTCPKIT_SYSTEMD_DIR",
                                         help="Where drop-ins go (default /etc/systemd/system)."),
) -> None:
    """Remove exactly what `mptcpkit enable` added, then daemon-reload."""
    from mptcpkit.tools import systemd

    for line in systemd.disable(unit, unit_dir=unit_dir):
        typer.echo(line)


def debug(
    ctx: typer.Context,
    output: Path | None = typer.Option(None, "-o", "--output",
                                       help="Report file (Markdown); the raw outputs go next to it as .tar.gz."),
    reproduce: bool = typer.Option(False, "--reproduce", "-r",
                                   help="Snapshot, record MPTCP events while you reproduce, snapshot again."),
    duration: float | None = typer.Option(None, "--duration", help="With --reproduce: record for S seconds."),
    redact: bool = typer.Option(False, "--redact", help="Replace addresses and host names consistently."),
    command: list[str] = typer.Argument(None, metavar="[-- CMD...]",
                                        help="With --reproduce: record while CMD runs."),
) -> None:
    """Collect a bug report about MPTCP on this machine: Markdown report + tar.gz of raw outputs."""
    from mptcpkit.errors import UsageError
    from mptcpkit.tools import debuginfo

    cmd = [*(command or []), *ctx.args]
    if (duration is not None or cmd) and not reproduce:
        raise UsageError("--duration and a command need --reproduce")
    if duration is not None and cmd:
        raise UsageError("give either --duration or a command, not both")
    result = debuginfo.collect_report(
        output=output, reproduce=reproduce, duration=duration, command=cmd or None, redact=redact,
        log=lambda m: typer.echo(m, err=True),
    )
    if output is None:
        sys.stdout.write(result.markdown)
    typer.echo(f"report: {result.report_path}\nraw outputs: {result.archive_path}", err=True)


def register(app: typer.Typer) -> None:
    """Add the user tools' commands to the top-level app."""
    app.command("run", context_settings=RUN_SETTINGS)(run)
    app.command("enable")(enable)
    app.command("disable")(disable)
    app.command("debug", context_settings={"allow_extra_args": True, "allow_interspersed_args": False})(debug)
    app.add_typer(check_app, name="check")

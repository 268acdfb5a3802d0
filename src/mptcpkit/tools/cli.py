"""`mptcpkit run/enable/disable/debug/check`: the user tools' commands. Parses and prints, nothing else."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

RUN_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False}
TARGET_COMMAND = "target"


class CheckGroup(TyperGroup):
    """`check` takes a subcommand (`serve`) or a TARGET: any word that is not a subcommand is a target."""

    def __init__(self, **attrs: Any) -> None:
        attrs["subcommand_metavar"] = "[TARGET [--timeout S] [--wait S]] | serve [--host H --port P]"
        super().__init__(**attrs)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return TARGET_COMMAND, self.commands[TARGET_COMMAND], args
        return super().resolve_command(ctx, args)


check_app = typer.Typer(
    cls=CheckGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "Is MPTCP working?\n\n"
        "`mptcpkit check`: diagnose this system; each problem comes with the command that fixes it.\n\n"
        "`mptcpkit check HOST:PORT|URL`: connect with MPTCP and report whether the connection is MPTCP end "
        "to end (no fallback) and its subflows.\n\n"
        "`mptcpkit check serve`: an HTTP service telling each client whether it uses MPTCP."
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
    target: Annotated[str, typer.Argument(help="HOST:PORT, [IPv6]:PORT or http(s)://URL")],
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to connect and exchange data.")] = 5.0,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for extra subflows.")] = 0.5,
) -> None:
    """Connect to TARGET with MPTCP and report MPTCP end to end / fallback / subflows (exit 1: not MPTCP)."""
    from mptcpkit.tools import checkclient

    result = checkclient.check_target(target, timeout=timeout, wait=wait)
    typer.echo(checkclient.format_result(result))
    raise typer.Exit(0 if result.mptcp else 1)


@check_app.command("serve")
def check_serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (`::` = IPv6 and IPv4).")] = "::",
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on (0: any free port).")] = 8080,
    head_timeout: Annotated[
        float, typer.Option("--head-timeout", help="Seconds a client has to send a complete request.")
    ] = 10.0,
    idle_timeout: Annotated[
        float, typer.Option("--idle-timeout", help="Seconds an idle keep-alive connection stays open.")
    ] = 15.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", help="Concurrent clients served; more are closed at once.")
    ] = 10000,
    cert: Annotated[
        Path | None, typer.Option("--cert", help="PEM certificate (chain): serve HTTPS instead of HTTP.")
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="PEM private key of --cert (if not in the --cert file).")
    ] = None,
) -> None:
    """Serve the MPTCP check over HTTP(S): plain text for curl/wget, HTML for browsers, JSON on request.

    Paths: / (the check), /files/ (test downloads of 1M to 1000M generated on the fly), others: 404.
    """
    from mptcpkit.errors import UsageError
    from mptcpkit.tools.checkserve import ServeConfig, serve_forever

    if key is not None and cert is None:
        raise UsageError("--key needs --cert")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: not a TCP port (0 to 65535)")
    config = ServeConfig(
        host=host,
        port=port,
        head_timeout=head_timeout,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
        cert=cert,
        key=key,
    )
    asyncio.run(serve_forever(config, announce=lambda m: typer.echo(m, err=True)))


def run(
    ctx: typer.Context,
    program: Annotated[
        list[str] | None, typer.Argument(metavar="-- PROGRAM [ARGS...]", help="The program to run.")
    ] = None,
    debug: Annotated[bool, typer.Option("-d", "--debug", help="Log each socket converted to MPTCP.")] = False,
) -> None:
    """Run PROGRAM with its TCP sockets created as MPTCP sockets (LD_PRELOAD shim + GODEBUG for Go).

    `mptcpkit run help` shows this help, as `mptcpize run help` does.
    """
    from mptcpkit.tools import preload

    argv = [*(program or []), *ctx.args]
    if argv in (["help"], []):
        show_help(ctx)
        if not argv:
            raise typer.Exit(2)
        return
    preload.exec_program(argv, debug=debug)


def show_help(ctx: Any) -> None:
    """Print a command's help (typer prints rich help itself; plain click returns it)."""
    text = ctx.get_help()
    if text:
        typer.echo(text)


def help_command(
    ctx: typer.Context,
    words: Annotated[
        list[str] | None, typer.Argument(metavar="[COMMAND...]", help="e.g. `pm` or `lab run`.")
    ] = None,
) -> None:
    """Show the help of mptcpkit or of one of its commands (`mptcpkit help lab run`), like `mptcpize help`."""
    from mptcpkit.errors import UsageError

    target: Any = ctx.find_root()
    for word in words or []:
        group = target.command
        sub = group.get_command(target, word) if hasattr(group, "get_command") else None
        if sub is None:
            raise UsageError(
                f"no command {' '.join(words or [])!r}", hint="`mptcpkit --help` lists the commands"
            )
        target = type(target)(sub, info_name=word, parent=target)
    show_help(target)


UnitDir = Annotated[
    Path | None,
    typer.Option(
        "--unit-dir", envvar="MPTCPKIT_SYSTEMD_DIR", help="Drop-in base dir (default /etc/systemd/system)."
    ),
]


def enable(
    unit: Annotated[
        str,
        typer.Argument(help="systemd service: nginx, nginx.service, getty@tty1.service or a unit file path"),
    ],
    unit_dir: UnitDir = None,
) -> None:
    """Make a systemd service use MPTCP through a drop-in file (unit untouched), then daemon-reload.

    The unit file is the one systemd reports (`systemctl show -P FragmentPath`), template instances
    included; without a running systemd the standard unit directories are searched.
    """
    from mptcpkit.tools import systemd

    for line in systemd.enable(unit, unit_dir=unit_dir):
        typer.echo(line)


def disable(
    unit: Annotated[str, typer.Argument(help="systemd unit (or unit file path) given to `mptcpkit enable`")],
    unit_dir: UnitDir = None,
) -> None:
    """Remove exactly what `mptcpkit enable` added, then daemon-reload."""
    from mptcpkit.tools import systemd

    for line in systemd.disable(unit, unit_dir=unit_dir):
        typer.echo(line)


def _debug_version(value: bool) -> None:
    if value:
        from mptcpkit import __version__

        typer.echo(f"mptcpkit debug: version {__version__}")
        raise typer.Exit()


def debug(
    ctx: typer.Context,
    command: Annotated[
        list[str] | None,
        typer.Argument(metavar="[-- CMD...]", help="With --reproduce: record while CMD runs."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Report file (.md); raw outputs go beside it (.tar.gz)."),
    ] = None,
    reproduce: Annotated[
        bool,
        typer.Option(
            "--reproduce", "-r", help="Snapshot, record MPTCP events while you reproduce, snapshot."
        ),
    ] = False,
    duration: Annotated[
        float | None, typer.Option("--duration", help="With --reproduce: record S seconds.")
    ] = None,
    redact: Annotated[
        bool, typer.Option("--redact", help="Replace addresses and host names consistently.")
    ] = False,
    collect: Annotated[
        bool,
        typer.Option(
            "-c", "--collect", help="Collect a snapshot and exit (the default; as mptcp-get-debug -c)."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "-v", "--version", is_eager=True, callback=_debug_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Collect a bug report about MPTCP on this machine: Markdown report + tar.gz of raw outputs.

    The options of mptcpd's mptcp-get-debug work: -c/--collect (snapshot), -r/--reproduce, -v/--version.
    --reproduce records until Enter is pressed, for --duration seconds, or while `-- CMD...` runs.
    """
    from mptcpkit.errors import UsageError
    from mptcpkit.tools import debuginfo

    cmd = [*(command or []), *ctx.args]
    if collect and reproduce:
        raise UsageError("--collect and --reproduce exclude each other")
    if (duration is not None or cmd) and not reproduce:
        raise UsageError("--duration and a command need --reproduce")
    if duration is not None and cmd:
        raise UsageError("give either --duration or a command, not both")
    result = debuginfo.collect_report(
        output=output,
        reproduce=reproduce,
        duration=duration,
        command=cmd or None,
        redact=redact,
        log=lambda m: typer.echo(m, err=True),
    )
    if output is None:
        sys.stdout.write(result.markdown)
    typer.echo(f"report: {result.report_path}\nraw outputs: {result.archive_path}", err=True)


def register(app: typer.Typer) -> None:
    """Add the user tools' commands to the top-level app."""
    app.command("run", context_settings=RUN_SETTINGS)(run)
    app.command("help")(help_command)
    app.command("enable")(enable)
    app.command("disable")(disable)
    app.command("debug", context_settings={"allow_extra_args": True, "allow_interspersed_args": False})(debug)
    app.add_typer(check_app, name="check")

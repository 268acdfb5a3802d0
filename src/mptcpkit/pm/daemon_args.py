"""The daemon's command line without typer: `mptcpkit pm [FLAGS]` starts here so the running daemon never
imports typer, click or rich (together ~7 MB of RSS it would carry for its whole life).

The flags are mptcpd's, plus mptcpkit's own. The typer command in `cli.py` declares the same flags for
`--help` and the man page; `tests/pm/test_cli_args.py` checks that the two never drift apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mptcpkit.errors import MptcpkitError, UsageError

SUBCOMMANDS = (
    "status",
    "monitor",
    "check-config",
    "run",
    "connections",
    "events",
    "subflow-add",
    "subflow-remove",
    "set-backup",
)
DAEMON_HELP = (
    "Run the path-manager daemon in the foreground (mptcpd's command-line flags and mptcpd.conf apply)."
)


class _DaemonParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `mptcpkit pm --help`)")


class _Usage(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        parser.print_usage()
        parser.exit()


def make_parser() -> argparse.ArgumentParser:
    p = _DaemonParser(prog="mptcpkit pm", description=DAEMON_HELP, add_help=False)
    p.add_argument("-h", "--help", "-?", action="help", help="Show this message and exit.")
    p.add_argument("--usage", action=_Usage, nargs=0, help="Print a short usage message (as mptcpd).")
    p.add_argument("--path-manager", metavar="PLUGIN", help="Default path-manager plugin, e.g. sspi.")
    p.add_argument("--addr-flags", metavar="FLAGS", help="subflow,signal,backup,fullmesh")
    p.add_argument(
        "--notify-flags", metavar="FLAGS", help="existing,skip_link_local,skip_loopback,check_route"
    )
    p.add_argument("--load-plugins", metavar="PLUGINS", help="Only these plugins, e.g. addr_adv,sspi.")
    p.add_argument("--plugin-dir", metavar="DIR", help="Directory of Python plugin files.")
    p.add_argument("-l", "--log", metavar="DEST", help="stderr, syslog, journal or null.")
    p.add_argument("-d", "--debug", action="store_true", help="Debug log messages.")
    p.add_argument("-V", "--version", action="store_true", help="Print version.")
    p.add_argument(
        "-c", "--config", metavar="FILE", help="mptcpd.conf to read (default /etc/mptcpd/mptcpd.conf)."
    )
    p.add_argument("--netns", metavar="NAME", help="Manage this named network namespace.")
    p.add_argument("--state-file", metavar="PATH", help="Where `pm status` finds the daemon.")
    p.add_argument("--metrics-port", metavar="PORT", type=int, help="Serve Prometheus metrics on this port.")
    p.add_argument("--control", metavar="BUS", help="Control API on D-Bus: system, session or an address.")
    p.add_argument("--control-group", metavar="GROUP", help="Group allowed to use the control API.")
    p.add_argument(
        "--keep", action="store_true", help="Leave endpoints and limits in place on exit (as mptcpd)."
    )
    return p


def version_line() -> str:
    from mptcpkit import __version__

    return f"mptcpkit pm {__version__} (mptcpd 0.13 compatible)"


def start(
    *,
    config: str | None,
    path_manager: str | None,
    addr_flags: str | None,
    notify_flags: str | None,
    load_plugins: str | None,
    plugin_dir: str | None,
    log: str | None,
    debug: bool,
    netns: str | None,
    state_file: str | None,
    metrics_port: int | None,
    keep: bool,
    control: str | None = None,
    control_group: str | None = None,
) -> None:
    """Load the configuration the way mptcpd does and run the daemon until SIGTERM/SIGINT."""
    from mptcpkit.pm.config import load
    from mptcpkit.pm.daemon import run_daemon

    if config is not None and Path(config).is_dir():
        raise UsageError(f"-c {config}: is a directory, not a configuration file")
    cfg = load(
        Path(config) if config is not None else None,
        {
            "path-manager": path_manager,
            "addr-flags": addr_flags,
            "notify-flags": notify_flags,
            "load-plugins": load_plugins,
            "plugin-dir": plugin_dir,
            "log": log,
            "control": control,
            "control-group": control_group,
        },
        debug=debug,
        netns=netns,
        state_file=Path(state_file) if state_file else None,
        metrics_port=metrics_port,
        restore_on_exit=not keep,
    )
    run_daemon(cfg)


_NO_VALUE = ("-d", "--debug", "-V", "--version", "--keep", "--usage")
_HELP = ("-h", "--help", "-?")


def wants_lean(argv: list[str]) -> bool:
    """True when `argv` (after `pm`) starts the daemon: no subcommand, no --help (typer shows the full help
    with the subcommands)."""
    expect_value = False
    for a in argv:
        if expect_value:
            expect_value = False
        elif a in _HELP:
            return False
        elif a.startswith("-"):
            expect_value = "=" not in a and a not in _NO_VALUE and not (a.startswith("-d") and len(a) > 2)
        else:
            return a not in SUBCOMMANDS
    return True


def main(argv: list[str]) -> None:
    """`mptcpkit pm [FLAGS]`: parse with argparse and run; errors are one line and exit 2."""
    try:
        ns = make_parser().parse_args(argv)
        if ns.version:
            sys.stdout.write(version_line() + "\n")
            return
        options = vars(ns)
        for k in ("version", "usage", "help"):
            options.pop(k, None)
        start(**options)
    except MptcpkitError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: one line, the traceback only on request (as the main CLI)
        import os

        if os.environ.get("MPTCPKIT_DEBUG"):
            raise
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {exc}\n")
        sys.stderr.write("  hint: run again with MPTCPKIT_DEBUG=1 for the traceback, and please report it\n")
        sys.exit(1)

"""The `mptcpkit` command: wires each part's command group; parses and prints, nothing else."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from mptcpkit import __version__
from mptcpkit.errors import MptcpkitError

app = typer.Typer(
    name="mptcpkit",
    help="The Multipath TCP toolbox: performance lab, path-manager daemon, mptcpize, debug and check.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mptcpkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """The Multipath TCP toolbox."""


def _register_parts() -> None:
    from mptcpkit.lab.cli import app as lab_app
    from mptcpkit.pm.cli import app as pm_app
    from mptcpkit.tools.cli import register as register_tools

    app.add_typer(lab_app, name="lab")
    app.add_typer(pm_app, name="pm")
    register_tools(app)


_register_parts()


def main() -> None:
    """Entry point: turns every expected error into one clear line and an exit code, never a traceback."""
    err = Console(stderr=True)
    try:
        app()
    except MptcpkitError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug or an unforeseen condition: one line, the traceback only on request
        if os.environ.get("MPTCPKIT_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {exc}", highlight=False, markup=True)
        err.print(
            "  hint: run again with MPTCPKIT_DEBUG=1 for the traceback, and please report it", highlight=False
        )
        sys.exit(1)


if __name__ == "__main__":
    main()

"""The `mptcpkit` console script: `mptcpkit pm [FLAGS]` (the daemon) takes a lean path without typer/rich
and the rest of the CLI; everything else goes to `mptcpkit.cli`."""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["pm"]:
        from mptcpkit.pm.daemon_args import main as pm_main
        from mptcpkit.pm.daemon_args import wants_lean

        if wants_lean(argv[1:]):
            pm_main(argv[1:])
            return
    from mptcpkit.cli import main as cli_main

    cli_main()

"""`python -m mptcpkit.pm`: the daemon (lean, without typer) or the `pm` subcommands."""

from __future__ import annotations

import sys

from mptcpkit.pm.daemon_args import main as daemon_main
from mptcpkit.pm.daemon_args import wants_lean


def main() -> None:
    argv = sys.argv[1:]
    if wants_lean(argv):
        daemon_main(argv)
        return
    from mptcpkit.errors import MptcpkitError
    from mptcpkit.pm.cli import app

    try:
        app(prog_name="mptcpkit pm")
    except MptcpkitError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

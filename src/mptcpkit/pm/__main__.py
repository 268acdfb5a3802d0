"""`python -m mptcpkit.pm`: the daemon without the rest of mptcpkit's CLI (smaller memory footprint)."""

from __future__ import annotations

import sys

from mptcpkit.errors import MptcpkitError
from mptcpkit.pm.cli import app


def main() -> None:
    try:
        app(prog_name="mptcpkit pm")
    except MptcpkitError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

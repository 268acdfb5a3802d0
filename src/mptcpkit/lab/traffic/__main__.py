"""`python -m mptcpkit.lab.traffic server|client ...`: the engine as a process (one JSON result on stdout)."""

from __future__ import annotations

import sys

from mptcpkit.lab.traffic.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Helpers shared by the user-tools tests (imported as a plain module: tests/ has no package)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MPTCPKIT = str(Path(sys.executable).with_name("mptcpkit"))


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Terminate a process we started, kill it if it does not exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""Fixtures of the user-tools tests: the mptcpkit executable and a running `check serve`."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator

import pytest
from tl_helpers import MPTCPKIT, stop


@pytest.fixture
def start_serve() -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], int]]]:
    """Factory: start_serve(*extra_args, netns=None) -> (process, port) of `mptcpkit check serve --port 0`."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        *extra: str, netns: str | None = None, host: str = "127.0.0.1"
    ) -> tuple[subprocess.Popen[bytes], int]:
        argv = [MPTCPKIT, "check", "serve", "--host", host, "--port", "0", *extra]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        procs.append(proc)
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        m = re.search(r":(\d+)$", line.strip())
        assert m, f"check serve did not start: {line!r}"
        return proc, int(m.group(1))

    yield start
    for p in procs:
        stop(p)

"""Shared test fixtures: real network namespaces, cleaned up even when a test fails."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ARTIFACTS = Path(
    os.environ.get("MPTCPKIT_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts")
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (network namespaces)")
        for item in items:
            if "needs_root" in item.keywords:
                item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_root: needs root (network namespaces)")


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def make_netns() -> Iterator[Callable[[str], str]]:
    """Factory: make_netns("cli") creates a namespace with a unique name and returns that name.

    Every namespace created is deleted at teardown (processes inside are killed first), pass or fail.
    """
    created: list[str] = []
    tag = uuid.uuid4().hex[:6]

    def make(role: str) -> str:
        name = f"mkt-t{tag}-{role}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        created.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    yield make
    for name in reversed(created):
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def veth_pair(make_netns: Callable[[str], str]) -> tuple[str, str]:
    """Two namespaces joined by one veth pair: 10.0.1.1/24 (eth0 in the first), 10.0.1.2/24 (eth0 in the second)."""
    a, b = make_netns("a"), make_netns("b")
    subprocess.run(
        ["ip", "link", "add", "mkttmp0", "netns", a, "type", "veth", "peer", "mkttmp1", "netns", b],
        check=True,
    )
    for ns, dev, addr in ((a, "mkttmp0", "10.0.1.1/24"), (b, "mkttmp1", "10.0.1.2/24")):
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "name", "eth0"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
    return a, b


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests save screenshots and other evidence (kept after the run)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS

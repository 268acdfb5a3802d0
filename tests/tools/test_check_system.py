"""`mptcpkit check` on real namespaces: each problem is reported with a command, and that command fixes it."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable

import pytest
from tl_helpers import MPTCPKIT

pytestmark = pytest.mark.needs_root


def check(ns: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, MPTCPKIT, "check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def apply(ns: str, fix: str) -> None:
    for cmd in fix.split("#", 1)[0].split(";"):
        if cmd.strip():
            subprocess.run(["ip", "netns", "exec", ns, *shlex.split(cmd)], check=True, capture_output=True)


@pytest.fixture
def multihomed(make_netns: Callable[[str], str]) -> str:
    """A namespace with two interfaces holding global addresses (a veth pair, both ends inside)."""
    ns = make_netns("tl-chk")
    subprocess.run(["ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True)
    for dev, addr in (("v0", "10.9.0.1/24"), ("v1", "10.9.1.1/24")):
        subprocess.run(["ip", "-n", ns, "addr", "add", addr, "dev", dev], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
    return ns


def test_problems_come_with_commands_that_fix_them(multihomed: str) -> None:
    ns = multihomed
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.mptcp.enabled=0"], check=True)
    first = check(ns)
    assert first.returncode == 1
    assert "PROBLEM MPTCP is disabled" in first.stdout
    assert "PROBLEM no MPTCP endpoints" in first.stdout
    for line in first.stdout.splitlines():
        if line.startswith("PROBLEM"):
            idx = first.stdout.splitlines().index(line)
            assert any("fix: " in nxt for nxt in first.stdout.splitlines()[idx + 1 : idx + 3]), line
    fixes = [ln.split("fix: ", 1)[1] for ln in first.stdout.splitlines() if "fix: " in ln]
    apply(ns, fixes[0])  # sysctl -w net.mptcp.enabled=1
    apply(ns, next(f for f in fixes if f.startswith("ip mptcp endpoint add")))
    second = check(ns)
    assert second.returncode == 0, second.stdout
    assert "no problem found" in second.stdout
    assert "1 MPTCP endpoint(s)" in second.stdout


def test_userspace_pm_without_daemon_and_low_limits(multihomed: str) -> None:
    ns = multihomed
    subprocess.run(
        ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.mptcp.path_manager=userspace"], check=True
    )
    out = check(ns).stdout
    assert "path manager is `userspace` but no path-manager daemon runs" in out
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.mptcp.path_manager=kernel"], check=True)
    subprocess.run(
        ["ip", "-n", ns, "mptcp", "limits", "set", "subflows", "0", "add_addr_accepted", "0"], check=True
    )
    for addr, dev in (("10.9.0.1", "v0"), ("10.9.1.1", "v1")):
        subprocess.run(["ip", "-n", ns, "mptcp", "endpoint", "add", addr, "dev", dev, "subflow"], check=True)
    res = check(ns)
    assert "PROBLEM the subflows limit is lower than the subflow endpoints" in res.stdout
    fix = next(ln.split("fix: ", 1)[1] for ln in res.stdout.splitlines() if "limits set" in ln)
    apply(ns, fix)
    assert check(ns).returncode == 0

"""addr_adv in real namespaces: same endpoint table and limits as Debian's mptcpd, and the bugs it fixes."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mptcpkit.netlink import Limits, MptcpPmClient

from .conftest import Daemon, addrs, ip, limits, table, wait_for

pytestmark = pytest.mark.needs_root

STEPS: list[tuple[str, ...]] = [
    ("addr", "add", "10.2.0.1/24", "dev", "v1"),
    ("addr", "add", "2001:db8:1::1/64", "dev", "v0", "nodad"),
    ("addr", "add", "10.6.0.1/32", "dev", "lo"),  # loopback link: never used
    ("addr", "add", "10.7.0.1/32", "dev", "v1", "scope", "host"),
    ("addr", "add", "10.2.0.2/24", "dev", "v1"),
    ("addr", "del", "10.2.0.1/24", "dev", "v1"),
    ("addr", "del", "2001:db8:1::1/64", "dev", "v0"),
    ("addr", "add", "10.3.0.1/24", "dev", "v0"),
]


@pytest.mark.parametrize(
    "flags",
    [
        ("--addr-flags=subflow", "--notify-flags=existing"),
        ("--addr-flags=signal", "--notify-flags=existing,skip_link_local,skip_loopback"),
        ("--addr-flags=subflow,backup", "--notify-flags=skip_link_local"),
    ],
    ids=["subflow-existing", "signal-skips", "no-existing"],
)
def test_same_endpoints_and_limits_as_mptcpd(
    make_netns: Callable[[str], str],
    pm_ns: str,
    run_pm: Callable[..., Daemon],
    run_mptcpd: Callable[..., subprocess.Popen[bytes]],
    flags: tuple[str, ...],
) -> None:
    ref = make_netns("ref")
    for a, b in (("v0", "p0"), ("v1", "p1")):
        ip(ref, "link", "add", a, "type", "veth", "peer", "name", b)
        ip(ref, "link", "set", b, "up")
        ip(ref, "link", "set", a, "up")
    ip(ref, "addr", "add", "10.1.0.1/24", "dev", "v0")
    for ns in (ref, pm_ns):  # no link-local churn from the peers; fixed v0/v1 IPv6 link-locals are kept
        for dev in ("p0", "p1"):
            subprocess.run(
                ["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"]
            )
    time.sleep(0.3)
    mptcpd = run_mptcpd(ref, "--path-manager=addr_adv", "--load-plugins=addr_adv", *flags)
    run_pm(pm_ns, "--path-manager=addr_adv", "--load-plugins=addr_adv", *flags)
    wait_for(lambda: limits(ref).subflows >= 2 or mptcpd.poll() is not None, 10, "mptcpd start")
    time.sleep(0.5)

    def same() -> bool:
        return _shape(ref) == _shape(pm_ns) and limits(ref) == limits(pm_ns)

    wait_for(same, 5, f"initial tables equal: {_shape(ref)} vs {_shape(pm_ns)}")
    for step in STEPS:
        ip(ref, *step)
        ip(pm_ns, *step)
        time.sleep(0.15)
        try:
            wait_for(same, 5)
        except AssertionError:
            raise AssertionError(
                f"after {' '.join(step)}: mptcpd {_shape(ref)} {limits(ref)} / mptcpkit {_shape(pm_ns)} "
                f"{limits(pm_ns)}"
            ) from None
    assert mptcpd.poll() is None


def _shape(ns: str) -> set[tuple[str, int, tuple[str, ...]]]:
    """Endpoint table without link-local addresses (their values differ per namespace)."""
    return {(a, i, f) if not a.startswith("fe80") else ("fe80", i, f) for a, i, f in table(ns)}


def test_link_flap_and_address_on_down_link(pm_ns: str, run_pm: Callable[..., Daemon]) -> None:
    """mptcpd 0.12 forgets a link's addresses after down/up and never announces an address added while its
    link was down; mptcpkit withdraws them while down and reports them again when up."""
    run_pm(pm_ns, "--addr-flags=subflow", "--notify-flags=existing,skip_link_local")
    ip(pm_ns, "addr", "add", "10.2.0.1/24", "dev", "v1")
    ip(pm_ns, "addr", "add", "2001:db8:2::1/64", "dev", "v1", "nodad")
    wait_for(lambda: {"10.2.0.1", "2001:db8:2::1"} <= addrs(pm_ns), what="endpoints on v1")
    ip(pm_ns, "link", "set", "v1", "down")
    wait_for(lambda: addrs(pm_ns) == {"10.1.0.1"}, what="v1 endpoints withdrawn while down")
    ip(pm_ns, "addr", "add", "10.4.0.9/24", "dev", "v1")  # added while down
    time.sleep(0.2)
    assert "10.4.0.9" not in addrs(pm_ns)
    ip(pm_ns, "link", "set", "v1", "up")
    wait_for(lambda: {"10.2.0.1", "10.4.0.9"} <= addrs(pm_ns), what="v1 endpoints back after up")
    # the kernel flushed the IPv6 address on link-down: no stale endpoint for it
    assert "2001:db8:2::1" not in addrs(pm_ns)
    ip(pm_ns, "addr", "del", "10.2.0.1/24", "dev", "v1")
    wait_for(lambda: addrs(pm_ns) == {"10.1.0.1", "10.4.0.9"}, what="deleted address withdrawn")
    assert limits(pm_ns) == Limits(subflows=4, add_addr_accepted=4)


def test_existing_flag(pm_ns: str, run_pm: Callable[..., Daemon]) -> None:
    d = run_pm(pm_ns, "--addr-flags=subflow", "--notify-flags=skip_link_local")
    time.sleep(0.3)
    assert addrs(pm_ns) == set(), "without 'existing', addresses present at start are not used"
    ip(pm_ns, "addr", "add", "10.2.0.1/24", "dev", "v1")
    wait_for(lambda: addrs(pm_ns) == {"10.2.0.1"}, what="new address used")
    d.stop()
    assert addrs(pm_ns) == set()
    run_pm(pm_ns, "--addr-flags=subflow", "--notify-flags=existing,skip_link_local")
    wait_for(lambda: addrs(pm_ns) == {"10.1.0.1", "10.2.0.1"}, what="existing addresses used")


def test_check_route(pm_ns: str, run_pm: Callable[..., Daemon]) -> None:
    ip(pm_ns, "route", "add", "default", "via", "10.1.0.2", "dev", "v0")
    run_pm(pm_ns, "--addr-flags=subflow", "--notify-flags=existing,skip_link_local,check_route")
    wait_for(lambda: addrs(pm_ns) == {"10.1.0.1"}, what="address with a default route used")
    ip(pm_ns, "addr", "add", "10.2.0.1/24", "dev", "v1")
    time.sleep(0.3)  # mptcpd's retries (1+4+8+16 ms) are long over
    assert "10.2.0.1" not in addrs(pm_ns), "no default route leaves through v1"
    # beyond mptcpd: a route appearing later is noticed
    ip(pm_ns, "route", "add", "default", "via", "10.2.0.2", "dev", "v1", "metric", "10")
    wait_for(lambda: "10.2.0.1" in addrs(pm_ns), what="address used once a default route exists")


def test_clean_exit_restart_and_crash_recovery(
    pm_ns: str, run_pm: Callable[..., Daemon], tmp_path: Path
) -> None:
    state = tmp_path / "pm.json"
    with MptcpPmClient(netns=pm_ns) as pm:
        pm.set_limits(subflows=1, add_addr_accepted=1)
    ip(pm_ns, "addr", "add", "10.2.0.1/24", "dev", "v1")
    flags = ("--addr-flags=subflow", "--notify-flags=existing,skip_link_local")
    d = run_pm(pm_ns, *flags, state=state)
    wait_for(lambda: addrs(pm_ns) == {"10.1.0.1", "10.2.0.1"}, what="endpoints")
    assert limits(pm_ns) == Limits(4, 4)
    assert d.stop(signal.SIGTERM) == 0
    assert addrs(pm_ns) == set() and limits(pm_ns) == Limits(1, 1), "cleaned up on SIGTERM"
    # a crash leaves everything behind; the next run takes it over instead of failing with EEXIST
    d = run_pm(pm_ns, *flags, state=state)
    wait_for(lambda: addrs(pm_ns) == {"10.1.0.1", "10.2.0.1"}, what="endpoints")
    d.stop(signal.SIGKILL)
    assert state.exists()
    before = table(pm_ns)
    d = run_pm(pm_ns, *flags, state=state)
    time.sleep(0.3)
    assert table(pm_ns) == before
    assert "EEXIST" not in d.output() and "unable" not in d.output().lower()
    assert d.stop(signal.SIGINT) == 0
    assert addrs(pm_ns) == set() and limits(pm_ns) == Limits(1, 1), "crash leftovers removed, limits restored"


def test_storm_of_1000_address_events(pm_ns: str, run_pm: Callable[..., Daemon]) -> None:
    d = run_pm(pm_ns, "--addr-flags=subflow", "--notify-flags=existing,skip_link_local", "--log=null")
    lines = []
    for rnd in range(83):  # the kernel holds at most 8 endpoints: churn 6 addresses at a time
        batch = [f"10.20.{rnd}.{i + 1}/32" for i in range(6)]
        lines += [f"addr add {a} dev v1" for a in batch] + [f"addr del {a} dev v1" for a in batch]
    keep = [f"10.21.0.{i + 1}" for i in range(4)]
    lines += [f"addr add {a}/32 dev v1" for a in keep]
    assert len(lines) == 1000
    subprocess.run(["ip", "-n", pm_ns, "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)
    expected = {"10.1.0.1", *keep}
    wait_for(lambda: addrs(pm_ns) == expected, 30, "endpoint table to settle")
    time.sleep(0.5)
    assert addrs(pm_ns) == expected, "no stale endpoint"
    assert d.alive()
    assert d.stop() == 0
    assert addrs(pm_ns) == set()


def test_full_endpoint_table_retried(pm_ns: str, run_pm: Callable[..., Daemon]) -> None:
    """Beyond mptcpd: an address that did not fit in the kernel's 8 endpoints gets one when a slot frees."""
    run_pm(pm_ns, "--addr-flags=subflow", "--notify-flags=existing,skip_link_local")
    for i in range(9):
        ip(pm_ns, "addr", "add", f"10.30.0.{i + 1}/32", "dev", "v1")
    wait_for(lambda: len(addrs(pm_ns)) == 8, what="8 endpoints")
    ip(pm_ns, "addr", "del", "10.1.0.1/24", "dev", "v0")
    ip(pm_ns, "addr", "del", "10.30.0.1/32", "dev", "v1")
    wait_for(lambda: addrs(pm_ns) == {f"10.30.0.{i + 1}" for i in range(1, 9)}, what="the 9th address added")


def test_debian_mptcpd_conf_works_unchanged(pm_ns: str, run_pm: Callable[..., Daemon]) -> None:
    """Drop-in: Debian's /etc/mptcpd/mptcpd.conf (plugin-dir full of C plugins, path-manager=addr_adv)."""
    debian = Path("/etc/mptcpd/mptcpd.conf")
    if not debian.exists():
        pytest.skip("mptcpd not installed")
    d = run_pm(pm_ns, "--notify-flags=existing,skip_link_local", conf=debian)
    wait_for(lambda: addrs(pm_ns) == {"10.1.0.1"}, what="endpoint from addr_adv")
    assert "default addr_adv" in d.output()

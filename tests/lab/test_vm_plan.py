"""One topology on namespaces (the plan as netlink calls) and on VMs (the plan as commands in each guest).

Slow (`-m slow`, TCG boots): the routing state and MPTCP endpoints read back from both are the same, and the
self-check's RTT verdicts agree (on the VMs up to TCG's own latency, see below). The self-check's rate probe is
left out on the VMs: a Python process started under TCG on a loaded machine does not print "ready" within the
self-check's 15 s.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
from typing import Any

import pytest

from mptcpkit.lab.backends.base import Lab
from mptcpkit.lab.model import Direction, Endpoint, Host, Link, LinkEnd, MptcpSettings, Topology, validate
from mptcpkit.lab.selfcheck import Check, _ping_argv, rtt_check

pytestmark = [pytest.mark.needs_root, pytest.mark.slow, pytest.mark.vm]
TCG_RTT_OVERHEAD_MS = 30.0
needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU is not installed")


def _topology() -> Topology:
    ip = ipaddress.ip_interface
    slow = Direction(rate_bps=5_000_000, delay_s=0.01)
    slower = Direction(rate_bps=3_000_000, delay_s=0.02)
    signal = Endpoint(ipaddress.ip_address("10.0.2.2"), frozenset({"signal"}))
    return Topology(
        "plan-two-paths",
        hosts=(
            Host("a", mptcp=MptcpSettings(subflows=2, add_addr_accepted=2)),
            Host("b", mptcp=MptcpSettings(subflows=2, add_addr_accepted=2, endpoints=(signal,))),
        ),
        links=(
            Link(
                "p1",
                LinkEnd("a", "eth0", (ip("10.0.1.1/24"),)),
                LinkEnd("b", "eth0", (ip("10.0.1.2/24"),)),
                slow,
                slow,
            ),
            Link(
                "p2",
                LinkEnd("a", "eth1", (ip("10.0.2.1/24"),)),
                LinkEnd("b", "eth1", (ip("10.0.2.2/24"),)),
                slower,
                slower,
            ),
        ),
    )


def _routing(lab: Lab, host: str) -> dict[str, Any]:
    """Rules and the lab's routes (policy tables, and main-table routes over lab interfaces), comparable."""
    ifnames = {link.end(host).ifname for link in lab.topology.links_of(host)}
    h = lab.host(host)
    rules = json.loads(h.run(["ip", "-j", "-4", "rule", "show"]).stdout)
    routes = json.loads(h.run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout)
    return {
        "rules": sorted(
            (r["priority"], r.get("src", "all"), str(r.get("table")), r.get("suppress_prefixlen"))
            for r in rules
            if r["priority"] not in (0, 32766, 32767)
        ),
        "routes": sorted(
            (str(r.get("table", "main")), r["dst"], r.get("gateway"), r.get("dev"))
            for r in routes
            if r.get("dev") in ifnames and str(r.get("table", "main")) not in ("local",)
        ),
        "endpoints": sorted(
            (e["address"], e["id"], tuple(e.get("flags", [])))
            for e in json.loads(h.run(["ip", "-j", "mptcp", "endpoint", "show"]).stdout or "[]")
        ),
    }


def _rtt_checks(lab: Lab) -> dict[str, Check]:
    """The self-check's RTT verdict of every link: 20 echoes of the lab's probe from its a end to its b end."""
    checks = {}
    for link in lab.topology.links:
        argv = _ping_argv(link, 20, 0.05)
        assert argv is not None, f"{link.name} has no IPv4 address at both ends"
        host = lab.host(link.a.host)
        warm = [*host.python_argv(), *argv[:4], "--count", "1", "--wait", "3", *argv[-2:]]  # ARP warm-up
        host.run(warm, check=False, timeout=120)
        out = host.run([*host.python_argv(), *argv], check=False, timeout=180).stdout
        checks[link.name] = rtt_check(link, out)
    return checks


@needs_qemu
@pytest.mark.timeout(1500)  # two TCG boots on a shared, loaded machine
def test_same_topology_on_namespaces_and_on_vms() -> None:
    from mptcpkit.lab.backends.netns import NetnsBackend
    from mptcpkit.lab.backends.vm.multi import MultiVmBackend

    topology = _topology()
    validate(topology)
    with NetnsBackend().up(topology) as netns_lab:
        netns_routing = {h.name: _routing(netns_lab, h.name) for h in topology.hosts}
        netns_checks = _rtt_checks(netns_lab)
    assert netns_routing["a"]["rules"][0][:2] == (100, "all") and netns_routing["a"]["rules"][0][3] == 0
    assert ("101", "default", "10.0.2.2", "eth1") in netns_routing["a"]["routes"]
    with MultiVmBackend(label="debian", accel="tcg").up(topology) as vm_lab:
        vm_routing = {h.name: _routing(vm_lab, h.name) for h in topology.hosts}
        assert vm_routing == netns_routing
        vm_checks = _rtt_checks(vm_lab)
    report = {k: (round(netns_checks[k].measured, 2), round(vm_checks[k].measured, 2)) for k in netns_checks}
    print(f"RTT ms (namespaces, VMs): {report}")
    for name, ours in netns_checks.items():
        theirs = vm_checks[name]
        assert ours.ok, f"namespaces: {ours}"
        # Under TCG each guest adds its own latency (timer emulation, virtio, TAP and bridge): measured 17-23 ms
        # of RTT on the loaded 2-core development machine. The guests' RTT must hold the planned delay and no
        # more than that overhead on top; under KVM the two agree within the self-check's tolerance.
        low = ours.configured * (1 - ours.tolerance)
        assert low <= theirs.measured <= ours.configured + TCG_RTT_OVERHEAD_MS, report

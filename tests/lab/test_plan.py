"""The one host plan (lab/plan.py) and its renderings: every backend sets exactly what the plan says."""

from __future__ import annotations

import ipaddress

import pytest

from mptcpkit.lab.backends import netns_calls, ssh_plan
from mptcpkit.lab.model import Direction, Endpoint, Host, Link, LinkEnd, MptcpSettings, Route, Topology
from mptcpkit.lab.plan import Fact, LabPlan, facts, plan_lab, shaping_facts
from mptcpkit.lab.topology_file import builtin_names, load_topology

ip = ipaddress.ip_interface


def _rich() -> Topology:
    """Static routes, IPv6, endpoints with and without ids, a userspace PM, loss and rate-only links."""
    return Topology(
        "rich",
        hosts=(
            Host(
                "a",
                mptcp=MptcpSettings(
                    path_manager="userspace",
                    scheduler="default",
                    subflows=4,
                    add_addr_accepted=1,
                    endpoints=(
                        Endpoint(ipaddress.ip_address("10.0.2.1"), frozenset({"subflow", "backup"})),
                        Endpoint(ipaddress.ip_address("fd00:2::1"), id=7, port=8000),
                    ),
                ),
                sysctls={"net.ipv4.tcp_congestion_control": "reno", "net.ipv4.conf.eth1.rp_filter": "0"},
                routes=(Route("192.168.0.0/16", via=ipaddress.ip_address("10.0.1.2"), metric=5),),
            ),
            Host("b", forwarding=True, policy_routing=False, mptcp=MptcpSettings(enabled=False)),
        ),
        links=(
            Link(
                "p1",
                LinkEnd("a", "eth0", (ip("10.0.1.1/24"), ip("fd00:1::1/64"))),
                LinkEnd("b", "eth0", (ip("10.0.1.2/24"), ip("fd00:1::2/64"))),
                Direction(rate_bps=10_000_000, queue_packets=50),
                Direction(rate_bps=20_000_000, delay_s=0.01, jitter_s=0.002, loss=0.01),
                mtu=1400,
            ),
            Link(
                "p2",
                LinkEnd("a", "eth1", (ip("10.0.2.1/24"), ip("fd00:2::1/64"))),
                LinkEnd("b", "eth1", (ip("10.0.2.2/24"),)),
            ),
        ),
    )


TOPOLOGIES = {name: (lambda name=name: load_topology(name)) for name in builtin_names()} | {"rich": _rich}


def _empty_machine(topology: Topology, host: str) -> ssh_plan.Snapshot:
    """A machine with the topology's interfaces (down, MTU 0) and nothing else of the lab's."""
    links = {link.end(host).ifname: {"up": False, "mtu": 0} for link in topology.links_of(host)}
    keys = ssh_plan.sysctl_keys(topology, host)
    return ssh_plan.Snapshot(
        links, [], [], [], [], [], {"subflows": 0, "add_addr_accepted": 0}, dict.fromkeys(keys, "?")
    )


def _render_netns(topology: Topology, plan: LabPlan) -> tuple[list[Fact], list[Fact]]:
    hosts = [
        f for host in plan.hosts for f in netns_calls.read_calls(host.name, netns_calls.netlink_calls(host))
    ]
    return sorted(hosts), netns_calls.read_wire_calls(netns_calls.wire_calls(plan))


def _render_commands(topology: Topology, plan: LabPlan) -> tuple[list[Fact], list[Fact]]:
    """The SSH backend, and the multi-VM agent, which applies the same steps inside each guest."""
    out: list[Fact] = []
    for host in topology.hosts:
        steps = ssh_plan.plan_host(topology, host.name, _empty_machine(topology, host.name), has_netem=True)
        out += ssh_plan.read_steps(host.name, [s.apply for s in steps.steps])
    kinds = ("tbf", "netem")
    return sorted(f for f in out if f[1] not in kinds), sorted(f for f in out if f[1] in kinds)


@pytest.mark.parametrize("render", [_render_netns, _render_commands], ids=["netns", "ssh+multi-vm"])
@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_every_backend_renders_the_same_plan(name: str, render: object) -> None:
    topology = TOPOLOGIES[name]()
    plan = plan_lab(topology)
    host_facts, shaping = render(topology, plan)  # type: ignore[operator]
    assert host_facts == facts(plan)
    assert shaping == shaping_facts(plan)
    assert host_facts and (shaping or name == "rich")


def test_policy_routing_rules_tables_and_default_via_peer() -> None:
    plan = plan_lab(load_topology("two-paths")).host("client")
    suppress = [r for r in plan.rules if r.suppress_prefixlength == 0]
    assert {(r.family, r.priority, r.table) for r in suppress} == {(4, 100, 254), (6, 100, 254)}
    by_src = {r.src: (r.priority, r.table) for r in plan.rules if r.src}
    assert by_src == {
        "10.0.1.1": (200, 100),
        "fd00:1::1": (200, 100),
        "10.0.2.1": (201, 101),
        "fd00:2::1": (201, 101),
    }
    defaults = {(r.table, r.family): r.gateway for r in plan.routes if r.dst in ("0.0.0.0/0", "::/0")}
    assert defaults == {
        (100, 4): "10.0.1.2",
        (100, 6): "fd00:1::2",
        (101, 4): "10.0.2.2",
        (101, 6): "fd00:2::2",
    }


def test_one_set_of_shaping_numbers() -> None:
    """1 ms tbf bucket (>= 2 frames), tbf limit = queue frames, netem limit = queue + packets in flight."""
    plan = plan_lab(_rich())
    rate_only = next(s for s in plan.shaping if s.direction == "a_to_b" and s.link == "p1")
    assert rate_only.tbf is not None
    assert rate_only.tbf.burst_bytes == 2 * (1400 + 14)  # 1 ms at 10 Mbit/s is 1250 B: two frames instead
    assert rate_only.tbf.limit_bytes == 50 * (1400 + 14)
    delayed = next(s for s in plan.shaping if s.direction == "b_to_a" and s.link == "p1")
    in_flight = 20_000_000 * 0.012 / 8 / 1414
    assert delayed.netem_limit == 1000 + int(in_flight) + 2


def test_endpoint_ids_are_planned_and_the_ssh_rendering_moves_taken_ones() -> None:
    topology = _rich()
    plan = plan_lab(topology).host("a")
    assert [(e.address, e.id, e.dev) for e in plan.endpoints] == [
        ("10.0.2.1", 1, "eth1"),
        ("fd00:2::1", 7, "eth1"),
    ]
    machine = _empty_machine(topology, "a")
    machine.endpoints = [{"address": "192.0.2.9", "id": 1}]
    steps = ssh_plan.plan_host(topology, "a", machine, has_netem=True).steps
    endpoint = next(s for s in steps if s.what == "endpoint 10.0.2.1")
    assert endpoint.apply[5:9] == ("dev", "eth1", "id", "100")


def test_ssh_rendering_moves_policy_tables_the_machine_uses() -> None:
    topology = load_topology("two-paths")
    machine = _empty_machine(topology, "client")
    machine.rules = ['{"table": "100"}']
    steps = ssh_plan.plan_host(topology, "client", machine, has_netem=True).steps
    tables = {s.apply[-1] for s in steps if s.apply[2:4] == ("route", "add")}
    assert tables == {"102", "101"}


def test_sysctls_of_a_lab_interface_come_after_it_exists() -> None:
    plan = plan_lab(_rich()).host("a")
    assert ("net.ipv4.conf.eth1.rp_filter", "0") in plan.device_sysctls
    assert all(".eth1." not in key for key, _ in plan.sysctls)
    kinds = [(c.kind, c.args.get("key")) for c in netns_calls.netlink_calls(plan)]
    assert kinds.index(("sysctl", "net.ipv4.conf.eth1.rp_filter")) > kinds.index(("up", None))

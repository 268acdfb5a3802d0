"""Fuzz target: whatever topology validation accepts must build as a real namespace lab and leave nothing.

Registered into `fuzz_targets.TARGETS` when `fuzz_targets.load_all()` imports this module. Needs root.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from fuzz_targets import Check, Target, register, to_toml

IFNAME_POOL = ["eth0", "eth1", "a.b", "x@y", "e+1", "v=1", "_x", "Z-9", "abcdefghijklmno", "p.1", "veth9"]
SYSCTL_POOL = [
    ("net.ipv4.tcp_ecn", ["0", "1", "2"]),
    ("net.ipv4.tcp_congestion_control", ["reno", "cubic"]),
    ("net.mptcp.add_addr_timeout", ["10", "120"]),
    ("net.core.somaxconn", ["1024"]),
    ("net.ipv4.conf.IF.rp_filter", ["0", "2"]),
    ("net.ipv6.conf.IF.accept_ra", ["0"]),
]
ENDPOINT_FLAGS = [
    ["subflow"],
    ["signal"],
    ["subflow", "backup"],
    ["signal", "backup"],
    ["subflow", "fullmesh"],
    [],
]


@st.composite
def buildable_documents(draw: st.DrawFn) -> str:
    """Topologies meant to be valid, with the unusual corners validation allows (odd interface names, MTUs,
    metrics, endpoint ids and ports, per-device sysctls): each one that validates must build."""
    names = draw(
        st.lists(
            st.from_regex(r"[a-z0-9][a-z0-9_-]{0,7}", fullmatch=True), min_size=2, max_size=4, unique=True
        )
    )
    hosts: dict[str, dict[str, Any]] = {n: {} for n in names}
    used: dict[str, set[str]] = {n: set() for n in names}
    own: dict[str, list[tuple[str, str, str]]] = {
        n: [] for n in names
    }  # host -> (ifname, address, peer address)
    links = []
    for i in range(draw(st.integers(1, 4))):
        a, b = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
        v6 = draw(st.booleans())
        link: dict[str, Any] = {"name": f"l{i}"}
        ends = {}
        for side, host, last in (("a", a, 1), ("b", b, 2)):
            free = [n for n in IFNAME_POOL if n not in used[host]]
            ifname = draw(st.sampled_from(free)) if free else f"if{i}"
            used[host].add(ifname)
            addresses = [f"10.{i}.0.{last}/24"] + ([f"fd00:{i}::{last}/64"] if v6 else [])
            ends[side] = {"host": host, "ifname": ifname, "addresses": addresses}
            own[host].append((ifname, f"10.{i}.0.{last}", f"10.{i}.0.{3 - last}"))
        link |= ends
        link["mtu"] = draw(st.sampled_from([1280, 1500, 9000, 65535] + ([] if v6 else [68, 576])))
        if draw(st.integers(0, 3)) == 0:
            link["rate"] = draw(st.sampled_from(["10mbit", "1gbit", "20gbit"]))
            link["delay"] = draw(st.sampled_from(["0ms", "1ms"]))
        links.append(link)
    for name in names:
        host = hosts[name]
        if own[name] and draw(st.booleans()):
            ifname, address, peer = draw(st.sampled_from(own[name]))
            metric = draw(st.sampled_from([None, 0, 1, 2**32 - 1]))
            route: dict[str, Any] = {"to": "192.168.77.0/24", "via": peer}
            if metric is not None:
                route["metric"] = metric
            if draw(st.booleans()):
                route["dev"] = ifname
            host["routes"] = [route]
        if own[name] and draw(st.booleans()):
            key, values = draw(st.sampled_from(SYSCTL_POOL))
            host["sysctls"] = {
                key.replace("IF", draw(st.sampled_from(own[name]))[0]): draw(st.sampled_from(values))
            }
        mptcp: dict[str, Any] = {}
        if draw(st.booleans()):
            mptcp["limits"] = {
                "subflows": draw(st.integers(0, 8)),
                "add_addr_accepted": draw(st.integers(0, 8)),
            }
        ids = draw(st.lists(st.integers(1, 255), max_size=len(own[name]), unique=True))
        endpoints = []
        for index, (ifname, address, _) in enumerate(own[name][: draw(st.integers(0, len(own[name])))]):
            flags = draw(st.sampled_from(ENDPOINT_FLAGS))
            endpoint: dict[str, Any] = {"address": address, "flags": flags}
            if index < len(ids):
                endpoint["id"] = ids[index]
            if flags in (["signal"], ["signal", "backup"]) and draw(st.booleans()):
                endpoint["port"] = draw(st.sampled_from([1, 8080, 65535]))
            if draw(st.booleans()):
                endpoint["dev"] = ifname
            endpoints.append(endpoint)
        if endpoints:
            mptcp["endpoints"] = endpoints
        if draw(st.integers(0, 4)) == 0:
            mptcp["path_manager"] = "userspace"
        if draw(st.integers(0, 4)) == 0:
            mptcp["scheduler"] = "default"
        if mptcp:
            host["mptcp"] = mptcp
    return to_toml({"name": "fuzz-build", "hosts": hosts, "links": links})


@contextlib.contextmanager
def build_session() -> Iterator[Check]:
    """Builds every accepted topology with the namespace backend and tears it down: a LabError means validation
    let through something the kernel refuses; any namespace or record of the lab left afterwards is a leftover."""
    from mptcpkit.errors import LabError, UsageError
    from mptcpkit.lab import registry
    from mptcpkit.lab.backends.netns import NetnsBackend
    from mptcpkit.lab.topology_file import parse_topology

    backend = NetnsBackend()

    def check(text: str) -> str:
        try:
            topology = parse_topology(text, "fuzz-build.toml")
        except UsageError:
            return "refused"
        try:
            lab = backend.up(topology, emulation="auto")
        except UsageError:
            return "refused"  # e.g. the kernel check at `lab up`: refused before anything was created
        except LabError as exc:
            raise AssertionError(f"validated, but the kernel refused it: {exc}\n{text}") from None
        lab_id = lab.lab_id
        lab.close()
        assert registry.namespaces_on_disk(lab_id) == [], f"lab {lab_id} left namespaces behind"
        assert registry.load(lab_id) is None, f"lab {lab_id} left its record behind"
        return "accepted"

    yield check


register(
    Target("topology-build", buildable_documents, build_session, ci_cases=6, shrink=False, bench_cases=300)
)

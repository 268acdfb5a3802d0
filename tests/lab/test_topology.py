"""Topology model and TOML loader: built-ins load, and every kind of mistake gets one precise message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mptcpkit.errors import TopologyError
from mptcpkit.lab.model import Direction
from mptcpkit.lab.topology_file import builtin_names, load_topology, parse_topology
from mptcpkit.lab.units import parse_duration, parse_fraction, parse_rate

GOOD = """\
name = "t"

[hosts.client.mptcp]
limits = { subflows = 2, add_addr_accepted = 2 }
endpoints = [
  { address = "10.0.2.1", flags = ["subflow"], dev = "eth1" },
]

[hosts.server]

[[links]]
name = "p1"
a = { host = "client", ifname = "eth0", addresses = ["10.0.1.1/24"] }
b = { host = "server", ifname = "eth0", addresses = ["10.0.1.2/24"] }
rate = "10mbit"
delay = "5ms"

[[links]]
name = "p2"
a = { host = "client", ifname = "eth1", addresses = ["10.0.2.1/24"] }
b = { host = "server", ifname = "eth1", addresses = ["10.0.2.2/24"] }
rate = "20mbit"
b_to_a = { rate = "5mbit", loss = "1%" }
"""


def test_builtins_load() -> None:
    assert {"two-paths", "three-paths", "routed"} <= set(builtin_names())
    topo = load_topology("two-paths")
    assert [h.name for h in topo.hosts] == ["client", "server"]
    assert topo.link("path1").a_to_b == Direction(rate_bps=50_000_000, delay_s=0.010)
    assert topo.link("path2").b_to_a.delay_s == pytest.approx(0.030)
    routed = load_topology("routed")
    assert routed.host("router").forwarding


def test_per_direction_override() -> None:
    topo = parse_topology(GOOD, "t.toml")
    p2 = topo.link("p2")
    assert p2.a_to_b.rate_bps == 20_000_000
    assert p2.b_to_a.rate_bps == 5_000_000
    assert p2.b_to_a.loss == pytest.approx(0.01)
    assert p2.a_to_b.loss == 0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('rate = "10mbit"', 'rat = "10mbit"'),
            "t.toml:15: links[0].rat: unknown field 'rat' (did you mean 'rate'?)",
        ),
        (
            ('rate = "10mbit"', 'rate = "10 furlongs"'),
            "t.toml:15: links[0].rate: cannot read '10 furlongs' as a rate",
        ),
        (('delay = "5ms"', 'delay = "five"'), "t.toml:16: links[0].delay: cannot read 'five' as a duration"),
        (
            ('host = "server", ifname = "eth0"', 'host = "srv", ifname = "eth0"'),
            "t.toml:14: links[0].b.host: unknown host 'srv' (hosts are: client, server)",
        ),
        (('"10.0.1.2/24"', '"10.0.1.300/24"'), "links[0].b.addresses[0]: '10.0.1.300/24' is not an address"),
        (('"10.0.2.2/24"', '"10.0.1.1/24"'), "address 10.0.1.1 is already used by client"),
        (
            ('flags = ["subflow"]', 'flags = ["subflo"]'),
            "t.toml:6: hosts.client.mptcp.endpoints[0].flags: unknown flag",
        ),
        (
            ('flags = ["subflow"]', 'flags = ["signal", "fullmesh"]'),
            "'signal' and 'fullmesh' cannot be combined",
        ),
        (('address = "10.0.2.1"', 'address = "10.9.9.9"'), "10.9.9.9 is not an address of host 'client'"),
        (
            ("subflows = 2", "subflows = 9"),
            "t.toml:4: hosts.client.mptcp.limits.subflows: must be within 0..8",
        ),
        (('loss = "1%"', 'loss = "150%"'), "links[1].b_to_a.loss: must be between 0% and 100%"),
        (('name = "p2"', 'name = "p1"'), "link name 'p1' is used twice"),
        (
            ('ifname = "eth1", addresses = ["10.0.2.1/24"]', 'ifname = "eth0", addresses = ["10.0.2.1/24"]'),
            "interface name 'eth0' is used by two links of 'client'",
        ),
        (('delay = "5ms"', 'delay = "5ms"\njitter = "9ms"'), "jitter must not exceed delay"),
        (("[hosts.server]", "[hosts.server"), "t.toml: not valid TOML"),
    ],
)
def test_topology_errors(change: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(TopologyError) as info:
        parse_topology(text, "t.toml")
    assert expected in str(info.value)


def test_unknown_builtin_suggests() -> None:
    with pytest.raises(TopologyError, match="did you mean 'two-paths'"):
        load_topology("two-path")


def test_units() -> None:
    assert parse_rate("1.5Gbit/s") == 1_500_000_000
    assert parse_rate("500kbit") == 500_000
    assert parse_duration("250us") == pytest.approx(250e-6)
    assert parse_fraction("0.5%") == pytest.approx(0.005)
    with pytest.raises(ValueError):
        parse_rate(-1)


def test_cli_bad_topology_exit_2_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('rate = "10mbit"', 'rate = "fast"'))
    proc = subprocess.run(
        [sys.executable, "-m", "mptcpkit", "lab", "up", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "bad.toml:15: links[0].rate: cannot read 'fast' as a rate" in proc.stderr
    assert "Traceback" not in proc.stderr

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


# -- issue 15: files cannot touch the host, everything validated before anything is created -----------------

SERVER = "[hosts.server]\n"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # sysctls: only keys the lab's own network namespace owns
        (
            (SERVER, SERVER + 'sysctls = { "/tmp/x" = "1" }\n'),
            "t.toml:10: hosts.server.sysctls./tmp/x: sysctl key '/tmp/x' contains a path separator",
        ),
        (
            (SERVER, SERVER + 'sysctls = { "kernel.hostname" = "pwned" }\n'),
            "hosts.server.sysctls.kernel.hostname: sysctl key 'kernel.hostname' is outside 'net.'",
        ),
        ((SERVER, SERVER + 'sysctls = { "net..ipv4" = 1 }\n'), "is not dotted words"),
        ((SERVER, SERVER + 'sysctls = { "net.ipv4.tcp_ecn " = 1 }\n'), "is not dotted words"),
        ((SERVER, SERVER + 'sysctls = { "net" = 1 }\n'), "names a setting under 'net.'"),
        ((SERVER, SERVER + 'sysctls = { "net.ipv4.tcp_ecn" = "1\\n2" }\n'), "one line of printable ASCII"),
        # names: ASCII and the kernel's interface-name rules
        (("[hosts.server]", '[hosts."sérver"]'), "hosts.'s\\xe9rver': host names are 1..20 ASCII letters"),
        (
            ('ifname = "eth0", addresses = ["10.0.1.2/24"]', 'ifname = "a:b", addresses = ["10.0.1.2/24"]'),
            "t.toml:14: links[0].b.ifname: invalid interface name 'a:b'",
        ),
        (
            ('ifname = "eth0", addresses = ["10.0.1.2/24"]', 'ifname = "..", addresses = ["10.0.1.2/24"]'),
            "links[0].b.ifname: invalid interface name '..'",
        ),
        (
            ('ifname = "eth0", addresses = ["10.0.1.2/24"]', 'ifname = "lo", addresses = ["10.0.1.2/24"]'),
            "links[0].b.ifname: interface name 'lo' is reserved",
        ),
        (
            ('ifname = "eth0", addresses = ["10.0.1.2/24"]', 'ifname = "abcdefghijklmnop"'),
            "is longer than 15 characters",
        ),
        (('name = "p1"', 'name = "p 1"'), "t.toml:12: links[0].name: link names are"),
        (('name = "t"', 'name = "t"\n[hosts.x]\nssh = "-oProxyCommand=id"'), "hosts.x.ssh: ssh is a target"),
        # numbers: finite and in the kernel's ranges
        (
            ('rate = "10mbit"', "rate = inf"),
            "t.toml:15: links[0].rate: rate must be a positive, finite number",
        ),
        (('rate = "10mbit"', "rate = nan"), "links[0].rate: rate must be a positive, finite number"),
        (('delay = "5ms"', "delay = inf"), "t.toml:16: links[0].delay: duration must be a finite number"),
        (('delay = "5ms"', "delay = nan"), "links[0].delay: duration must be a finite number"),
        (('delay = "5ms"', 'delay = "5000s"'), "links[0].a_to_b.delay: delay must be between 0 and 60 s"),
        (('rate = "10mbit"', 'rate = "300gbit"'), "links[0].a_to_b.rate: rate 300000000000 bit/s is above"),
        (('rate = "10mbit"', 'rate = "10mbit"\nqueue = 10000000'), "queue must hold at most 100000 packets"),
        (
            ('rate = "10mbit"', 'rate = "10mbit"\nmtu = 40'),
            "t.toml:16: links[0].mtu: MTU must be within 68..65535",
        ),
        (
            (
                '"10.0.1.1/24"',
                '"fd00::1/64"',
                '"10.0.1.2/24"',
                '"fd00::2/64"',
                'rate = "10mbit"',
                "mtu = 1000",
            ),
            "links[0].mtu: IPv6 needs an MTU of at least 1280, got 1000",
        ),
        # addresses are strings; subnets of different links do not overlap
        (
            (
                'rate = "10mbit"',
                'rate = "10mbit"\nmtu = 576',
                SERVER,
                SERVER + 'sysctls = { "net.ipv6.conf.eth0.accept_ra" = 0 }\n',
            ),
            "hosts.server.sysctls.net.ipv6.conf.eth0.accept_ra: interface 'eth0' has MTU 576 < 1280",
        ),
        (
            ('["10.0.1.1/24"]', "[5]"),
            "t.toml:13: links[0].a.addresses[0]: expected an address with prefix as a string",
        ),
        (
            ('["10.0.1.1/24"]', "[true]"),
            "links[0].a.addresses[0]: expected an address with prefix as a string, ",
        ),
        (
            ('"10.0.2.2/24"', '"10.0.0.2/16"'),
            "links[0].a.addresses: subnet 10.0.1.0/24 overlaps 10.0.0.0/16 of link 1",
        ),
        # ports, endpoint ids, metrics and routes
        (
            ('dev = "eth1" }', 'dev = "eth1", port = 70000 }'),
            "t.toml:6: hosts.client.mptcp.endpoints[0].port: port must be within 1..65535",
        ),
        (('dev = "eth1" }', 'dev = "eth1", port = 8080 }'), "a port needs the 'signal' flag"),
        (('dev = "eth1" }', 'dev = "eth1", id = 0 }'), "endpoints[0].id: endpoint id must be within 1..255"),
        (
            ('dev = "eth1" },', 'dev = "eth1", id = 7 },\n  { address = "10.0.1.1", id = 7 },'),
            "t.toml:7: hosts.client.mptcp.endpoints[1].id: endpoint id 7 is used twice on 'client'",
        ),
        (
            ('dev = "eth1" },', 'dev = "eth1" },\n  { address = "10.0.2.1" },'),
            "hosts.client.mptcp.endpoints[1].address: two endpoints use 10.0.2.1",
        ),
        (
            (SERVER, SERVER + 'routes = [{ to = "default", via = "10.0.1.1", metric = 4294967296 }]\n'),
            "t.toml:10: hosts.server.routes[0].metric: metric must be within 0..4294967295",
        ),
        (
            (SERVER, SERVER + 'routes = [{ to = "default", via = "10.0.9.1" }]\n'),
            "hosts.server.routes[0].via: gateway 10.0.9.1 is not reachable",
        ),
        (
            (SERVER, SERVER + 'routes = [{ to = "10.0.9.0/24", via = "10.0.2.1", dev = "eth0" }]\n'),
            "gateway 10.0.2.1 is not reachable: it is in no subnet of interface 'eth0'",
        ),
        (
            (SERVER, SERVER + 'routes = [{ to = "10.0.9.1/24", via = "10.0.1.1" }]\n'),
            "hosts.server.routes[0].to: 10.0.9.1/24 has host bits set (the kernel refuses it); did you mean 10.0.9.0/24?",
        ),
        (
            (
                SERVER,
                SERVER
                + 'routes = [{ to = "10.0.9.0/24", via = "10.0.1.1" }, { to = "10.0.9.0/24", dev = "eth0" }]\n',
            ),
            "hosts.server.routes[1].to: route to 10.0.9.0/24 is given twice with the same metric",
        ),
        (
            (SERVER, SERVER + 'routes = [{ to = "fd00::/8", via = "10.0.1.1" }]\n'),
            "gateway 10.0.1.1 is not of the same family as fd00::/8",
        ),
        (
            ("[hosts.client.mptcp]\n", '[hosts.client.mptcp]\nscheduler = "../x"\n'),
            "mptcp.scheduler: a scheduler name",
        ),
    ],
)
def test_topology_errors_issue15(change: tuple[str, ...], expected: str) -> None:
    text = GOOD
    for old, new in zip(change[::2], change[1::2], strict=True):
        assert old in text, old
        text = text.replace(old, new)
    with pytest.raises(TopologyError) as info:
        parse_topology(text, "t.toml")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_link_local_subnets_may_repeat() -> None:
    text = GOOD.replace('"10.0.1.1/24"', '"10.0.1.1/24", "fe80::1/64"').replace(
        '"10.0.2.1/24"', '"10.0.2.1/24", "fe80::1:1/64"'
    )
    assert len(parse_topology(text, "t.toml").links) == 2


def test_sysctl_rule_is_one_pure_function() -> None:
    from mptcpkit.lab.sysctl_rules import require_safe_sysctl, sysctl_key_problem

    assert sysctl_key_problem("net.ipv4.tcp_ecn") is None
    assert sysctl_key_problem("net.ipv4.conf.eth0.rp_filter") is None
    for bad in (
        "/tmp/x",
        "kernel.hostname",
        "net/../../etc",
        "net.ipv4..x",
        "",
        ".net.x",
        "net.x.",
        "vm.swappiness",
    ):
        assert sysctl_key_problem(bad) is not None, bad
    from mptcpkit.errors import UsageError

    with pytest.raises(UsageError, match="refusing to write sysctl"):
        require_safe_sysctl("/tmp/x", "1")


def test_writers_refuse_unsafe_sysctl_even_without_validation(tmp_path: Path) -> None:
    """Defence in depth: a Topology changed after validation still cannot make a backend write outside net."""
    from mptcpkit.errors import UsageError
    from mptcpkit.lab.backends import nsutil, ssh_plan

    target = tmp_path / "x"
    with pytest.raises(UsageError):
        nsutil.write_sysctl("does-not-matter", "/" + str(target).lstrip("/"), "1")
    assert not target.exists()
    topo = parse_topology(GOOD, "t.toml").with_host("server", sysctls={"kernel.hostname": "x"})
    link = {"up": True, "mtu": 1500, "index": 2}
    snapshot = ssh_plan.Snapshot(
        {"eth0": link, "eth1": link}, [], [], [], [], [], {}, {"kernel.hostname": "h"}
    )
    with pytest.raises(UsageError, match=r"outside 'net\.'"):
        ssh_plan.plan_host(topo, "server", snapshot, has_netem=True)


@pytest.mark.parametrize("kind", ["not-utf8", "loop", "directory", "too-big", "fifo", "missing", "deep"])
def test_unreadable_files_are_one_clear_error(tmp_path: Path, kind: str) -> None:
    import os

    path = tmp_path / "t.toml"
    expected = {
        "not-utf8": "t.toml:3: not UTF-8 text (byte 0xff",
        "loop": "symbolic link loop",
        "directory": "is a directory, not a topology file",
        "too-big": "file is larger than 1048576 bytes",
        "fifo": "is not a regular file",
        "missing": "no such topology file",
        "deep": "nested too deeply",
    }[kind]
    if kind == "not-utf8":
        path.write_bytes(b'name = "t"\n\n# \xff\n')
    elif kind == "loop":
        os.symlink(tmp_path / "u.toml", path)
        os.symlink(path, tmp_path / "u.toml")
    elif kind == "directory":
        path.mkdir()
    elif kind == "too-big":
        path.write_text("# " + "x" * (1 << 20) + "\n")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "deep":
        path.write_text("a = " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert expected in str(info.value)


def test_size_limits_refuse_fast() -> None:
    from mptcpkit.lab.model_checks import MAX_HOSTS

    text = "".join(f"[hosts.h{i}]\n" for i in range(MAX_HOSTS + 1))
    with pytest.raises(TopologyError, match=f"at most {MAX_HOSTS} are supported"):
        parse_topology(text, "t.toml")
    with pytest.raises(TopologyError, match="larger than"):
        parse_topology("[hosts.a]\n" * 200_000, "t.toml")


def test_many_hosts_validate() -> None:
    """1,000 hosts in a chain are a valid topology (the timing lives in benchmarks/fuzz.py)."""
    hosts = "".join(f"[hosts.h{i}]\n" for i in range(1000))
    links = "".join(
        f'[[links]]\na = {{ host = "h{i}", addresses = ["10.{i // 250}.{i % 250}.1/30"] }}\n'
        f'b = {{ host = "h{i + 1}", addresses = ["10.{i // 250}.{i % 250}.2/30"] }}\n'
        for i in range(999)
    )
    topo = parse_topology(hosts + links, "chain.toml")
    assert len(topo.hosts) == 1000 and len(topo.links) == 999


@pytest.mark.timeout(20)
def test_line_mapper_is_linear_on_bracket_lines() -> None:
    """A description line of '[' and many spaces took cubic time (17 s at 4,000 spaces); now it is one scan."""
    from mptcpkit.lab.toml_lines import index_lines

    text = 'description = """\n[' + " " * 50_000 + '\n"""\n[hosts.a]\nx = 1\n' + "[" + " " * 50_000 + "\n"
    lines = index_lines(text)
    assert lines[("hosts", "a", "x")] == 5
    assert ("description",) in lines


KERNEL_BASE = """\
[hosts.zzkca]
[hosts.zzkcb]
[[links]]
a = { host = "zzkca", addresses = ["10.77.0.1/24"] }
b = { host = "zzkcb", addresses = ["10.77.0.2/24"] }
"""


@pytest.mark.needs_root
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[hosts.zzkca.mptcp]\nscheduler = "nosuchsched"\n',
            "k.toml:7: hosts.zzkca.mptcp.scheduler: MPTCP scheduler 'nosuchsched' is not available",
        ),
        (
            '[hosts.zzkcb.sysctls]\n"net.core.bpf_jit_enable" = 1\n',
            "k.toml:7: hosts.zzkcb.sysctls.net.core.bpf_jit_enable: sysctl 'net.core.bpf_jit_enable' "
            "does not exist in a network namespace",
        ),
        (
            '[hosts.zzkcb.sysctls]\n"net.ipv4.tcp_congestion_control" = "nosuchcc"\n',
            "k.toml:7: hosts.zzkcb.sysctls.net.ipv4.tcp_congestion_control: congestion control 'nosuchcc'",
        ),
    ],
)
def test_kernel_checks_refuse_at_up_before_creating_anything(
    tmp_path: Path, extra: str, expected: str
) -> None:
    """Settings this kernel lacks: exit 2 with file:line at `lab up`, and no namespace was ever created."""
    from mptcpkit.lab.backends import nsutil

    path = tmp_path / "k.toml"
    path.write_text(KERNEL_BASE + extra)
    proc = subprocess.run(
        [sys.executable, "-m", "mptcpkit", "lab", "up", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not [n for n in nsutil.list_netns() if n.endswith(("-zzkca", "-zzkcb"))]


def test_kernel_checks_per_device_sysctls_use_default() -> None:
    from mptcpkit.lab.kernel_checks import check_topology, needed_keys, probe_key

    topo = parse_topology(
        GOOD.replace("[hosts.server]", '[hosts.server]\nsysctls = { "net.ipv4.conf.eth0.rp_filter" = 2 }'),
        "t.toml",
    )
    assert probe_key("net.ipv4.conf.eth0.rp_filter", {"eth0"}) == "net.ipv4.conf.default.rp_filter"
    assert "net.ipv4.conf.default.rp_filter" in needed_keys(topo)
    facts = {"net.ipv4.conf.default.rp_filter": "0", "net.ipv4.tcp_available_congestion_control": "cubic"}
    check_topology(topo, facts)


@pytest.mark.needs_root
def test_python_built_topology_is_validated_at_up() -> None:
    """A Topology changed in Python after loading is validated again before the namespace backend creates anything."""
    from mptcpkit.lab.backends import nsutil
    from mptcpkit.lab.backends.netns import NetnsBackend

    topo = parse_topology(KERNEL_BASE, "k.toml").with_host("zzkca", sysctls={"/tmp/zz-python": "1"})
    with pytest.raises(TopologyError, match="contains a path separator"):
        NetnsBackend().up(topo)
    assert not Path("/tmp/zz-python").exists()
    assert not [n for n in nsutil.list_netns() if n.endswith(("-zzkca", "-zzkcb"))]

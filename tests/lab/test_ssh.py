"""SSH backend against real OpenSSH servers: each "machine" is a network namespace running its own sshd on its
own port, with a temporary host key and authorized key, reached over a management veth from this namespace.

Checks: a lab applies its configuration and passes MPTCP traffic; teardown leaves every machine exactly as before
(compared with raw `ip`/`tc`/`sysctl` output, independent of the backend's own snapshot code); an unknown host
key, an unreachable machine, a missing netem and a machine dropping mid-run all end with a clear error.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mptcp_transfer import sending_client, sink_server

from mptcpkit.errors import LabError, UsageError
from mptcpkit.lab.backends import ssh_plan
from mptcpkit.lab.backends.ssh import SshBackend, SshLab, SshOptions
from mptcpkit.lab.emulation.netem import netem_available
from mptcpkit.lab.model import Direction, Endpoint, Host, Link, LinkEnd, MptcpSettings, Topology, validate

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(not os.path.exists(SSHD) or os.geteuid() != 0, reason="needs root and sshd")

SYSCTLS = (
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.mptcp.enabled",
    "net.ipv4.ip_forward",
    "net.ipv6.conf.default.accept_dad",
)


@dataclass
class Machine:
    name: str
    ns: str
    address: str
    port: int
    sshd: subprocess.Popen[bytes]

    @property
    def target(self) -> str:
        return f"root@{self.address}:{self.port}"


@dataclass
class Machines:
    a: Machine
    b: Machine
    options: SshOptions
    workdir: Path


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def raw_state(ns: str) -> dict[str, str]:
    """What a careful admin would compare: addresses, routes, rules, qdiscs, endpoints, limits, links, sysctls."""
    state = {
        "addr": sh("ip", "-n", ns, "addr", "show"),
        "link": sh("ip", "-n", ns, "-o", "link", "show"),
        "route4": sh("ip", "-n", ns, "-4", "route", "show", "table", "all"),
        "route6": sh("ip", "-n", ns, "-6", "route", "show", "table", "all"),
        "rule4": sh("ip", "-n", ns, "-4", "rule", "show"),
        "rule6": sh("ip", "-n", ns, "-6", "rule", "show"),
        "qdisc": sh("tc", "-n", ns, "qdisc", "show"),
        "endpoints": sh("ip", "-n", ns, "mptcp", "endpoint", "show"),
        "limits": sh("ip", "-n", ns, "mptcp", "limits", "show"),
        "sysctl": sh("ip", "netns", "exec", ns, "sysctl", *SYSCTLS),
    }
    return state


def _wait_port(address: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((address, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd on {address}:{port} did not start")


def _wait_settled(namespaces: list[str], timeout: float = 10.0) -> None:
    """Wait until the kernel has finished configuring the new links (IPv6 link-local addresses past DAD), so
    the "before" state of a machine is stable, as a real machine's is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = "".join(sh("ip", "-n", ns, "-6", "addr", "show") for ns in namespaces)
        link_text = "".join(sh("ip", "-n", ns, "-o", "link", "show") for ns in namespaces)
        local = text.count("scope link")
        if "NO-CARRIER" not in link_text and "tentative" not in text and local >= link_text.count("state UP"):
            return
        time.sleep(0.1)
    raise RuntimeError("links did not settle")


@pytest.fixture(scope="module")
def privsep_dir() -> Iterator[None]:
    """sshd insists on its privilege-separation directory; create it only if missing, remove it if we did."""
    path = Path("/run/sshd")
    created = not path.exists()
    path.mkdir(mode=0o755, exist_ok=True)
    yield
    if created:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def machines(tmp_path: Path, privsep_dir: None) -> Iterator[Machines]:
    tag = uuid.uuid4().hex[:5]
    subnet = int(tag, 16) % 200 + 20
    keys = tmp_path / "keys"
    keys.mkdir()
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mkt-test-client", "-f", str(keys / "client"))
    created_ns: list[str] = []
    created_links: list[str] = []
    started: list[subprocess.Popen[bytes]] = []
    try:
        made: list[Machine] = []
        known_lines: list[str] = []
        for index, role in enumerate(("a", "b")):
            ns = f"mkt-ssh-{tag}-{role}"
            sh("ip", "netns", "add", ns)
            created_ns.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # no duplicate address detection on these test links: their state settles at once
            sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0")
            outside = f"mks{tag}{role}"
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", f"mkp{tag}{role}", "netns", ns)
            created_links.append(outside)
            sh("ip", "-n", ns, "link", "set", f"mkp{tag}{role}", "name", "mgmt")
            host_ip, machine_ip = f"10.251.{subnet}.{4 * index + 1}", f"10.251.{subnet}.{4 * index + 2}"
            sh("ip", "addr", "add", f"{host_ip}/30", "dev", outside)
            sh("ip", "link", "set", outside, "up")
            sh("ip", "-n", ns, "addr", "add", f"{machine_ip}/30", "dev", "mgmt")
            sh("ip", "-n", ns, "link", "set", "mgmt", "up")
            hostkey = keys / f"host_{role}"
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey))
            port = 2201 + index
            (keys / f"authorized_{role}").write_text((keys / "client.pub").read_text())
            config = keys / f"sshd_{role}.conf"
            config.write_text(
                f"Port {port}\nListenAddress {machine_ip}\nHostKey {hostkey}\n"
                f"AuthorizedKeysFile {keys / f'authorized_{role}'}\nPermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                f"PidFile {keys / f'sshd_{role}.pid'}\nSubsystem sftp internal-sftp\n"
            )
            sshd = subprocess.Popen(
                ["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            started.append(sshd)
            _wait_port(machine_ip, port)
            known_lines.append(f"[{machine_ip}]:{port} {(keys / f'host_{role}.pub').read_text().split(' ', 2)[0]} "
                               + (keys / f"host_{role}.pub").read_text().split()[1])  # fmt: skip
            made.append(Machine(role, ns, machine_ip, port, sshd))
        # the lab links between the machines: path1 = eth0 <-> eth0, path2 = eth1 <-> eth1
        a, b = made
        for i in (0, 1):
            sh("ip", "link", "add", f"mkl{tag}{i}", "netns", a.ns, "type", "veth", "peer", "name",
               f"mkr{tag}{i}", "netns", b.ns)  # fmt: skip
            sh("ip", "-n", a.ns, "link", "set", f"mkl{tag}{i}", "name", f"eth{i}")
            sh("ip", "-n", b.ns, "link", "set", f"mkr{tag}{i}", "name", f"eth{i}")
            for m in (a, b):
                sh("ip", "-n", m.ns, "link", "set", f"eth{i}", "up")
        _wait_settled([a.ns, b.ns])
        known = keys / "known_hosts"
        known.write_text("\n".join(known_lines) + "\n")
        options = SshOptions(known_hosts=known, client_keys=(keys / "client",), connect_timeout=5)
        yield Machines(a, b, options, tmp_path)
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
        for ns in created_ns:
            for pid in sh("ip", "netns", "pids", ns).split():
                subprocess.run(["kill", "-9", pid], check=False)
            subprocess.run(["ip", "netns", "del", ns], check=False)
        for link in created_links:
            subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)


def preexisting_state(m: Machines) -> None:
    """Give machine a some configuration of its own, which the lab must leave exactly as it found it."""
    ns = m.a.ns
    sh("ip", "-n", ns, "addr", "add", "192.168.77.1/24", "dev", "eth0")
    sh("ip", "-n", ns, "route", "add", "198.51.100.0/24", "via", "192.168.77.254")
    sh("ip", "-n", ns, "rule", "add", "from", "192.168.77.1", "table", "77", "pref", "77")
    sh("ip", "-n", ns, "mptcp", "endpoint", "add", "192.168.77.1", "id", "7", "backup")
    sh("ip", "-n", ns, "mptcp", "limits", "set", "subflows", "3", "add_addr_accepted", "1")
    sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.tcp_congestion_control=reno")
    sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.tcp_rmem=4096 87380 6291456")
    sh("ip", "-n", ns, "link", "set", "eth1", "mtu", "1400")


def topology(m: Machines, *, delay_s: float = 0.0) -> Topology:
    ip = ipaddress.ip_interface
    rate = Direction(rate_bps=20_000_000, delay_s=delay_s)
    topo = Topology(
        name="ssh-two-paths",
        hosts=(
            Host("a", mptcp=MptcpSettings(subflows=2, add_addr_accepted=2), ssh=m.a.target),
            Host(
                "b",
                mptcp=MptcpSettings(
                    subflows=2,
                    add_addr_accepted=2,
                    endpoints=(Endpoint(ipaddress.ip_address("10.0.2.2"), frozenset({"signal"}), dev="eth1"),),
                ),
                ssh=m.b.target,
            ),
        ),
        links=(
            Link("path1", LinkEnd("a", "eth0", (ip("10.0.1.1/24"), ip("fd00:1::1/64"))),
                 LinkEnd("b", "eth0", (ip("10.0.1.2/24"), ip("fd00:1::2/64"))), rate, rate),
            Link("path2", LinkEnd("a", "eth1", (ip("10.0.2.1/24"),)), LinkEnd("b", "eth1", (ip("10.0.2.2/24"),)),
                 rate, rate),
        ),
    )  # fmt: skip
    validate(topo)
    return topo


SERVER = sink_server(5299)
CLIENT = sending_client("10.0.1.2", 5299, 1_000_000, 0.3)


def test_lab_end_to_end_and_exact_restore(machines: Machines) -> None:
    preexisting_state(machines)
    before = {m.ns: raw_state(m.ns) for m in (machines.a, machines.b)}
    started = time.monotonic()
    lab = SshBackend(machines.options).up(topology(machines))
    up_seconds = time.monotonic() - started
    assert isinstance(lab, SshLab)
    try:
        a, b = lab.host("a"), lab.host("b")
        # what the lab applied, seen from outside the backend
        assert "10.0.1.1/24" in sh("ip", "-n", machines.a.ns, "addr", "show", "dev", "eth0")
        assert "192.168.77.1/24" in sh("ip", "-n", machines.a.ns, "addr", "show", "dev", "eth0")
        assert "tbf" in sh("tc", "-n", machines.a.ns, "qdisc", "show", "dev", "eth0")
        assert "from 10.0.2.1 lookup" in sh("ip", "-n", machines.a.ns, "rule", "show")
        assert "subflows 2" in sh("ip", "-n", machines.a.ns, "mptcp", "limits", "show")
        assert "10.0.2.2" in sh("ip", "-n", machines.b.ns, "mptcp", "endpoint", "show")
        assert a.sysctl("net.ipv4.tcp_congestion_control") == "cubic"
        # traffic through the Host interface: an MPTCP transfer with a second subflow over path2
        server = b.spawn([*b.python_argv(), "-c", SERVER])
        assert server.readline(timeout=20) == "ready"
        subflows = int(a.run([*a.python_argv(), "-c", CLIENT], timeout=60).stdout.strip())
        assert server.readline(timeout=20) == "1000000"
        server.wait(timeout=10)
        assert subflows >= 1, "the server's ADD_ADDR for path2 should have opened a second subflow"
    finally:
        lab.close()
    print(f"\nssh lab up in {up_seconds:.2f} s; steps: {lab.info.details['steps']}")
    assert lab.teardown_report == {"a": [], "b": []}
    after = {m.ns: raw_state(m.ns) for m in (machines.a, machines.b)}
    for ns in before:
        for key in before[ns]:
            assert after[ns][key] == before[ns][key], f"{ns} {key} changed"


def test_unknown_host_key_is_refused(machines: Machines) -> None:
    before = raw_state(machines.a.ns)
    other = machines.workdir / "other_known_hosts"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(machines.workdir / "impostor"))
    impostor = (machines.workdir / "impostor.pub").read_text().split()
    other.write_text(
        f"[{machines.a.address}]:{machines.a.port} {impostor[0]} {impostor[1]}\n"
        + machines.options.known_hosts.read_text().splitlines()[1]  # type: ignore[union-attr]
        + "\n"
    )
    options = SshOptions(known_hosts=other, client_keys=machines.options.client_keys, connect_timeout=5)
    with pytest.raises(LabError, match="host key is not in known_hosts") as info:
        SshBackend(options).up(topology(machines))
    assert "ssh-keyscan" in str(info.value)
    assert raw_state(machines.a.ns) == before


def test_unreachable_host_is_a_clean_error(machines: Machines) -> None:
    # the target comes from SshOptions.targets, which overrides the topology's ssh field
    options = dataclasses.replace(machines.options, targets={"b": f"root@{machines.b.address}:2299"})
    started = time.monotonic()
    with pytest.raises(LabError, match=r"b: cannot reach root@.*:2299"):
        SshBackend(options).up(topology(machines))
    assert time.monotonic() - started < 15
    with pytest.raises(UsageError, match="unknown hosts: c"):
        SshBackend(dataclasses.replace(machines.options, targets={"c": "root@x"})).up(topology(machines))


def test_delay_without_netem_is_refused_and_nothing_changes(machines: Machines) -> None:
    if (
        subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem"], capture_output=True).returncode
        == 0
    ):
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)
        pytest.skip("this kernel has netem")
    before = {m.ns: raw_state(m.ns) for m in (machines.a, machines.b)}
    with pytest.raises(LabError, match="netem"):
        SshBackend(machines.options).up(topology(machines, delay_s=0.01))
    assert {m.ns: raw_state(m.ns) for m in (machines.a, machines.b)} == before


def test_machine_dropping_mid_run_is_recorded(machines: Machines) -> None:
    before_a = raw_state(machines.a.ns)
    lab = SshBackend(machines.options).up(topology(machines))
    assert isinstance(lab, SshLab)
    # machine b "crashes": its sshd and every session die
    machines.b.sshd.kill()
    for pid in sh("ip", "netns", "pids", machines.b.ns).split():
        subprocess.run(["kill", "-9", pid], check=False)
    time.sleep(0.5)
    with pytest.raises(LabError, match="b: connection lost"):
        lab.host("b").run(["true"])
    with pytest.raises(LabError, match="teardown did not restore every machine exactly: b"):
        lab.close()
    assert lab.teardown_report["a"] == []
    assert lab.teardown_report["b"]
    assert raw_state(machines.a.ns) == before_a


def test_missing_interface_is_refused(machines: Machines) -> None:
    topo = topology(machines)
    topo = topo.with_link("path2", b=LinkEnd("b", "eth7", (ipaddress.ip_interface("10.0.2.2/24"),)))
    topo = topo.with_host("b", mptcp=MptcpSettings())
    with pytest.raises(LabError, match="b: no interface 'eth7' for link 'path2'"):
        SshBackend(machines.options).up(topo)


# --- pure planning -----------------------------------------------------------------------------------------------


def test_parse_target() -> None:
    assert ssh_plan.parse_target("root@10.0.0.1") == ssh_plan.SshTarget("root", "10.0.0.1", 22)
    assert ssh_plan.parse_target("me@box:2222") == ssh_plan.SshTarget("me", "box", 2222)
    assert ssh_plan.parse_target("me@[fd00::1]:2200") == ssh_plan.SshTarget("me", "fd00::1", 2200)
    for bad in ("box", "@box", "me@box:x", "me@box:70000"):
        with pytest.raises(UsageError):
            ssh_plan.parse_target(bad)


def test_parse_limits_and_sections() -> None:
    assert ssh_plan.parse_limits("add_addr_accepted 0 subflows 2 \n") == {
        "add_addr_accepted": 0,
        "subflows": 2,
    }
    with pytest.raises(LabError, match="incomplete state snapshot"):
        ssh_plan.split_sections("@@link\n[]\n")


def _snapshot(**changes: object) -> ssh_plan.Snapshot:
    base = ssh_plan.Snapshot(
        links={"eth0": {"up": True, "mtu": 1500}, "eth1": {"up": False, "mtu": 1500}},
        addresses=["eth0 10.0.1.1/24"],
        routes=[],
        rules=[],
        qdiscs=[{"dev": "eth0", "kind": "noqueue", "handle": "0:", "root": True}],
        endpoints=[{"address": "192.168.1.1", "id": 1}],
        limits={"subflows": 2, "add_addr_accepted": 0},
        sysctls={k: "x" for k in ("net.mptcp.enabled", "net.ipv4.tcp_congestion_control")},
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def _plan_topology() -> Topology:
    ip = ipaddress.ip_interface
    rate = Direction(rate_bps=10_000_000)
    return Topology(
        "t",
        hosts=(
            Host(
                "a", mptcp=MptcpSettings(subflows=4, endpoints=(Endpoint(ipaddress.ip_address("10.0.2.1")),))
            ),
            Host("b"),
        ),
        links=(
            Link(
                "p1",
                LinkEnd("a", "eth0", (ip("10.0.1.1/24"),)),
                LinkEnd("b", "eth0", (ip("10.0.1.2/24"),)),
                rate,
            ),
            Link(
                "p2", LinkEnd("a", "eth1", (ip("10.0.2.1/24"),)), LinkEnd("b", "eth1", (ip("10.0.2.2/24"),))
            ),
        ),
    )


def test_plan_has_an_undo_for_every_change_and_skips_what_exists() -> None:
    plan = ssh_plan.plan_host(_plan_topology(), "a", _snapshot(), has_netem=False)
    whats = [s.what for s in plan.steps]
    assert "address eth0 10.0.1.1/24" not in whats  # already there: neither added nor removed
    assert "address eth1 10.0.2.1/24" in whats
    assert "eth1 up" in whats
    endpoint = next(s for s in plan.steps if s.what.startswith("endpoint"))
    assert endpoint.apply[-2:] == ("100", "subflow")  # the planned id 1 is taken on the machine
    assert endpoint.undo == ("ip", "mptcp", "endpoint", "delete", "id", "100")
    limits = next(s for s in plan.steps if s.what == "mptcp limits")
    assert limits.undo is not None and limits.undo[-4:] == ("subflows", "2", "add_addr_accepted", "0")
    shape = next(s for s in plan.steps if s.what == "shape eth0")
    assert "tbf" in shape.apply and shape.undo == ("tc", "qdisc", "del", "dev", "eth0", "root")
    assert all(s.undo is not None for s in plan.steps)


def test_plan_refuses_to_replace_a_configured_qdisc_or_reuse_an_endpoint() -> None:
    busy = _snapshot(qdiscs=[{"dev": "eth0", "kind": "htb", "handle": "1:", "root": True}])
    with pytest.raises(LabError, match="already has a configured root qdisc"):
        ssh_plan.plan_host(_plan_topology(), "a", busy, has_netem=False)
    taken = _snapshot(endpoints=[{"address": "10.0.2.1", "id": 3}])
    with pytest.raises(LabError, match=r"endpoint for 10\.0\.2\.1 already exists"):
        ssh_plan.plan_host(_plan_topology(), "a", taken, has_netem=False)


def test_diff_snapshots_names_what_changed() -> None:
    before = _snapshot()
    after = _snapshot(
        addresses=["eth0 10.0.1.1/24", "eth1 10.0.2.1/24"], limits={"subflows": 4, "add_addr_accepted": 0}
    )
    diff = ssh_plan.diff_snapshots(before, after)
    assert "addresses: left behind eth1 10.0.2.1/24" in diff
    assert "limits: subflows was 2, now 4" in diff
    assert ssh_plan.diff_snapshots(before, _snapshot()) == []


def test_lab_run_cli_over_ssh_and_unreachable_machine(machines: Machines, tmp_path: Path) -> None:
    """`mptcpkit lab run --ssh` runs a built-in scenario on the machines and restores them; a machine that
    cannot be reached ends the run cleanly, recorded as failed."""
    import json
    import sys

    before = {m.ns: raw_state(m.ns) for m in (machines.a, machines.b)}
    keys = [x for k in machines.options.client_keys or () for x in ("-i", str(k))]
    common = [
        sys.executable,
        "-m",
        "mptcpkit",
        "lab",
        "run",
        "-s",
        "simult-balanced",
        "--reps",
        "1",
        "--scale",
        "0.4",
        "--no-self-check",
        "--known-hosts",
        str(machines.options.known_hosts),
        *keys,
    ]
    db = str(tmp_path / "r.db")
    proc = subprocess.run(
        [
            *common,
            "--db",
            db,
            "--json",
            "-",
            "--ssh",
            f"client={machines.a.target}",
            "--ssh",
            f"server={machines.b.target}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = json.loads(proc.stdout)
    assert document["environment"]["backend"] == "ssh"
    by_key = {(r["scenario"], r["metric"]): r for r in document["results"]}
    assert by_key[("simult-balanced", "subflows")]["samples"] == [2.0]
    after = {m.ns: raw_state(m.ns) for m in (machines.a, machines.b)}
    assert after == before, "lab run over SSH must leave the machines exactly as they were"
    down = subprocess.run(
        [
            *common,
            "--db",
            db,
            "--ssh",
            f"client={machines.a.target}",
            "--ssh",
            f"server=root@{machines.b.address}:1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "server" in down.stderr and "cannot reach" in down.stderr
    from mptcpkit.lab.store import open_store

    with open_store(db) as store:
        latest = store.get_run("latest")
        assert latest.status == "failed" and "setup_error" in latest.environment
    assert raw_state(machines.a.ns) == before[machines.a.ns]


def test_set_link_replaces_the_qdisc_and_restore_leaves_no_trace(machines: Machines) -> None:
    """set-link on SSH machines: `tc qdisc replace` on both senders, a plain cable deletes the qdisc, a delay
    without netem is refused, and after setting the topology's shape back, teardown finds nothing changed."""
    lab = SshBackend(machines.options).up(topology(machines))
    try:
        setter = lab.set_link_shape  # type: ignore[attr-defined]
        slow = Direction(rate_bps=5_000_000)
        setter("path1", slow, slow)
        for ns in (machines.a.ns, machines.b.ns):
            assert "rate 5Mbit" in sh("tc", "-n", ns, "qdisc", "show", "dev", "eth0")
        assert "rate 20Mbit" in sh("tc", "-n", machines.a.ns, "qdisc", "show", "dev", "eth1")
        if not netem_available():  # the machines share this kernel
            with pytest.raises(LabError, match="netem"):
                setter("path1", Direction(rate_bps=5_000_000, delay_s=0.01), slow)
        setter("path1", Direction(), Direction())
        assert "tbf" not in sh("tc", "-n", machines.a.ns, "qdisc", "show", "dev", "eth0")
        setter("path1", Direction(), Direction())  # deleting twice is fine
        with pytest.raises(LabError, match="no link"):
            setter("path9", slow, slow)
        original = lab.topology.link("path1")
        setter("path1", original.a_to_b, original.b_to_a)
        assert "rate 20Mbit" in sh("tc", "-n", machines.a.ns, "qdisc", "show", "dev", "eth0")
    finally:
        lab.close()
    assert lab.teardown_report == {"a": [], "b": []}

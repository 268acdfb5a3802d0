"""VM backend: argv builders and kernel facts (pure, fast), error paths and guest lifetime (real QEMU, seconds),
and one real boot of the Debian kernel under TCG running an MPTCP transfer with netem (slow, `-m slow`)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mptcp_transfer import sending_client, sink_server

from mptcpkit.errors import EnvironmentProblem, LabError, UsageError
from mptcpkit.lab.backends.vm import argv as vm_argv
from mptcpkit.lab.backends.vm import guest, state
from mptcpkit.lab.backends.vm import kernel as vm_kernel

DEBIAN_KERNELS = sorted(Path("/boot").glob("vmlinuz-*"))
needs_qemu = pytest.mark.skipif(
    not Path("/usr/bin/qemu-system-x86_64").exists() or not DEBIAN_KERNELS,
    reason="needs qemu-system-x86 and linux-image-amd64",
)


def _fake_bzimage(version: bytes) -> bytes:
    """A header laid out as the x86 boot protocol says: 'HdrS' at 0x202, version pointer at 0x20E."""
    image = bytearray(0x1000)
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x20E, 0x400 - 0x200)
    image[0x400 : 0x400 + len(version)] = version
    return bytes(image)


def _descends_from_me(pid: int) -> bool:
    me = os.getpid()
    while pid > 1:
        if pid == me:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


@pytest.fixture
def vm_traces(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[], set[str]]:
    """This test's own guests only: work and state directories moved under tmp_path (other sessions may run
    guests at the same time), and the guest processes descending from this process."""
    monkeypatch.setattr(state, "WORK_PARENT", tmp_path / "work")
    monkeypatch.setattr(state, "STATE_DIR", tmp_path / "state")
    (tmp_path / "work").mkdir()

    def traces() -> set[str]:
        found = {str(p) for p in (tmp_path / "work").iterdir()}
        found |= {str(p) for p in (tmp_path / "state").glob("mkt-vm-*.json")}
        found |= {f"pid {pid}" for pid in _qemu_processes() if _descends_from_me(pid)}
        return found

    return traces


def _qemu_processes(name: str = "mkt-vm-") -> list[int]:
    """Processes whose command line names a guest called `name` (default: any of mptcpkit's guests)."""
    found = []
    wanted = name.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.startswith(wanted) or a.startswith(b"guest=" + wanted) for a in argv):
                found.append(int(entry.name))
    return found


# --- pure builders -------------------------------------------------------------------------------------------


def test_virtme_argv_tcg_has_disable_kvm_and_qemu_opts_last(tmp_path: Path) -> None:
    config = vm_argv.VmConfig(
        kernel=Path("/boot/vmlinuz-x"),
        share_dir=tmp_path / "share",
        script="echo hi",
        name="mkt-vm-test",
        accel="tcg",
        pidfile=tmp_path / "qemu.pid",
        extra_rwdirs=(tmp_path / "out",),
        kernel_args=("loglevel=4",),
    )
    argv = vm_argv.virtme_run_argv(config)
    assert argv[:3] == ["virtme-run", "--kimg", "/boot/vmlinuz-x"]
    assert "--disable-kvm" in argv
    assert argv[argv.index("--name") + 1] == "mkt-vm-test"
    assert argv[argv.index("--script-sh") + 1] == "echo hi"
    rwdirs = [argv[i + 1] for i, a in enumerate(argv) if a == "--rwdir"]
    assert rwdirs == [str(tmp_path / "share"), str(tmp_path / "out")]
    assert argv[-3:] == ["--qemu-opts", "-pidfile", str(tmp_path / "qemu.pid")]
    assert argv[argv.index("--kopt") + 1] == "loglevel=4"
    for directory in vm_argv.OVERLAY_DIRS:
        assert directory in argv


def test_virtme_argv_kvm_omits_disable_kvm(tmp_path: Path) -> None:
    config = vm_argv.VmConfig(kernel=Path("/k"), share_dir=tmp_path, script="true", name="n", accel="kvm")
    argv = vm_argv.virtme_run_argv(config)
    assert "--disable-kvm" not in argv and "--qemu-opts" not in argv


def test_guest_script_quotes_and_runs_command_in_order(tmp_path: Path) -> None:
    share = tmp_path / "share dir"
    script = vm_argv.guest_script(
        ["python", "-c", "print('a b')"],
        share,
        env={"LABEL": "my kernel"},
        modules=("sch_netem",),
        timeout_s=90,
    )
    assert "export LABEL='my kernel'" in script
    assert f"S='{share}'" in script
    assert "timeout -k 10 90 python -c 'print('\"'\"'a b'\"'\"')'" in script
    lines = script.splitlines()
    release = next(i for i, line in enumerate(lines) if "uname -r" in line)
    command = next(i for i, line in enumerate(lines) if "timeout -k" in line)
    rc = next(i for i, line in enumerate(lines) if '$S/rc"' in line)
    assert release < command < rc


def test_guest_script_really_runs_in_a_shell(tmp_path: Path) -> None:
    """The script is plain sh: run it here (no VM) and check the files it leaves behind."""
    share = tmp_path / "share"
    share.mkdir()
    script = vm_argv.guest_script(["sh", "-c", "echo out; echo err >&2; exit 7"], share, modules=())
    subprocess.run(["sh", "-c", script], check=True)
    assert (share / "stdout").read_text() == "out\n"
    assert (share / "stderr").read_text() == "err\n"
    assert (share / "rc").read_text().strip() == "7"
    assert (share / "release").read_text().strip() == os.uname().release


def test_guest_script_rejects_empty_command(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        vm_argv.guest_script([], tmp_path)


def test_bzimage_release_from_header() -> None:
    header = _fake_bzimage(b"6.12.0-rc3-mptcp+ (dev@box) #7 SMP\x00")
    assert vm_argv.read_bzimage_release(header) == "6.12.0-rc3-mptcp+"
    assert vm_argv.read_bzimage_release(b"\x7fELF" + bytes(0x300)) is None
    assert vm_argv.read_bzimage_release(b"short") is None


@pytest.mark.skipif(not DEBIAN_KERNELS, reason="needs linux-image-amd64")
def test_bzimage_release_of_the_debian_kernel() -> None:
    image = DEBIAN_KERNELS[-1]
    assert vm_kernel.kernel_release(image) == image.name.removeprefix("vmlinuz-")


def test_find_module_dir_layouts() -> None:
    root = Path("/m")
    install = {
        root / "lib" / "modules": ["6.9.0"],
        root / "lib" / "modules" / "6.9.0": ["kernel", "modules.dep"],
    }
    assert vm_argv.find_module_dir(root, "6.9.0", install) == root / "lib/modules/6.9.0"
    assert vm_argv.find_module_dir(root, None, install) == root / "lib/modules/6.9.0"
    assert vm_argv.find_module_dir(root, "6.10.0", install) is None
    itself = {root: ["kernel", "modules.dep", "modules.order"]}
    assert vm_argv.find_module_dir(root, "6.9.0", itself) == root
    parent = {root: ["6.8.0", "6.9.0"]}
    assert vm_argv.find_module_dir(root, "6.9.0", parent) == root / "6.9.0"
    assert vm_argv.find_module_dir(root, None, parent) is None  # ambiguous


def test_kvm_probe_verdict() -> None:
    assert not vm_argv.kvm_probe_verdict("SeaBIOS\nBooting from ROM...\nProbing EDD... ok\n", exited=False)
    assert vm_argv.kvm_probe_verdict("[0.0] Linux version 6.1\n[1.2] Kernel panic - not syncing: VFS", False)
    assert vm_argv.kvm_probe_verdict("[0.0] Linux version 6.1\n", exited=True)
    assert not vm_argv.kvm_probe_verdict("", exited=True)


def test_find_panic_early_and_late() -> None:
    early = "[    0.000000] detected buffer overflow\nPANIC: early exception 0x06 IP 10:ffff\n"
    assert vm_argv.find_panic(early) == "PANIC: early exception 0x06 IP 10:ffff"
    late = "[ 3.1] Kernel panic - not syncing: VFS: Unable to mount root fs\n"
    assert vm_argv.find_panic(late) == "Kernel panic - not syncing: VFS: Unable to mount root fs"
    assert vm_argv.find_panic("[ 1.0] Linux version 6.1\n[ 2.0] Run /init as init process\n") is None


def test_console_tail_strips_escapes() -> None:
    text = "\x1bc\x1b[?7l\x1b[2Jline1\r\n\n" + "".join(f"l{i}\n" for i in range(40))
    tail = vm_argv.console_tail(text, lines=3)
    assert tail == "l37\nl38\nl39"


# --- error paths (real files, real QEMU: a few seconds) ------------------------------------------------------


def test_missing_kernel_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        guest.run_in_vm(tmp_path / "bzImage", None, ["true"])


def test_missing_modules_is_a_usage_error(tmp_path: Path, vm_traces: Callable[[], set[str]]) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(_fake_bzimage(b"6.99.0-test (x) #1\x00"))
    with pytest.raises(UsageError, match="does not exist"):
        guest.run_in_vm(kernel, tmp_path / "nope", ["true"])
    (tmp_path / "mods" / "lib" / "modules" / "6.98.0").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"no kernel modules for release 6\.99\.0"):
        guest.run_in_vm(kernel, tmp_path / "mods", ["true"])
    assert vm_traces() == set(), "work directories must be removed on errors"


def test_modules_are_staged_beside_the_image(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(_fake_bzimage(b"6.99.0-test (x) #1\x00"))
    moddir = tmp_path / "inst" / "lib" / "modules" / "6.99.0-test"
    (moddir / "kernel").mkdir(parents=True)
    work = tmp_path / "work"
    staged = vm_kernel.stage_kernel(kernel, tmp_path / "inst", work)
    assert staged.release == "6.99.0-test"
    assert staged.modules == moddir
    assert staged.image.resolve() == kernel.resolve()
    # virtme-run walks up from the image to lib/modules/<release>: the staged tree must lead to the modules
    assert (staged.image.parent / "lib" / "modules" / "6.99.0-test").resolve() == moddir.resolve()
    with pytest.raises(UsageError, match=r"are for kernel 6\.98\.0"):
        other = tmp_path / "other" / "lib" / "modules" / "6.98.0"
        (other / "kernel").mkdir(parents=True)
        vm_kernel.stage_kernel(kernel, other, tmp_path / "work2")


def test_qemu_missing_is_an_environment_problem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without QEMU, as on a machine without the package
    with pytest.raises(EnvironmentProblem, match="QEMU is missing") as info:
        guest.run_in_vm(None, None, ["true"])
    assert "qemu-system-x86" in str(info.value)


@needs_qemu
def test_garbage_kernel_fails_with_console_tail(tmp_path: Path, vm_traces: Callable[[], set[str]]) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"this is not a kernel\n" * 100)
    with pytest.raises(LabError, match="did not boot") as info:
        guest.run_in_vm(kernel, None, ["true"], accel="tcg", boot_timeout=60)
    assert "last lines of the guest console" in str(info.value)
    assert vm_traces() == set()


@needs_qemu
def test_boot_timeout_kills_the_guest(vm_traces: Callable[[], set[str]]) -> None:
    """A boot that takes too long ends with a clear error and no QEMU left behind."""
    started = time.monotonic()
    with pytest.raises(LabError, match="did not boot within 3 s"):
        guest.run_in_vm(None, None, ["true"], accel="tcg", boot_timeout=3)
    assert time.monotonic() - started < 60
    assert vm_traces() == set()


@needs_qemu
def test_cleanup_after_kill_9_of_the_owner(tmp_path: Path) -> None:
    """The process that booted a guest is SIGKILLed: cleanup_vms() finds QEMU by its state file and kills it."""
    code = textwrap.dedent(
        """
        from mptcpkit.lab.backends.vm.guest import run_in_vm
        run_in_vm(None, None, ["sleep", "600"], accel="tcg", boot_timeout=600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", code], start_new_session=False)
    try:
        deadline = time.monotonic() + 60
        states: list[Path] = []
        while time.monotonic() < deadline and not states:
            states = [
                p
                for p in state.STATE_DIR.glob("mkt-vm-*.json")
                if json.loads(p.read_text())["owner"] == owner.pid
            ]
            time.sleep(0.2)
        assert states, "the guest's state file should appear"
        name = json.loads(states[0].read_text())["name"]
        time.sleep(2)
        assert _qemu_processes(name), "virtme-run/QEMU should be running"
        assert name not in state.cleanup_vms(), "a live owner's guest is left alone"
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
    assert name in state.cleanup_vms()
    deadline = time.monotonic() + 10
    while _qemu_processes(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _qemu_processes(name)
    assert not list(Path("/tmp").glob(f"{name}-*"))


# --- real boot (slow) ----------------------------------------------------------------------------------------

GUEST_TRANSFER = r"""
import json, socket, subprocess, sys, time
def sh(*a, ns=None):
    argv = (["ip", "netns", "exec", ns] if ns else []) + list(a)
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout
for ns in ("c", "s"):
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "set", "lo", "up", ns=ns)
for i in (1, 2):
    sh("ip", "link", "add", f"c{i}", "netns", "c", "type", "veth", "peer", f"s{i}", "netns", "s")
    for ns, dev, addr in (("c", f"c{i}", f"10.0.{i}.1/24"), ("s", f"s{i}", f"10.0.{i}.2/24")):
        sh("ip", "addr", "add", addr, "dev", dev, ns=ns)
        sh("ip", "link", "set", dev, "up", ns=ns)
        sh("tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "20ms", ns=ns)
for ns in ("c", "s"):
    sh("ip", "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2", ns=ns)
sh("ip", "mptcp", "endpoint", "add", "10.0.2.2", "dev", "s2", "signal", ns="s")
rtt = sh("ping", "-c", "3", "-i", "0.2", "10.0.1.2", ns="c").rsplit("=", 1)[1].split("/")[1]
SERVER = '''
import socket, sys
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 5201)); srv.listen(1); print("ready", flush=True)
conn, _ = srv.accept(); total = 0
while (chunk := conn.recv(65536)):
    total += len(chunk)
print(total, flush=True)
'''
server = subprocess.Popen(["ip", "netns", "exec", "s", sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                          text=True)
assert server.stdout.readline().strip() == "ready"
size = 4 * 1024 * 1024
cli = subprocess.run(["ip", "netns", "exec", "c", sys.executable, "-c", f'''
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
t0 = time.monotonic(); s.connect(("10.0.1.2", 5201))
time.sleep(0.5)  # let the server's ADD_ADDR arrive and the second subflow join
s.sendall(bytes({size}))
info = s.getsockopt(284, 1, 64)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(info[0], round(time.monotonic() - t0, 3))
'''], check=True, capture_output=True, text=True).stdout.split()
received = int(server.stdout.readline())
qdisc = sh("tc", "qdisc", "show", "dev", "c1", ns="c")
print(json.dumps({"rtt_ms": float(rtt), "subflows": int(cli[0]), "seconds": float(cli[1]),
                  "sent": size, "received": received, "qdisc": qdisc.strip(),
                  "release": __import__("os").uname().release}))
"""


@pytest.mark.slow
@pytest.mark.vm
@needs_qemu
def test_debian_kernel_under_tcg_runs_mptcp_transfer_with_netem() -> None:
    started = time.monotonic()
    result = guest.run_in_vm(
        None,
        None,
        [*guest.guest_python_argv(), "-c", GUEST_TRANSFER],
        accel="tcg",
        timeout=900,
        label="debian",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    info = result.vm_info
    print(f"\nVM run took {elapsed:.1f} s (boot {info['boot_seconds']} s): {facts}")
    assert info["accel"] == "tcg"
    assert info["kernel_label"] == "debian"
    assert info["kernel_release"] == facts["release"] == DEBIAN_KERNELS[-1].name.removeprefix("vmlinuz-")
    assert "sch_netem" in info["modules_loaded"]
    assert "netem" in facts["qdisc"] and "delay 20ms" in facts["qdisc"]
    assert facts["rtt_ms"] >= 40.0  # 20 ms each way
    assert facts["received"] == facts["sent"]
    assert facts["subflows"] >= 1  # MPTCP_INFO counts the subflows added to the first one


# --- the guest agent (pure dispatch; the channel itself is exercised by the slow VmBackend test) ------------


def test_agent_reports_errors_as_data() -> None:
    from mptcpkit.lab.backends.vm import agent as vm_agent
    from mptcpkit.lab.error_codec import error_from_json, error_to_json

    agent = vm_agent.Agent()
    with pytest.raises(LabError, match="unknown agent request"):
        agent.handle({"op": "reboot"})
    with pytest.raises(LabError, match="no lab is up"):
        agent.handle({"op": "run", "host": "client", "argv": ["true"], "timeout": 5})
    encoded = error_to_json(EnvironmentProblem("no netem", hint="load it"))
    assert encoded == {"type": "EnvironmentProblem", "message": "no netem", "hint": "load it"}
    decoded = error_from_json(encoded)
    assert type(decoded) is EnvironmentProblem and decoded.hint == "load it" and decoded.exit_code == 2
    unexpected = error_to_json(KeyError("x"), where="guest agent")
    assert unexpected["type"] == "LabError" and unexpected["message"].startswith("guest agent: KeyError")
    assert type(error_from_json({"type": "TopologyError", "message": "f.toml:3: bad"})) is UsageError
    with pytest.raises(LabError, match="not found in the guest"):
        vm_agent.find_port("no-such-port")


@pytest.mark.slow
@pytest.mark.vm
@pytest.mark.timeout(1200)  # TCG boots on a loaded machine outlast the default 300 s
@needs_qemu
def test_vm_backend_two_paths_lab_inside_the_debian_kernel(vm_traces: Callable[[], set[str]]) -> None:
    """The Lab interface over the guest agent: the built-in two-paths topology with netem inside the guest."""
    from mptcpkit.lab.backends.vm.single import VmBackend
    from mptcpkit.lab.topology_file import load_topology

    topology = load_topology("two-paths")
    # netem delay only: on 6.1, netem's `rate` as the emulation layer sends it is refused with ERANGE (reported)
    for link in topology.links:
        topology = topology.with_link(
            link.name,
            a_to_b=dataclasses.replace(link.a_to_b, rate_bps=None),
            b_to_a=dataclasses.replace(link.b_to_a, rate_bps=None),
        )
    lab = VmBackend(label="debian", accel="tcg").up(topology, emulation="netem")
    try:
        client, server = lab.host("client"), lab.host("server")
        assert lab.info.backend == "vm"
        assert lab.info.details["vm"]["kernel_release"] == DEBIAN_KERNELS[-1].name.removeprefix("vmlinuz-")
        assert (
            client.read_file("/proc/sys/kernel/osrelease").strip() == lab.info.details["vm"]["kernel_release"]
        )
        assert "10.0.1.1" in client.run(["ip", "-br", "addr"]).stdout
        rtt = client.run(["ping", "-c", "3", "-i", "0.3", "10.0.1.2"], timeout=60).stdout
        assert float(rtt.rsplit("=", 1)[1].split("/")[1]) >= 20.0  # two-paths: 10 ms one-way on path1
        process = server.spawn(["sh", "-c", "echo hello; sleep 1; echo bye"])
        assert process.readline(60) == "hello"
        assert process.wait(60).stdout.strip() == "bye"
        with pytest.raises(LabError):
            client.run(["false"])
    finally:
        lab.close()
    assert vm_traces() == set()


# --- multi-VM mode ---------------------------------------------------------------------------------------------


def test_multi_vm_names_fit_and_are_unique() -> None:
    from mptcpkit.lab.backends.vm import multi as vm_multi

    names = [dev for i in range(10) for dev in vm_multi.link_devices("a1b2c3", i)]
    assert len(set(names)) == len(names) and all(len(n) <= 15 for n in names)
    macs = {vm_multi.nic_mac("a1b2c3", h, lk) for h in range(4) for lk in range(4)}
    assert len(macs) == 16 and all(int(m.split(":")[0], 16) & 0x02 for m in macs)  # locally administered
    opts = vm_multi.nic_qemu_opts("nl0", "mka1b2c30a", "52:54:a1:b2:00:00")
    assert opts == [
        "-netdev",
        "tap,id=nl0,ifname=mka1b2c30a,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=nl0,mac=52:54:a1:b2:00:00",
    ]


def _host_links(prefix: str = "mk") -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if f": {prefix}" in line}


@pytest.mark.slow
@pytest.mark.vm
@pytest.mark.timeout(1200)  # TCG boots on a loaded machine outlast the default 300 s
@needs_qemu
def test_multi_vm_two_guests_two_links_mptcp_two_subflows(vm_traces: Callable[[], set[str]]) -> None:
    """Two guests joined by two links (TAPs + bridges here), netem inside: an MPTCP transfer uses both links."""
    import ipaddress

    from mptcpkit.lab.backends.vm.multi import MultiVmBackend
    from mptcpkit.lab.model import Direction, Endpoint, Host, Link, LinkEnd, MptcpSettings, Topology, validate

    ip = ipaddress.ip_interface
    shape = Direction(rate_bps=20_000_000, delay_s=0.005)
    signal = Endpoint(ipaddress.ip_address("10.0.2.2"), frozenset({"signal"}), dev="eth1")
    topology = Topology(
        "multi-vm-two-paths",
        hosts=(
            Host("a", mptcp=MptcpSettings(subflows=2, add_addr_accepted=2)),
            Host("b", mptcp=MptcpSettings(subflows=2, add_addr_accepted=2, endpoints=(signal,))),
        ),
        links=(
            Link(
                "path1",
                LinkEnd("a", "eth0", (ip("10.0.1.1/24"),)),
                LinkEnd("b", "eth0", (ip("10.0.1.2/24"),)),
                shape,
                shape,
            ),
            Link(
                "path2",
                LinkEnd("a", "eth1", (ip("10.0.2.1/24"),)),
                LinkEnd("b", "eth1", (ip("10.0.2.2/24"),)),
                shape,
                shape,
            ),
        ),
    )
    validate(topology)
    lab = MultiVmBackend(label="debian", accel="tcg").up(topology)
    devices = {dev for devs in lab.info.details["links"].values() for dev in devs}
    assert devices <= _host_links(), "one TAP per link end and one bridge per link on this machine"
    try:
        a, b = lab.host("a"), lab.host("b")
        assert {v["kernel_release"] for v in lab.info.details["vms"].values()} == {
            DEBIAN_KERNELS[-1].name.removeprefix("vmlinuz-")
        }
        assert "netem" in a.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout
        rtt = a.run(["ping", "-c", "3", "-i", "0.3", "10.0.2.2"], timeout=60).stdout
        assert float(rtt.rsplit("=", 1)[1].split("/")[1]) >= 10.0  # 5 ms each way
        server = b.spawn([*b.python_argv(), "-c", MULTI_SERVER])
        assert server.readline(120) == "ready"
        subflows = int(a.run([*a.python_argv(), "-c", MULTI_CLIENT], timeout=300).stdout.split()[0])
        assert server.readline(120) == str(2 * 1024 * 1024)
        assert subflows >= 1, "the second subflow over path2 should have joined"
    finally:
        lab.close()
    assert not devices & _host_links(), "TAPs and bridges must be removed"
    assert vm_traces() == set()


MULTI_SERVER = sink_server(5201)
MULTI_CLIENT = sending_client("10.0.1.2", 5201, 2 * 1024 * 1024, 1.0)


def test_run_options_go_to_the_guest_as_data() -> None:
    """`lab run --kernel`: the command's own values, minus host-only ones, and back into the same function."""
    import typer

    from mptcpkit.lab.backends.vm.kernel_run import call_with_options, command_options

    def command(
        reps: int = typer.Option(3),
        scenario: list[str] = typer.Option(None),
        kernel: str = typer.Option(None),
        db: str = typer.Option(None),
        out: Path = typer.Option(None),
    ) -> dict[str, object]:
        return {"reps": reps, "scenario": scenario, "kernel": kernel, "db": db, "out": out}

    values = {
        "reps": 5,
        "scenario": ["a"],
        "kernel": "default",
        "db": "x.db",
        "out": Path("/o"),
        "chosen": [],
    }
    options = command_options(command, values)
    assert options == {"reps": 5, "scenario": ["a"], "out": "/o"}
    assert json.loads(json.dumps(options)) == options
    called = call_with_options(command, {"reps": 7}, db="/tmp/g.db")
    assert called == {"reps": 7, "scenario": None, "kernel": None, "db": "/tmp/g.db", "out": None}
    with pytest.raises(UsageError, match="does not know the run options bogus"):
        call_with_options(command, {"bogus": 1})

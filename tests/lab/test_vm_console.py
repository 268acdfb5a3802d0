"""`lab up --kernel` / `lab console` / `lab down` for VM labs.

Fast (default): the console framing, a real shell session over the console protocol on this machine (pty,
namespace, exit code), and the error paths of vm/detached.py. Slow (`-m slow`): a real single-VM lab of two-paths
under TCG, a shell in the guest through `mptcpkit lab console`, then `lab down` with no QEMU left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from mptcpkit.errors import LabError, UsageError
from mptcpkit.lab import registry
from mptcpkit.lab.backends.vm import console as vm_console
from mptcpkit.lab.backends.vm import detached, state
from mptcpkit.lab.topology_file import load_topology

DEBIAN_KERNELS = sorted(Path("/boot").glob("vmlinuz-*"))
needs_qemu = pytest.mark.skipif(
    not Path("/usr/bin/qemu-system-x86_64").exists() or not DEBIAN_KERNELS,
    reason="needs qemu-system-x86 and linux-image-amd64",
)


def test_frames_round_trip_in_any_chunking() -> None:
    stream = (
        vm_console.json_frame(b"h", {"host": "client", "rows": 24, "cols": 80})
        + vm_console.frame(b"i", b"ls\n")
        + vm_console.frame(b"e")
        + vm_console.json_frame(b"x", 3)
    )
    for size in (1, 3, 7, len(stream)):
        reader = vm_console.FrameReader()
        frames = [f for i in range(0, len(stream), size) for f in reader.feed(stream[i : i + size])]
        assert [k for k, _ in frames] == [b"h", b"i", b"e", b"x"]
        assert frames[1][1] == b"ls\n" and frames[2][1] == b"" and frames[3][1] == b"3"
        assert reader.buffer == b""
    with pytest.raises(ValueError):
        vm_console.FrameReader().feed(b"o\xff\xff\xff\xff")


def test_endpoint_plans(tmp_path: Path) -> None:
    serial, opts = vm_console.plan_endpoint(tmp_path, vsock=False)
    assert serial == {"kind": "serial", "path": str(tmp_path / "console.sock")}
    assert f"name={vm_console.PORT_NAME}" in opts[-1] and "bus=mkagentbus.0" in opts[-1]
    assert "server=on,wait=off" in opts[1]
    vsock, opts = vm_console.plan_endpoint(tmp_path, vsock=True)
    assert vsock["kind"] == "vsock" and vsock["cid"] >= 3
    assert opts == ["-device", f"vhost-vsock-pci,guest-cid={vsock['cid']}"]


@pytest.fixture
def console_server(
    tmp_path: Path, make_netns: Callable[[str], str]
) -> Iterator[tuple[vm_console.Endpoint, str]]:
    """The guest side of the console (vm_console.session), served here on a unix socket, shells in a real
    namespace: the same code the agent runs in a guest, minus the guest."""
    netns = make_netns("mkc-con")
    path = tmp_path / "console.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)

    def shell_argv(host: str) -> list[str]:
        if host != "client":
            raise LabError(f"no host '{host}' in this guest")
        return ["ip", "netns", "exec", netns, "sh", "-i"]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                vm_console.session(partial(conn.recv, 65536), conn.sendall, conn.fileno(), shell_argv)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield {"kind": "serial", "path": str(path)}, netns
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)


def _console(endpoint: vm_console.Endpoint, host: str, text: str) -> tuple[int, bytes]:
    """run_console with `text` as a pipe on stdin, capturing what the shell wrote."""
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(stdin_w, text.encode())
    os.close(stdin_w)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(out_r, 65536), b"")))
    reader.start()
    try:
        code = vm_console.run_console(endpoint, host, stdin=stdin_r, stdout=out_w)
    finally:
        os.close(out_w)
        reader.join(10)
        os.close(stdin_r)
        os.close(out_r)
    return code, b"".join(chunks)


def test_console_session_runs_a_shell_in_the_hosts_namespace(
    console_server: tuple[vm_console.Endpoint, str],
) -> None:
    endpoint, netns = console_server
    code, output = _console(endpoint, "client", "ip -br link; readlink /proc/self/ns/net; tty; exit 7\n")
    assert code == 7
    text = output.decode(errors="replace")
    assert "lo " in text
    ns_inode = os.stat(f"/run/netns/{netns}").st_ino
    assert f"net:[{ns_inode}]" in text  # the shell ran in the host's namespace
    assert "/dev/pts/" in text  # on a terminal of its own
    # end of input types ^D: the shell exits 0 by itself
    code, _ = _console(endpoint, "client", "true\n")
    assert code == 0


def test_console_unknown_host_in_guest_is_reported(console_server: tuple[vm_console.Endpoint, str]) -> None:
    endpoint, _ = console_server
    code, output = _console(endpoint, "nosuch", "")
    assert code == 1
    assert b"no host 'nosuch'" in output


def test_console_unreachable_endpoint_is_a_lab_error(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="cannot reach the guest's console"):
        vm_console.run_console({"kind": "serial", "path": str(tmp_path / "none.sock")}, "client")


def test_console_of_unknown_lab_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no lab 'ffffff'"):
        detached.vm_lab_console("ffffff", "client")
    assert detached.vm_lab_down("ffffff") is False


def test_console_of_a_namespace_lab_says_use_exec() -> None:
    from mptcpkit.lab.backends.netns import NetnsBackend

    topo = load_topology("two-paths")
    lab = NetnsBackend().up(topo, emulation="userspace")
    try:
        lab_id = lab.info.lab_id
        with pytest.raises(UsageError, match=f"use `mptcpkit lab exec {lab_id} HOST -- bash`"):
            detached.vm_lab_console(lab_id, "client")
    finally:
        lab.close()


def test_vm_lab_up_input_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        detached.vm_lab_up("two-paths", str(tmp_path / "bzImage"), None, False, "auto")
    if DEBIAN_KERNELS:
        with pytest.raises(UsageError, match="modules directory"):
            detached.vm_lab_up("two-paths", "default", tmp_path / "nomods", False, "auto")
    with pytest.raises(UsageError):
        detached.vm_lab_up("no-such-topology", "default", None, False, "auto")


@needs_qemu
def test_vm_lab_up_boot_failure_comes_back_from_the_supervisor(tmp_path: Path) -> None:
    """A kernel that does not boot: the detached supervisor's error reaches `vm_lab_up`, nothing is left."""
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"this is not a kernel\n" * 100)
    with pytest.raises(LabError, match="the guest") as info:
        detached.vm_lab_up("two-paths", str(kernel), None, False, "auto", accel="tcg", timeout=120)
    assert "last lines of the guest console" in str(info.value)
    assert "invalid kernel header" in str(info.value)  # QEMU's own words, from the supervisor's guest
    assert [r for r in registry.all_records() if r.details.get("kernel") == str(kernel)] == [], "record left"
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(tmp_path).encode() in (entry / "cmdline").read_bytes():
                    leftovers.append(entry.name)
    assert leftovers == []


def test_cli_up_modules_without_kernel_and_console_errors() -> None:
    cli = [sys.executable, "-m", "mptcpkit", "lab"]
    up = subprocess.run([*cli, "up", "two-paths", "--multi-vm"], capture_output=True, text=True, timeout=60)
    assert up.returncode == 2 and "go with --kernel" in up.stderr
    console = subprocess.run(
        [*cli, "console", "ffffff", "client"], capture_output=True, text=True, timeout=60
    )
    assert console.returncode == 2 and "no lab 'ffffff'" in console.stderr
    assert "Traceback" not in console.stderr


# --- a real guest ----------------------------------------------------------------------------------------------


def _qemu_of(lab_id: str, guests: list[str]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if any(g in argv for g in guests) or f"labs/{lab_id}.spec" in argv:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.vm
@needs_qemu
def test_lab_up_kernel_default_console_and_down(tmp_path: Path) -> None:
    """`lab up --kernel default` of two-paths (single VM) stays up after the command; `lab console` runs a shell
    in the client's namespace inside the guest (fed on stdin); `lab down` leaves no QEMU and no record."""
    # netem delay only: on the Debian 6.1 guest, netem `rate` through pyroute2 is refused (docs/backend-vm.md)
    topo = load_topology("two-paths")
    for link in topo.links:
        topo = topo.with_link(
            link.name,
            a_to_b=dataclasses.replace(link.a_to_b, rate_bps=None),
            b_to_a=dataclasses.replace(link.b_to_a, rate_bps=None),
        )
    toml = tmp_path / "two-paths-norate.toml"
    toml.write_text(
        (Path(registry.__file__).parent / "topologies" / "two-paths.toml")
        .read_text()
        .replace('rate = "50mbit"', "")
    )
    cli = [sys.executable, "-m", "mptcpkit", "lab"]
    up = subprocess.run(
        [*cli, "up", str(toml), "--kernel", "default", "--emulation", "netem"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert up.returncode == 0, up.stderr
    lab_id = up.stdout.strip()
    guests: list[str] = []
    try:
        listed = {r.lab_id: r for r in detached.vm_lab_list()}
        assert listed[lab_id].state == "up" and listed[lab_id].backend == "vm"
        guests = [g["name"] for g in state.running_vms() if g.get("owner") == listed[lab_id].owner_pid]
        status = subprocess.run([*cli, "status", "--json"], capture_output=True, text=True, timeout=60)
        assert any(row["lab_id"] == lab_id and row["backend"] == "vm" for row in json.loads(status.stdout))
        assert len(guests) == 1
        started = time.monotonic()
        shell = subprocess.run(
            [*cli, "console", lab_id, "client"],
            input="ip -br addr; uname -r; exit 5\n",
            capture_output=True,
            text=True,
            timeout=180,
        )
        print(f"console session: {time.monotonic() - started:.1f} s")
        assert shell.returncode == 5, shell.stderr
        assert "10.0.1.1/24" in shell.stdout  # the client's namespace inside the guest
        assert DEBIAN_KERNELS[-1].name.removeprefix("vmlinuz-") in shell.stdout  # the guest's kernel
        bad = subprocess.run([*cli, "console", lab_id, "nosuch"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "no host 'nosuch'" in bad.stderr
    finally:
        down = subprocess.run([*cli, "down", lab_id], capture_output=True, text=True, timeout=600)
    assert down.returncode == 0, down.stderr
    assert lab_id not in {r.lab_id for r in detached.vm_lab_list()}
    assert registry.load(lab_id) is None
    assert _qemu_of(lab_id, guests) == []


def test_vm_labs_live_in_the_one_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A VM lab is a registry record like a namespace lab: listed, shown by status, dropped when its supervisor died."""
    from mptcpkit.lab.backends.lab_status import status_rows

    monkeypatch.setattr(registry, "STATE_DIR", tmp_path / "labs")
    monkeypatch.setattr(state, "STATE_DIR", tmp_path / "vm")
    supervisor = subprocess.Popen(["sleep", "60"])  # stands in for the VM lab's supervisor
    live = registry.LabRecord(
        lab_id=registry.new_lab_id(),
        backend="multi-vm",
        topology="two-paths",
        hosts=["client", "server"],
        owner_pid=supervisor.pid,
        owner_start=state.start_time(supervisor.pid),
        state="up",
        details={"kernel": "/boot/vmlinuz-6.1", "consoles": {}},
    )
    registry.save(live)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = registry.LabRecord(
        lab_id=registry.new_lab_id(), backend="vm", topology="t", owner_pid=dead.pid, owner_start="1"
    )
    registry.save(stale)
    assert [r.lab_id for r in detached.vm_lab_list()] == [live.lab_id]
    assert registry.load(stale.lab_id) is None, "a record whose supervisor is gone is dropped"
    loaded = detached.vm_lab(live.lab_id)
    assert loaded is not None and loaded.details["kernel"] == "/boot/vmlinuz-6.1" and loaded.owner_alive
    (row,) = status_rows()
    assert row["backend"] == "multi-vm" and row["state"] == "up"
    assert row["hosts"] == {"client": "VM /boot/vmlinuz-6.1", "server": "VM /boot/vmlinuz-6.1"}
    with pytest.raises(LabError, match="recorded no console for 'client'"):
        detached.vm_lab_console(live.lab_id, "client")
    assert detached.vm_lab_down(live.lab_id) is True
    supervisor.wait(timeout=10)  # lab down stopped it (SIGTERM) and reaped it: no wait for the 60 s
    assert registry.all_records() == []

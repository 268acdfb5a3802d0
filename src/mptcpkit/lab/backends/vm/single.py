"""VM backend as a `Backend`: the lab's LabHost calls forwarded to an agent inside the guest.

`VmBackend.up(topology)` boots one guest (see `guest.Guest`) running `agent.py`, which builds the lab there with
the namespace backend against the kernel under test. Each LabHost call becomes one JSON line over a virtio-serial
port whose host end is a unix socket QEMU connects to, so the runner drives a VM lab exactly as a namespace one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mptcpkit.errors import LabError
from mptcpkit.lab.backends.base import Backend, CommandResult, HostProcess, Lab, LabHost, LabInfo
from mptcpkit.lab.backends.vm import console as vm_console
from mptcpkit.lab.backends.vm.guest import Guest, guest_python_argv
from mptcpkit.lab.backends.vm.kernel import AccelChoice
from mptcpkit.lab.error_codec import error_from_json
from mptcpkit.lab.model import Direction, Topology

AGENT_PORT = "mptcpkit.agent"


class _Channel:
    """JSON-lines requests to the guest agent over QEMU's virtio-serial socket; one request at a time."""

    def __init__(self, conn: socket.socket, guest: Guest) -> None:
        self.conn = conn
        self.guest = guest
        self.buffer = b""
        self.lock = threading.Lock()
        self.conn.settimeout(0.5)

    def read_line(self, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if time.monotonic() > deadline:
                raise LabError(f"the guest agent did not answer {what} within {timeout:.0f} s")
            try:
                chunk = self.conn.recv(65536)
            except TimeoutError:
                if self.guest.check(booted=True) is not None:
                    raise LabError(
                        f"the guest stopped during {what}\n" + self.guest.console_excerpt()
                    ) from None
                continue
            if not chunk:
                raise LabError(f"the guest agent went away during {what}\n" + self.guest.console_excerpt())
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, request: dict[str, Any], timeout: float) -> Any:
        with self.lock:
            try:
                self.conn.sendall(json.dumps(request).encode() + b"\n")
            except OSError as exc:
                raise LabError(f"the guest agent is gone ({exc})") from None
            reply = self.read_line(timeout, f"'{request['op']}'")
        if "error" in reply:
            raise error_from_json(reply["error"])
        return reply.get("ok")


class VmProcess(HostProcess):
    """A process started on a lab host inside the guest."""

    def __init__(self, channel: _Channel, pid: int) -> None:
        self._channel = channel
        self._id = pid
        self._finished = False

    def readline(self, timeout: float) -> str | None:
        line: str | None = self._channel.call(
            {"op": "readline", "id": self._id, "timeout": timeout}, timeout + 30
        )
        return line

    def wait(self, timeout: float | None = None) -> CommandResult:
        reply = self._channel.call({"op": "wait", "id": self._id, "timeout": timeout}, (timeout or 3600) + 30)
        self._finished = True
        return CommandResult(tuple(reply["argv"]), reply["returncode"], reply["stdout"], reply["stderr"])

    def terminate(self) -> None:
        self._channel.call({"op": "terminate", "id": self._id}, 60)

    @property
    def running(self) -> bool:
        return bool(self._channel.call({"op": "running", "id": self._id}, 30))


class VmHost(LabHost):
    """A lab host (a namespace) inside the guest."""

    def __init__(self, name: str, channel: _Channel) -> None:
        self.name = name
        self._channel = channel

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True, input: str | None = None
    ) -> CommandResult:
        request = {"op": "run", "host": self.name, "argv": list(argv), "timeout": timeout, "input": input}
        reply = self._channel.call(request, timeout + 30)
        result = CommandResult(tuple(reply["argv"]), reply["returncode"], reply["stdout"], reply["stderr"])
        return result.check(self.name) if check else result

    def spawn(self, argv: Sequence[str]) -> HostProcess:
        pid = int(self._channel.call({"op": "spawn", "host": self.name, "argv": list(argv)}, 60))
        return VmProcess(self._channel, pid)

    def python_argv(self) -> list[str]:
        argv: list[str] = self._channel.call({"op": "python_argv", "host": self.name}, 30)
        return argv

    def read_file(self, path: str) -> str:
        text: str = self._channel.call({"op": "read_file", "host": self.name, "path": path}, 60)
        return text

    def set_link_up(self, ifname: str, up: bool) -> None:
        self._channel.call({"op": "set_link_up", "host": self.name, "ifname": ifname, "up": up}, 60)


class VmLab(Lab):
    """A namespace lab inside one guest running the kernel under test."""

    def __init__(
        self, topology: Topology, info: LabInfo, guest: Guest, channel: _Channel, listener: socket.socket
    ) -> None:
        self.topology = topology
        self.info = info
        self._guest = guest
        self._channel = channel
        self._listener = listener
        self._closed = False
        self._console: vm_console.Endpoint = {}

    def host(self, name: str) -> LabHost:
        self.topology.host(name)  # KeyError for an unknown host, as elsewhere
        return VmHost(name, self._channel)

    def set_link_shape(self, name: str, a_to_b: Direction, b_to_a: Direction) -> None:
        """set-link: the namespace lab inside the guest reshapes its wire (see NetnsLab.set_link_shape)."""
        request = {"op": "set_link_shape", "link": name, "a_to_b": asdict(a_to_b), "b_to_a": asdict(b_to_a)}
        self._channel.call(request, 60)

    def console_endpoint(self, host: str) -> vm_console.Endpoint:
        """Where `lab console` reaches `host`'s shell (one guest for every host: the hello names the host)."""
        self.topology.host(host)
        return dict(self._console)

    def alive(self) -> bool:
        """False once the guest has stopped (crash, poweroff, killed)."""
        return self._guest.proc is not None and self._guest.proc.poll() is None

    def close(self) -> None:
        """Tear the lab down inside the guest, let the guest power off, kill it if it does not."""
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(LabError):
                self._channel.call({"op": "close"}, 120)
            with contextlib.suppress(LabError):
                self._guest.wait_exit(60)
        finally:
            self._channel.conn.close()
            self._listener.close()
            self._guest.close()


@dataclass(frozen=True, slots=True)
class GuestSettings:
    """How to boot each guest of a VM backend (kernel under test, accelerator, size, time limits)."""

    kernel: Path | None = None
    modules: Path | None = None
    label: str | None = None
    accel: AccelChoice = "auto"
    boot_timeout: float = 300.0
    lab_timeout: float = 6 * 3600.0
    cpus: int = 2
    memory: str = "1G"

    def guest(self, argv: list[str]) -> Guest:
        """A guest (not started yet) that runs `argv` on this kernel."""
        return Guest(
            self.kernel,
            self.modules,
            argv,
            timeout=self.lab_timeout,
            accel=self.accel,
            label=self.label,
            cpus=self.cpus,
            memory=self.memory,
        )


class VmBackend(Backend):
    """Single-VM mode: every lab host is a namespace inside one guest booted on the kernel under test."""

    name = "vm"

    def __init__(self, kernel: Path | None = None, modules: Path | None = None, **settings: Any) -> None:
        self.settings = GuestSettings(kernel, modules, **settings)

    def up(self, topology: Topology, *, emulation: str = "auto") -> VmLab:
        node = AgentGuest(self.settings.guest(agent_argv()))
        try:
            node.launch()
            channel = node.connect(time.monotonic() + self.settings.boot_timeout)
            blob = base64.b64encode(pickle.dumps(topology)).decode()
            guest_info = channel.call({"op": "up", "topology": blob, "emulation": emulation}, 900)
            info = LabInfo(
                lab_id=node.guest.name,
                backend="vm",
                topology=topology.name,
                emulation=dict(guest_info.get("emulation", {})),
                details={"vm": node.vm_info(), "guest_lab": guest_info},
            )
            lab = VmLab(topology, info, node.guest, channel, node.listener)
            lab._console = node.console
            return lab
        except BaseException:
            node.close()
            raise


def agent_argv() -> list[str]:
    """The guest command that serves the Lab interface (see agent.py)."""
    return [*guest_python_argv(), "-m", "mptcpkit.lab.backends.vm.agent", AGENT_PORT]


class AgentGuest:
    """A guest running the agent, and the unix socket its virtio-serial port is connected to.

    The host listens and QEMU connects at start, so the port is connected before the agent opens it. When this
    process dies the socket closes and the agent should read EOF and exit (untested; `cleanup_vms` is the
    guarantee after a kill -9).
    """

    def __init__(self, guest: Guest, extra_qemu_opts: Sequence[str] = ()) -> None:
        self.guest = guest
        sock_path = guest.workdir / "agent.sock"
        self.console, console_opts = vm_console.plan_endpoint(
            guest.workdir, vsock=vm_console.vsock_available()
        )
        guest.extra_qemu_opts = (
            "-chardev",
            f"socket,id=mkagent,path={sock_path}",
            "-device",
            "virtio-serial-pci,id=mkagentbus",
            "-device",
            f"virtserialport,bus=mkagentbus.0,chardev=mkagent,name={AGENT_PORT}",
            *console_opts,
            *extra_qemu_opts,
        )
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(sock_path))
        self.listener.listen(1)
        self.listener.settimeout(0.5)
        self.conn: socket.socket | None = None
        self.channel: _Channel | None = None
        self.release = ""

    def launch(self) -> None:
        self.guest.start()

    def connect(self, deadline: float) -> _Channel:
        """Accept QEMU's connection, then wait for the agent's hello (the guest booted)."""
        guest = self.guest
        while self.conn is None:
            try:
                self.conn, _ = self.listener.accept()
            except TimeoutError:
                if guest.check(booted=False) is not None or time.monotonic() > deadline:
                    raise LabError(
                        "QEMU did not connect the agent channel\n" + guest.console_excerpt()
                    ) from None
        self.channel = _Channel(self.conn, guest)
        hello = self.channel.read_line(max(1.0, deadline - time.monotonic()), "the boot")
        guest.boot_seconds = time.monotonic() - guest.started
        self.release = str(hello.get("hello", ""))
        return self.channel

    def vm_info(self) -> dict[str, Any]:
        info = self.guest.info().as_dict()
        info["kernel_release"] = self.release or info["kernel_release"]
        return info

    def shutdown(self) -> None:
        """Ask the agent to close its lab, give the guest a minute to power off, then clean up regardless."""
        try:
            if self.channel is not None:
                with contextlib.suppress(LabError):
                    self.channel.call({"op": "close"}, 120)
                with contextlib.suppress(LabError):
                    self.guest.wait_exit(60)
        finally:
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
        self.guest.close()

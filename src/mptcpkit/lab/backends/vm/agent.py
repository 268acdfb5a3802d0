"""Guest side of the VM backend: serve one namespace lab over a virtio-serial port, one JSON request per line.

Run inside the guest as `python -m mptcpkit.lab.backends.vm.agent PORTNAME`. It builds the lab with the
namespace backend (against the guest's kernel, the kernel under test) and executes the LabHost calls the host side
(`single.VmLab`) forwards. Requests and replies are JSON lines: `{"op": ..., ...}` -> `{"ok": value}` or
`{"error": {"type", "message", "hint"}}`. The topology travels pickled: both ends are the same mptcpkit
(the guest shares the host's root file system), over a channel only QEMU and this process can open.
"""

from __future__ import annotations

import base64
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mptcpkit.errors import LabError
from mptcpkit.lab.backends.base import CommandResult, HostProcess, Lab, LabHost, LabInfo
from mptcpkit.lab.error_codec import error_to_json
from mptcpkit.lab.model import Topology

PORTS = Path("/sys/class/virtio-ports")


def find_port(name: str) -> Path:
    """The /dev node of the virtio-serial port called `name` (no udev in the guest to make the symlink)."""
    for entry in sorted(PORTS.glob("vport*")):
        try:
            if (entry / "name").read_text().strip() == name:
                return Path("/dev") / entry.name
        except OSError:
            continue
    raise LabError(f"virtio-serial port {name!r} not found in the guest")


def result_dict(result: CommandResult) -> dict[str, Any]:
    return {
        "argv": list(result.argv),
        "returncode": result.returncode,
        "stdout": result.stdout,
        "stderr": result.stderr,
    }


class Agent:
    """Dispatches requests to one lab and the processes started in it."""

    def __init__(self) -> None:
        self.lab: Lab | None = None
        self.processes: dict[int, HostProcess] = {}
        self.next_id = 1

    def _lab(self) -> Lab:
        if self.lab is None:
            raise LabError("no lab is up in the guest")
        return self.lab

    def handle(self, request: dict[str, Any]) -> Any:
        op = request["op"]
        handler: Callable[[dict[str, Any]], Any] | None = getattr(self, f"op_{op}", None)
        if handler is None:
            raise LabError(f"unknown agent request {op!r}")
        return handler(request)

    def op_up(self, request: dict[str, Any]) -> Any:
        from mptcpkit.lab.backends.netns import NetnsBackend

        topology = pickle.loads(base64.b64decode(request["topology"]))
        self.lab = NetnsBackend().up(topology, emulation=request.get("emulation", "auto"))
        return asdict(self.lab.info)

    def op_host_up(self, request: dict[str, Any]) -> Any:
        """Multi-VM mode: this guest *is* one lab host; configure its NICs as the topology says."""
        topology = pickle.loads(base64.b64decode(request["topology"]))
        self.lab = GuestHostLab.build(topology, request["host"], request["macs"])
        return asdict(self.lab.info)

    def op_run(self, request: dict[str, Any]) -> Any:
        host = self._lab().host(request["host"])
        result = host.run(
            request["argv"], timeout=request["timeout"], check=False, input=request.get("input")
        )
        return result_dict(result)

    def op_spawn(self, request: dict[str, Any]) -> Any:
        process = self._lab().host(request["host"]).spawn(request["argv"])
        pid = self.next_id
        self.next_id += 1
        self.processes[pid] = process
        return pid

    def op_readline(self, request: dict[str, Any]) -> Any:
        return self.processes[request["id"]].readline(request["timeout"])

    def op_wait(self, request: dict[str, Any]) -> Any:
        return result_dict(self.processes[request["id"]].wait(request.get("timeout")))

    def op_terminate(self, request: dict[str, Any]) -> Any:
        self.processes[request["id"]].terminate()
        return None

    def op_running(self, request: dict[str, Any]) -> Any:
        return self.processes[request["id"]].running

    def op_set_link_shape(self, request: dict[str, Any]) -> Any:
        """set-link: the guest's namespace lab (or, multi-VM, this host's qdiscs) shapes the link anew."""
        from mptcpkit.lab.model import Direction

        setter = getattr(self._lab(), "set_link_shape", None)
        if setter is None:
            raise LabError("the lab in the guest cannot change a link's shape")
        setter(request["link"], Direction(**request["a_to_b"]), Direction(**request["b_to_a"]))
        return None

    def op_set_link_up(self, request: dict[str, Any]) -> Any:
        self._lab().host(request["host"]).set_link_up(request["ifname"], request["up"])
        return None

    def op_read_file(self, request: dict[str, Any]) -> Any:
        return self._lab().host(request["host"]).read_file(request["path"])

    def op_python_argv(self, request: dict[str, Any]) -> Any:
        return self._lab().host(request["host"]).python_argv()

    def op_close(self, request: dict[str, Any]) -> Any:
        for process in self.processes.values():
            process.terminate()
        if self.lab is not None:
            self.lab.close()
        return None


ROOT_ALIAS = "mkt-guest-root"


def _sh(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


class GuestHostLab(Lab):
    """Multi-VM mode, inside one guest: the guest's own network stack is the lab host `name`.

    The guest's NICs (one per link, found by MAC) are renamed to the link's interface names, then the same
    plan as the SSH backend's (addresses, policy routing, MPTCP limits/endpoints, sysctls, tc/netem shaping on
    egress) is applied. Nothing is undone: the guest is thrown away with the lab. Commands run through a named
    alias of the guest's root namespace, so the namespace backend's LabHost serves them.
    """

    def __init__(self, topology: Topology, name: str, info: LabInfo) -> None:
        from mptcpkit.lab.backends.netns import NetnsHost

        self.topology = topology
        self.info = info
        self._name = name
        self._host = NetnsHost(name, ROOT_ALIAS)

    @classmethod
    def build(cls, topology: Topology, name: str, macs: dict[str, str]) -> GuestHostLab:
        from mptcpkit.lab.backends import ssh_plan

        attach = _sh(["ip", "netns", "attach", ROOT_ALIAS, "1"])
        if attach.returncode != 0 and "File exists" not in attach.stderr:
            raise LabError(f"cannot name the guest's namespace: {attach.stderr.strip()}")
        for dev in sorted(Path("/sys/class/net").iterdir()):
            wanted = macs.get((dev / "address").read_text().strip().lower())
            if wanted is not None and dev.name != wanted:
                _sh(["ip", "link", "set", "dev", dev.name, "down"])
                renamed = _sh(["ip", "link", "set", "dev", dev.name, "name", wanted])
                if renamed.returncode != 0:
                    raise LabError(f"cannot rename {dev.name} to {wanted}: {renamed.stderr.strip()}")
        keys = ssh_plan.sysctl_keys(topology, name)
        before = ssh_plan.parse_snapshot(_sh(["sh", "-c", ssh_plan.snapshot_script(keys)]).stdout)
        probe = _sh(
            [
                "sh",
                "-c",
                "ip link add mktpa type veth peer name mktpb && "
                "tc qdisc add dev mktpa root netem delay 1ms; rc=$?; ip link del mktpa; exit $rc",
            ]
        )
        plan = ssh_plan.plan_host(topology, name, before, has_netem=probe.returncode == 0)
        steps = plan.steps
        if steps:
            out = _sh(["sh", "-c", ssh_plan.steps_script([s.apply for s in steps], stop_on_error=True)])
            ok, failed = ssh_plan.parse_steps_output(out.stdout)
            if failed or len(ok) != len(steps):
                index = min(failed) if failed else len(ok)
                raise LabError(
                    f"{name}: {steps[index].what} failed: {failed.get(index) or out.stderr.strip()}"
                )
        info = LabInfo(
            lab_id=os.uname().nodename,
            backend="multi-vm",
            topology=topology.name,
            emulation={"kind": "tc/netem on the guest's NICs", "netem": probe.returncode == 0},
            details={"host": name, "steps": [s.what for s in steps], "release": os.uname().release},
        )
        return cls(topology, name, info)

    def host(self, name: str) -> LabHost:
        if name != self._name:
            raise LabError(f"this guest is host '{self._name}', not '{name}'")
        return self._host

    def close(self) -> None:
        self._host.stop_children()


def serve(port: Path, agent: Agent | None = None) -> None:
    import json

    agent = agent or Agent()
    fd = os.open(port, os.O_RDWR)
    with os.fdopen(fd, "rb+", buffering=0) as channel:
        channel.write(json.dumps({"hello": os.uname().release}).encode() + b"\n")
        buffer = b""
        while True:
            chunk = channel.read(65536)
            if not chunk:
                break  # the host side closed (lab closed or its process died): the guest powers off
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                try:
                    reply: dict[str, Any] = {"ok": agent.handle(request)}
                except BaseException as exc:  # every failure goes back to the host, the agent keeps serving
                    reply = {"error": error_to_json(exc, where="guest agent")}
                channel.write(json.dumps(reply).encode() + b"\n")
                if request.get("op") == "close":
                    return


def shell_argv(agent: Agent) -> Callable[[str], list[str]]:
    """`lab console`: the shell of a lab host, in that host's namespace (see console.py)."""

    def argv(host: str) -> list[str]:
        if agent.lab is None:
            raise LabError("the lab is not up in the guest yet")
        try:
            netns = getattr(agent.lab.host(host), "netns", None)
        except (KeyError, LabError):
            raise LabError(f"no host '{host}' in this guest") from None
        shell = ["bash", "-i"] if os.path.exists("/bin/bash") else ["sh", "-i"]
        return ["ip", "netns", "exec", netns, *shell] if netns else shell

    return argv


def start_console(agent: Agent) -> None:
    """Serve `lab console` over vsock if the guest has it, and over the console port if QEMU gave one."""
    from mptcpkit.lab.backends.vm import console as vm_console

    vm_console.serve_vsock(shell_argv(agent))
    try:
        device = find_port(vm_console.PORT_NAME)
    except LabError:
        return
    vm_console.serve_port(shell_argv(agent), device)


def main() -> None:
    agent = Agent()
    start_console(agent)
    serve(find_port(sys.argv[1]), agent)


if __name__ == "__main__":
    main()

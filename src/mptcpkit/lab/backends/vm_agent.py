"""Guest side of the VM backend: serve one namespace lab over a virtio-serial port, one JSON request per line.

Run inside the guest as `python -m mptcpkit.lab.backends.vm_agent PORTNAME`. It builds the lab with the
namespace backend (against the guest's kernel, the kernel under test) and executes the Host calls the host side
(`vm.VmLab`) forwards. Requests and replies are JSON lines: `{"op": ..., ...}` -> `{"ok": value}` or
`{"error": {"type", "message", "hint"}}`. The topology travels pickled: both ends are the same mptcpkit
(the guest shares the host's root file system), over a channel only QEMU and this process can open.
"""

from __future__ import annotations

import base64
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mptcpkit.errors import LabError, MptcpkitError
from mptcpkit.lab.backends.base import CommandResult, HostProcess, Lab

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


def error_dict(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MptcpkitError):
        return {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    return {"type": "LabError", "message": f"guest agent: {type(exc).__name__}: {exc}", "hint": None}


def serve(port: Path) -> None:
    import json

    agent = Agent()
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
                    reply = {"error": error_dict(exc)}
                channel.write(json.dumps(reply).encode() + b"\n")
                if request.get("op") == "close":
                    return


def main() -> None:
    serve(find_port(sys.argv[1]))


if __name__ == "__main__":
    main()

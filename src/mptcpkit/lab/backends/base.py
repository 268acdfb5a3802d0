"""The one LabHost/Lab interface every backend implements, so scenarios and the runner never know where they run.

A backend turns a `Topology` into a running `Lab` (namespaces on this machine, VMs running a kernel under test,
or remote machines over SSH). A `Lab` gives one `LabHost` per topology host: run a command, start a process, read a
file, set a sysctl, take a link down or up. Everything a backend creates is undone by `Lab.close()`, which is
idempotent and safe to call from signal handlers' cleanup paths.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mptcpkit.errors import LabError
from mptcpkit.lab.model import Topology
from mptcpkit.lab.sysctl_rules import require_safe_sysctl, sysctl_read_path


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def check(self, host: str) -> CommandResult:
        """Raise LabError with the command's stderr when it failed."""
        if self.returncode != 0:
            raise LabError(
                f"{host}: `{shlex.join(self.argv)}` failed with exit code {self.returncode}: "
                f"{(self.stderr or self.stdout).strip()[-500:]}"
            )
        return self


class HostProcess(abc.ABC):
    """A process started on a host; its stdout is read line by line or all at once."""

    @abc.abstractmethod
    def readline(self, timeout: float) -> str | None:
        """The next stdout line (without newline), or None at end of output; LabError on timeout."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> CommandResult:
        """Wait for the process to end and return its exit code and remaining output."""

    @abc.abstractmethod
    def terminate(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after a grace period); idempotent."""

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """True while the process has not exited."""


class LabHost(abc.ABC):
    """One lab host, wherever it runs."""

    name: str

    @abc.abstractmethod
    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True, input: str | None = None
    ) -> CommandResult:
        """Run a command to completion on the host."""

    @abc.abstractmethod
    def spawn(self, argv: Sequence[str]) -> HostProcess:
        """Start a long-running command on the host (traffic servers and clients)."""

    @abc.abstractmethod
    def python_argv(self) -> list[str]:
        """argv prefix that runs a Python interpreter with mptcpkit importable on the host."""

    def read_file(self, path: str) -> str:
        """Contents of a file on the host (e.g. /proc/net/netstat)."""
        return self.run(["cat", path]).stdout

    def sysctl(self, key: str) -> str:
        """Read a sysctl on the host."""
        return self.read_file(str(sysctl_read_path(key))).strip()

    def set_sysctl(self, key: str, value: str) -> None:
        """Write a sysctl on the host."""
        require_safe_sysctl(key, value)
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    @abc.abstractmethod
    def set_link_up(self, ifname: str, up: bool) -> None:
        """Bring one of the host's lab interfaces up or down (failover scenarios)."""


@dataclass
class LabInfo:
    """What a backend records about a lab it brought up (shown by `lab status`, stored with runs)."""

    lab_id: str
    backend: str
    topology: str
    emulation: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Lab(abc.ABC):
    """A running topology."""

    topology: Topology
    info: LabInfo

    @property
    def lab_id(self) -> str:
        return self.info.lab_id

    @abc.abstractmethod
    def host(self, name: str) -> LabHost:
        """The running host called `name`."""

    def set_link_up(self, link_name: str, up: bool) -> None:
        """Take a whole link down (both ends) or bring it back, as a cable pull would."""
        link = self.topology.link(link_name)
        for end in (link.a, link.b):
            self.host(end.host).set_link_up(end.ifname, up)

    @abc.abstractmethod
    def close(self) -> None:
        """Tear everything down; idempotent."""

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(abc.ABC):
    """Turns topologies into running labs."""

    name: str

    @abc.abstractmethod
    def up(self, topology: Topology, *, emulation: str = "auto") -> Lab:
        """Build the lab; on any failure, undo what was built and raise."""

"""What `lab run` options mean before anything runs: checks, the SSH backend and its scenarios, VM guest arguments.

Pure except for building the SSH backend; the CLI parses, this resolves, the runner runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mptcpkit.errors import UsageError

EMULATION_MODES = ("auto", "netem", "userspace")
ENGINES = ("mptcpkit", "iperf3")


def check_emulation_mode(mode: str) -> None:
    """--emulation must name a mode the lab knows."""
    if mode not in EMULATION_MODES:
        raise UsageError(f"--emulation must be auto, netem or userspace, not '{mode}'")


def check_engine(engine: str) -> None:
    """--engine must name a traffic generator the runner knows."""
    if engine not in ENGINES:
        raise UsageError(f"--engine must be mptcpkit or iperf3, not '{engine}'")


def ssh_targets(mappings: Sequence[str]) -> dict[str, str]:
    """`--ssh HOST=USER@MACHINE[:PORT]` items -> {topology host: ssh target}."""
    targets = {}
    for item in mappings:
        host, sep, target = item.partition("=")
        if not sep or not host or "@" not in target:
            raise UsageError(f"--ssh wants HOST=USER@MACHINE[:PORT], e.g. client=root@bench-a; got '{item}'")
        targets[host] = target
    return targets


def ssh_backend(
    mappings: Sequence[str],
    known_hosts: Path | None,
    identity: Sequence[Path] | None,
    chosen: list[Any],
    explicit: bool,
    warn: Callable[[str], None],
) -> tuple[object, list[Any]]:
    """The SSH backend for `--ssh host=user@machine` mappings, and the scenarios it can run.

    Scenarios whose hosts are not all mapped are an error when named explicitly, else skipped with a warning.
    """
    from mptcpkit.lab.backends.ssh import SshBackend, SshOptions

    targets = ssh_targets(mappings)
    runnable = [s for s in chosen if {h.name for h in s.topology().hosts} <= set(targets)]
    skipped = [s.name for s in chosen if s not in runnable]
    if skipped and explicit:
        raise UsageError(
            f"--ssh maps no machine to some hosts of {', '.join(skipped)} "
            f"(mapped: {', '.join(sorted(targets))})"
        )
    if skipped:
        warn(f"[yellow]skipping[/] {', '.join(skipped)}: their hosts are not all mapped with --ssh")
    if not runnable:
        raise UsageError("no scenario can run on the machines given with --ssh")
    options = SshOptions(
        known_hosts=known_hosts, client_keys=tuple(identity) if identity else None, targets=targets
    )
    return SshBackend(options), runnable

"""VM labs that outlive one command: `lab up --kernel`, `lab status`, `lab console`, `lab down` for VM labs.

`vm_lab_up` records the lab in the one lab registry (`lab/registry.py`, the same record type and id generator
as namespace labs), then starts a detached supervisor (`supervisor.py`) that owns the guests and keeps that
record current; it returns once the lab is up (or raises the supervisor's error, decoded by `error_codec`).
`vm_lab_down` sends the supervisor SIGTERM and waits until it closed the lab; guests never outlive it (after a
SIGKILL, `state.cleanup_vms()` kills guests whose owner is gone). `vm_lab_console` opens a shell on a lab host
(see `console.py`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mptcpkit.errors import EnvironmentProblem, LabError, UsageError
from mptcpkit.lab import registry
from mptcpkit.lab.backends.vm import console as vm_console
from mptcpkit.lab.backends.vm.kernel import default_kernel, find_qemu, find_virtme_run
from mptcpkit.lab.backends.vm.state import cleanup_vms
from mptcpkit.lab.error_codec import error_from_json
from mptcpkit.lab.model import Topology

UP_TIMEOUT_S = 1500.0  # boot (up to 600 s for several guests under TCG) + building the lab inside
DOWN_TIMEOUT_S = 240.0
VM_BACKENDS = ("vm", "multi-vm")
STARTING_GRACE_S = 60.0  # a record whose supervisor never recorded itself is stale after this


def _reap(pid: int) -> None:
    """Collect the supervisor's exit status when this process started it (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _log_path(lab_id: str) -> Path:
    return registry.state_dir(lab_id) / "supervisor.log"


def _log_tail(lab_id: str, lines: int = 15) -> str:
    try:
        text = _log_path(lab_id).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _forget(lab_id: str) -> None:
    registry.remove(lab_id)
    shutil.rmtree(registry.state_dir(lab_id), ignore_errors=True)


def _supervised(record: registry.LabRecord) -> bool:
    """True when the record's supervisor has started (it records itself with its start time)."""
    return record.owner_start is not None


def vm_lab_up(
    topology: Topology | str,
    kernel: str,
    modules: Path | None,
    multi: bool,
    emulation: str,
    *,
    label: str | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float = UP_TIMEOUT_S,
    accel: str = "auto",
) -> str:
    """Boot a VM lab (single-VM, or one guest per host with `multi`) and leave it running; returns its id.

    `kernel` is an image path or "default" (the distribution kernel). Blocks until the lab is up (one to a few
    minutes under TCG); Ctrl-C while waiting stops the guests.
    """
    from mptcpkit.lab.topology_file import load_topology

    topo = load_topology(topology) if isinstance(topology, str) else topology
    image: Path | None = None
    if kernel and kernel != "default":
        image = Path(kernel)
        if not image.is_file():
            raise UsageError(f"kernel image {kernel} does not exist", hint="give a bzImage or 'default'")
    else:
        image = default_kernel()
    if modules is not None and not Path(modules).is_dir():
        raise UsageError(f"modules directory {modules} does not exist")
    find_qemu()
    find_virtme_run()
    if os.geteuid() != 0:
        raise EnvironmentProblem("VM labs need root (TAPs, namespaces in the guest)", hint="run with sudo")
    lab_id = registry.new_lab_id()
    record = registry.LabRecord(
        lab_id=lab_id,
        backend="multi-vm" if multi else "vm",
        topology=topo.name,
        hosts=[h.name for h in topo.hosts],
        topology_file=topo.source,
        details={
            "kernel": str(image),
            "modules": str(modules) if modules else None,
            "emulation_mode": emulation,
        },
    )
    registry.save(record)
    spec = {
        "lab_id": lab_id,
        "topology": base64.b64encode(pickle.dumps(topo)).decode(),
        "kernel": str(image),
        "modules": str(modules) if modules else None,
        "multi": multi,
        "emulation": emulation,
        "label": label,
        "accel": accel,
    }
    directory = registry.state_dir(lab_id)
    directory.mkdir(parents=True, exist_ok=True)
    spec_path = directory / "supervisor.spec"
    spec_path.write_text(json.dumps(spec))
    spec_path.chmod(0o600)
    with _log_path(lab_id).open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mptcpkit.lab.backends.vm.supervisor", str(spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # survives this command and its terminal
            cwd="/",
        )
    kind = "one guest per host" if multi else "one guest"
    if progress:
        progress(f"lab {lab_id}: booting {image.name} ({kind}); this takes one to a few minutes under TCG")
    try:
        deadline = time.monotonic() + timeout
        while True:
            current = registry.load(lab_id)
            state = current.state if current is not None else "gone"
            if state == "up":
                return lab_id
            if state == "failed" and current is not None:
                _wait_exit(proc, 60)
                _forget(lab_id)
                raise error_from_json(current.details.get("error") or {}, default="the VM lab failed")
            if proc.poll() is not None:
                tail = _log_tail(lab_id)
                _forget(lab_id)
                cleanup_vms()
                raise LabError(f"the VM lab supervisor exited with {proc.returncode}\n{tail}")
            if time.monotonic() > deadline:
                raise LabError(f"the VM lab did not come up within {timeout:.0f} s\n{_log_tail(lab_id)}")
            time.sleep(0.5)
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            _wait_exit(proc, DOWN_TIMEOUT_S)
        _forget(lab_id)
        raise


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        cleanup_vms()


def vm_lab(lab_id: str) -> registry.LabRecord | None:
    """The registry record of VM lab `lab_id`, or None (no such lab, or a namespace lab)."""
    record = registry.load(lab_id)
    return record if record is not None and record.backend in VM_BACKENDS else None


def vm_lab_down(lab_id: str, timeout: float = DOWN_TIMEOUT_S) -> bool:
    """Stop a VM lab: its supervisor closes the lab (guests, TAPs, bridges). False when no such VM lab."""
    record = vm_lab(lab_id)
    if record is None:
        return False
    pid = record.owner_pid
    if _supervised(record) and record.owner_alive:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while record.owner_alive and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.3)
        if record.owner_alive:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        _reap(pid)
    cleanup_vms()  # guests whose owner (the supervisor) is gone, if it had to be killed
    _forget(lab_id)
    return True


def vm_lab_list() -> list[registry.LabRecord]:
    """Every VM lab recorded on this machine (for `lab status`); records of dead supervisors are dropped."""
    labs = []
    for record in registry.all_records():
        if record.backend not in VM_BACKENDS:
            continue
        if _supervised(record) and not record.owner_alive:
            _forget(record.lab_id)
            cleanup_vms()
            continue
        if not _supervised(record) and time.time() - record.created_at > STARTING_GRACE_S:
            _forget(record.lab_id)  # its supervisor never started
            continue
        labs.append(record)
    return labs


def vm_lab_console(lab_id: str, host: str) -> int:
    """An interactive shell on `host` of a running VM lab; returns the shell's exit code."""
    record = vm_lab(lab_id)
    if record is None:
        if registry.load(lab_id) is not None:
            raise UsageError(
                f"lab {lab_id} is a namespace lab, not a VM lab: use `mptcpkit lab exec {lab_id} HOST -- bash`"
            )
        raise UsageError(f"no lab '{lab_id}' on this machine (see `mptcpkit lab status`)")
    hosts = record.hosts
    if host not in hosts:
        raise UsageError(f"no host '{host}' in lab {lab_id} (hosts: {', '.join(hosts)})")
    if not (_supervised(record) and record.owner_alive):
        raise LabError(f"lab {lab_id} is gone (its supervisor stopped)", hint=f"mptcpkit lab down {lab_id}")
    if record.state != "up":
        raise LabError(f"lab {lab_id} is still {record.state}: try again once `lab up` returned")
    endpoint = record.details.get("consoles", {}).get(host)
    if not endpoint:
        raise LabError(f"lab {lab_id} recorded no console for '{host}'")
    return vm_console.run_console(endpoint, host)

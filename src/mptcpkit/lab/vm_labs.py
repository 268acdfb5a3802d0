"""VM labs that outlive one command: `lab up --kernel`, `lab status`, `lab console`, `lab down` for VM labs.

`vm_lab_up` starts a detached supervisor (`backends.vm_supervisor`) that owns the guests and records the lab
in `<vm.STATE_DIR>/labs/<id>.json`; it returns once the lab is up (or raises the supervisor's error).
`vm_lab_down` sends the supervisor SIGTERM and waits until it closed the lab; guests never outlive it (after a
SIGKILL, `vm.cleanup_vms()` kills guests whose owner is gone). `vm_lab_console` opens a shell on a lab host
(see `backends.vm_console`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mptcpkit.errors import EnvironmentProblem, LabError, MptcpkitError, UsageError
from mptcpkit.lab import registry
from mptcpkit.lab.backends import vm, vm_console
from mptcpkit.lab.backends.vm_supervisor import (
    labs_dir,
    process_alive,
    read_record,
    record_path,
    write_record,
)
from mptcpkit.lab.model import Topology

UP_TIMEOUT_S = 1500.0  # boot (up to 600 s for several guests under TCG) + building the lab inside
DOWN_TIMEOUT_S = 240.0
_ERRORS: dict[str, type[MptcpkitError]] = {
    "UsageError": UsageError,
    "TopologyError": UsageError,
    "EnvironmentProblem": EnvironmentProblem,
}


def _new_lab_id() -> str:
    while True:
        lab_id = secrets.token_hex(3)
        if not record_path(lab_id).exists() and registry.load(lab_id) is None:
            return lab_id


def _alive(record: dict[str, Any]) -> bool:
    pid = record.get("pid")
    return isinstance(pid, int) and pid > 0 and process_alive(pid, record.get("pid_start"))


def _reap(pid: int) -> None:
    """Collect the supervisor's exit status when this process started it (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _log_tail(lab_id: str, lines: int = 15) -> str:
    try:
        text = (labs_dir() / f"{lab_id}.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _forget(lab_id: str) -> None:
    record_path(lab_id).unlink(missing_ok=True)
    (labs_dir() / f"{lab_id}.log").unlink(missing_ok=True)
    (labs_dir() / f"{lab_id}.spec").unlink(missing_ok=True)


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
        image = vm.default_kernel()
    if modules is not None and not Path(modules).is_dir():
        raise UsageError(f"modules directory {modules} does not exist")
    vm.find_qemu()
    vm.find_virtme_run()
    if os.geteuid() != 0:
        raise EnvironmentProblem("VM labs need root (TAPs, namespaces in the guest)", hint="run with sudo")
    lab_id = _new_lab_id()
    path = record_path(lab_id)
    write_record(
        path,
        {
            "lab_id": lab_id,
            "backend": "multi-vm" if multi else "vm",
            "topology": topo.name,
            "hosts": [h.name for h in topo.hosts],
            "kernel": str(image),
            "modules": str(modules) if modules else None,
            "emulation_mode": emulation,
            "created_at": time.time(),
            "state": "starting",
        },
    )
    spec = {
        "lab_id": lab_id,
        "record": str(path),
        "topology": base64.b64encode(pickle.dumps(topo)).decode(),
        "kernel": str(image),
        "modules": str(modules) if modules else None,
        "multi": multi,
        "emulation": emulation,
        "label": label,
        "accel": accel,
    }
    spec_path = labs_dir() / f"{lab_id}.spec"
    spec_path.write_text(json.dumps(spec))
    spec_path.chmod(0o600)
    with (labs_dir() / f"{lab_id}.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mptcpkit.lab.backends.vm_supervisor", str(spec_path)],
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
            record = read_record(path) or {}
            if record.get("state") == "up":
                return lab_id
            if record.get("state") == "failed":
                error = record.get("error") or {}
                _wait_exit(proc, 60)
                _forget(lab_id)
                raise _ERRORS.get(str(error.get("type")), LabError)(
                    str(error.get("message", "the VM lab failed")), hint=error.get("hint")
                )
            if proc.poll() is not None:
                tail = _log_tail(lab_id)
                _forget(lab_id)
                vm.cleanup_vms()
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
        vm.cleanup_vms()


def is_vm_lab(lab_id: str) -> bool:
    return record_path(lab_id).exists()


def vm_lab_down(lab_id: str, timeout: float = DOWN_TIMEOUT_S) -> bool:
    """Stop a VM lab: its supervisor closes the lab (guests, TAPs, bridges). False when no such VM lab."""
    record = read_record(record_path(lab_id))
    if record is None:
        return False
    pid = int(record.get("pid") or 0)
    if pid and _alive(record):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(record) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.3)
        if _alive(record):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        _reap(pid)
    vm.cleanup_vms()  # guests whose owner (the supervisor) is gone, if it had to be killed
    _forget(lab_id)
    return True


def vm_lab_list() -> list[dict[str, Any]]:
    """Every VM lab recorded on this machine (for `lab status`); records of dead supervisors are dropped."""
    labs = []
    directory = labs_dir()
    if not directory.is_dir():
        return []
    for path in sorted(directory.glob("*.json")):
        record = read_record(path)
        if record is None:
            continue
        if record.get("pid") and not _alive(record):
            _forget(str(record.get("lab_id", path.stem)))
            vm.cleanup_vms()
            continue
        if not record.get("pid") and time.time() - float(record.get("created_at", 0)) > 60:
            _forget(str(record.get("lab_id", path.stem)))  # its supervisor never started
            continue
        labs.append(record)
    return sorted(labs, key=lambda r: float(r.get("created_at", 0)))


def vm_lab_console(lab_id: str, host: str) -> int:
    """An interactive shell on `host` of a running VM lab; returns the shell's exit code."""
    record = read_record(record_path(lab_id))
    if record is None:
        if registry.load(lab_id) is not None:
            raise UsageError(
                f"lab {lab_id} is a namespace lab, not a VM lab: use `mptcpkit lab exec {lab_id} HOST -- bash`"
            )
        raise UsageError(f"no lab '{lab_id}' on this machine (see `mptcpkit lab status`)")
    hosts = [str(h) for h in record.get("hosts", [])]
    if host not in hosts:
        raise UsageError(f"no host '{host}' in lab {lab_id} (hosts: {', '.join(hosts)})")
    if not _alive(record):
        raise LabError(f"lab {lab_id} is gone (its supervisor stopped)", hint=f"mptcpkit lab down {lab_id}")
    if record.get("state") != "up":
        raise LabError(
            f"lab {lab_id} is still {record.get('state', 'starting')}: try again once `lab up` returned"
        )
    endpoint = record.get("consoles", {}).get(host)
    if not endpoint:
        raise LabError(f"lab {lab_id} recorded no console for '{host}'")
    return vm_console.run_console(endpoint, host)

"""The process that keeps a VM lab up after `mptcpkit lab up --kernel ...` returns.

`python -m mptcpkit.lab.backends.vm_supervisor SPEC` is started detached by `vm_labs.vm_lab_up`. It owns the
backend's Lab object (the guests are its children, their state files name it as owner), writes the lab's
record (`<STATE_DIR>/labs/<id>.json`: state, hosts, console endpoints), and on SIGTERM/SIGINT/SIGHUP closes the
lab and removes the record. If a guest stops on its own, it closes the rest and exits too. If it is killed with
SIGKILL, `vm.cleanup_vms()` finds its guests (their owner is dead) and `vm_labs` drops the stale record.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import signal
import sys
import time
from pathlib import Path
from typing import Any

from mptcpkit.errors import MptcpkitError
from mptcpkit.lab.backends import vm

LAB_TIMEOUT_S = 7 * 24 * 3600.0  # a guest orphaned by a SIGKILLed supervisor powers off after this at most


def labs_dir() -> Path:
    return vm.STATE_DIR / "labs"


def record_path(lab_id: str) -> Path:
    return labs_dir() / f"{lab_id}.json"


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None  # a record that is not an object is unreadable too


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Atomic write, so readers never see half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)


def process_alive(pid: int, start: str | None) -> bool:
    """True while `pid` runs, is not a zombie, and is the process that was recorded (same start time)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and (start is None or fields[19] == start)


def error_record(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MptcpkitError):
        return {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    return {"type": "LabError", "message": f"{type(exc).__name__}: {exc}", "hint": None}


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run(spec: dict[str, Any]) -> int:
    """Bring the lab up, publish it, wait for a signal (or a dead guest), tear it down."""
    from mptcpkit.lab.backends.vm_lab import VmBackend
    from mptcpkit.lab.backends.vm_multi import MultiVmBackend

    path = Path(spec["record"])
    record = read_record(path) or {"lab_id": spec["lab_id"]}
    record.update(pid=os.getpid(), pid_start=vm._start_time(os.getpid()), state="starting")
    write_record(path, record)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _stop)
    lab: Any = None
    failed = False
    try:
        topology = pickle.loads(base64.b64decode(spec["topology"]))
        kernel = Path(spec["kernel"]) if spec.get("kernel") else None
        modules = Path(spec["modules"]) if spec.get("modules") else None
        backend_type = MultiVmBackend if spec["multi"] else VmBackend
        backend = backend_type(
            kernel,
            modules,
            label=spec.get("label"),
            lab_timeout=LAB_TIMEOUT_S,
            accel=spec.get("accel", "auto"),
        )
        lab = backend.up(topology, emulation=spec["emulation"])
        record.update(
            state="up",
            up_at=time.time(),
            consoles={h.name: lab.console_endpoint(h.name) for h in topology.hosts},
            details=lab.info.details,
            emulation=lab.info.emulation,
        )
        write_record(path, record)
        print(f"lab {spec['lab_id']} up", flush=True)
        while lab.alive():
            time.sleep(1.0)
        print("a guest stopped on its own: closing the lab", flush=True)
        return 1
    except SystemExit:
        print("stop requested: closing the lab", flush=True)
        return 0
    except BaseException as exc:
        failed = True
        record.update(state="failed", error=error_record(exc))
        write_record(path, record)
        print(f"lab failed: {exc}", flush=True)
        return 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the teardown short
        if lab is not None:
            with contextlib.suppress(Exception):
                lab.close()
        if not failed:
            path.unlink(missing_ok=True)
        print("done", flush=True)


def main() -> None:
    spec_path = Path(sys.argv[1])
    spec = json.loads(spec_path.read_text())
    spec_path.unlink(missing_ok=True)
    raise SystemExit(run(spec))


if __name__ == "__main__":
    main()

"""The process that keeps a VM lab up after `mptcpkit lab up --kernel ...` returns.

`python -m mptcpkit.lab.backends.vm.supervisor SPEC` is started detached by `detached.vm_lab_up`. It owns the
backend's Lab object (the guests are its children, their state files name it as owner), keeps the lab's record
in the one lab registry (`lab/registry.py`: state, hosts, and in `details` the console endpoints or the error),
and on SIGTERM/SIGINT/SIGHUP closes the lab and removes the record. If a guest stops on its own, it closes the
rest and exits too. If it is killed with SIGKILL, `state.cleanup_vms()` finds its guests (their owner is dead)
and `detached.vm_lab_list` drops the stale record.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from mptcpkit.lab import registry
from mptcpkit.lab.backends.vm.state import start_time
from mptcpkit.lab.error_codec import error_to_json

LAB_TIMEOUT_S = 7 * 24 * 3600.0  # a guest orphaned by a SIGKILLed supervisor powers off after this at most


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run(spec: dict[str, Any]) -> int:
    """Bring the lab up, publish it, wait for a signal (or a dead guest), tear it down."""
    from mptcpkit.lab.backends.vm.multi import MultiVmBackend
    from mptcpkit.lab.backends.vm.single import VmBackend

    record = registry.load(spec["lab_id"])
    if record is None:
        print(f"lab {spec['lab_id']} has no record: `lab down` removed it before it started", flush=True)
        return 1
    record.owner_pid, record.owner_start, record.state = os.getpid(), start_time(os.getpid()), "starting"
    registry.save(record)
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
        record.state = "up"
        record.emulation = lab.info.emulation
        record.details.update(
            lab.info.details,
            up_at=time.time(),
            consoles={h.name: lab.console_endpoint(h.name) for h in topology.hosts},
        )
        registry.save(record)
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
        record.state = "failed"
        record.details["error"] = error_to_json(exc, where="VM lab")
        registry.save(record)
        print(f"lab failed: {exc}", flush=True)
        return 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the teardown short
        if lab is not None:
            with contextlib.suppress(Exception):
                lab.close()
        if not failed:
            registry.remove(record.lab_id)
            shutil.rmtree(registry.state_dir(record.lab_id), ignore_errors=True)
        print("done", flush=True)


def main() -> None:
    spec_path = Path(sys.argv[1])
    spec = json.loads(spec_path.read_text())
    spec_path.unlink(missing_ok=True)
    raise SystemExit(run(spec))


if __name__ == "__main__":
    main()

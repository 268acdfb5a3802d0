"""One machine, one job: the per-machine lock and the small state file that survives a killed worker.

The lock is an flock on <state dir>/<machine id>.lock held for the worker's lifetime: a second worker for the
same machine (another class, a second unit by mistake) refuses to start instead of running a second lab beside
the first. The state file names the job and child in flight, so the next worker on this machine knows what a
`kill -9` left behind: the job to retry or fail, and the labs (owned by the dead child) to remove.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mptcpkit.errors import UsageError

STATE_DIR = Path(os.environ.get("MPTCPKIT_FLEET_STATE_DIR", "/run/mptcpkit/fleet"))


@dataclass
class MachineLock:
    machine_id: str
    state_dir: Path = STATE_DIR
    _fd: int | None = None

    @property
    def state_file(self) -> Path:
        return self.state_dir / f"{self.machine_id}.json"

    def acquire(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"{self.machine_id}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UsageError(
                f"machine {self.machine_id} already has a worker (pid {holder}): one job at a time per machine",
                hint="serve several classes from one worker: --class A --class B",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read_state(self) -> dict[str, Any]:
        try:
            value = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def write_state(self, **state: Any) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)

    def clear_state(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()


def remove_dead_labs(owner_pids: set[int]) -> list[str]:
    """Tear down the labs owned by these (dead) processes: only theirs, never anyone else's."""
    from mptcpkit.lab import registry
    from mptcpkit.lab.backends.netns import teardown_record

    removed = []
    for record in registry.all_records():
        if record.owner_pid in owner_pids and not record.owner_alive:
            teardown_record(record)
            removed.append(record.lab_id)
    return removed

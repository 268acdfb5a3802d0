"""Where running labs are recorded, so another process (`lab status`, `lab down --all`) can find and undo them.

A record is written *before* anything is created (an intent log) and updated as the lab is built, so even a lab
whose builder was killed with SIGKILL half-way can be removed completely, and nothing else. Every backend's labs
(namespace labs, VM labs kept up by their supervisor) use this one record type and one id generator.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_DIR = Path(os.environ.get("MPTCPKIT_STATE_DIR", "/run/mptcpkit/labs"))
NETNS_PREFIX = "mkl-"
LAB_ID_RE = re.compile(r"^[0-9a-f]{6}$")
# Namespaces the project creates: mkl-<lab id>-<host> and mkl-<lab id>.wire
OUR_NETNS_RE = re.compile(r"^mkl-([0-9a-f]{6})[-.]")


@dataclass
class LabRecord:
    """Everything needed to find and tear down one lab."""

    lab_id: str
    backend: str
    topology: str
    created_at: float = field(default_factory=time.time)
    owner_pid: int = field(default_factory=os.getpid)
    owner_start: str | None = None  # the owner's start time (/proc/PID/stat), to tell it from a reused pid
    state: str = "building"  # building | up | failed (VM labs whose supervisor reported an error)
    hosts: list[str] = field(default_factory=list)
    namespaces: dict[str, str] = field(default_factory=dict)  # host -> netns name
    wire_netns: str | None = None
    emulation: dict[str, Any] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    topology_file: str | None = None
    details: dict[str, Any] = field(
        default_factory=dict
    )  # backend-specific: a VM lab's kernel, consoles, error

    @property
    def all_netns(self) -> list[str]:
        names = list(self.namespaces.values())
        if self.wire_netns:
            names.append(self.wire_netns)
        return names

    @property
    def owner_alive(self) -> bool:
        """True while the owner runs (and, when its start time was recorded, is the same process)."""
        try:
            stat = Path(f"/proc/{self.owner_pid}/stat").read_text()
        except OSError:
            return False
        fields = stat.rsplit(")", 1)[1].split()
        return fields[0] != "Z" and (self.owner_start is None or fields[19] == self.owner_start)


def new_lab_id() -> str:
    """A fresh lab id not used by any recorded lab (of any backend) or its state directory."""
    while True:
        lab_id = secrets.token_hex(3)
        if not (STATE_DIR / f"{lab_id}.json").exists() and not (STATE_DIR / lab_id).exists():
            return lab_id


def state_dir(lab_id: str) -> Path:
    """The lab's own directory for files beside its record (topology, logs); removed with the lab."""
    return STATE_DIR / lab_id


def netns_name(lab_id: str, host: str) -> str:
    return f"{NETNS_PREFIX}{lab_id}-{host}"


def wire_netns_name(lab_id: str) -> str:
    return f"{NETNS_PREFIX}{lab_id}.wire"


def save(record: LabRecord) -> None:
    """Write the record atomically."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_DIR / f".{record.lab_id}.json.tmp"
    tmp.write_text(json.dumps(asdict(record), indent=2))
    os.replace(tmp, STATE_DIR / f"{record.lab_id}.json")


def load(lab_id: str) -> LabRecord | None:
    """The record of `lab_id`, or None."""
    path = STATE_DIR / f"{lab_id}.json"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    known = set(LabRecord.__dataclass_fields__)
    return LabRecord(**{k: v for k, v in data.items() if k in known})


def remove(lab_id: str) -> None:
    (STATE_DIR / f"{lab_id}.json").unlink(missing_ok=True)


def all_records() -> list[LabRecord]:
    """Every recorded lab, oldest first."""
    if not STATE_DIR.is_dir():
        return []
    records = []
    for path in STATE_DIR.glob("*.json"):
        record = load(path.stem)
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda r: r.created_at)

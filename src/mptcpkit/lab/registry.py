"""Where running labs are recorded, so another process (`lab status`, `lab down --all`) can find and undo them.

A record is written *before* anything is created (an intent log) and updated as the lab is built, so even a lab
whose builder was killed with SIGKILL half-way can be removed completely, and nothing else. Every backend's labs
(namespace labs, VM labs kept up by their supervisor) use this one record type and one id generator.

Rule 1: `lab down ID` and `lab down --all` always remove a record, whatever it holds: a record that is not valid
JSON, has unknown or missing fields or wrong types is read leniently (`load` never raises), and the lab's
namespaces are also found by name (mkl-<id>-*), so a half-written record still finds everything.
Rule 2: a record can only name what its lab may remove: namespaces called mkl-<its id>..., pids above 1, and
lab ids of 6 hex digits (no path can be built from an id).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STATE_DIR = Path(os.environ.get("MPTCPKIT_STATE_DIR", "/run/mptcpkit/labs"))
NETNS_PREFIX = "mkl-"
NETNS_RUN_DIR = Path("/run/netns")
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
    """The record of `lab_id` (leniently read, see Rule 1), or None when there is no record file."""
    if not LAB_ID_RE.fullmatch(lab_id):
        return None
    path = STATE_DIR / f"{lab_id}.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        text = ""
    return _from_json(lab_id, text)


def find(lab_id: str) -> LabRecord | None:
    """`lab_id`'s record with every namespace of that lab found by name, or a bare one for orphan namespaces."""
    record = load(lab_id)
    on_disk = namespaces_on_disk(lab_id) if LAB_ID_RE.fullmatch(lab_id) else []
    if record is None:
        if not on_disk:
            return None
        record = LabRecord(lab_id=lab_id, backend="netns", topology="?", state="orphan")
    known = set(record.all_netns)
    for name in on_disk:
        if name not in known:
            record.namespaces[name] = name
    return record


def namespaces_on_disk(lab_id: str) -> list[str]:
    """Named network namespaces that belong to `lab_id` (mkl-<id>-<host>, mkl-<id>.wire)."""
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except OSError:
        return []
    return sorted(n for n in names if (m := OUR_NETNS_RE.match(n)) and m.group(1) == lab_id)


def _from_json(lab_id: str, text: str) -> LabRecord:
    """A record from whatever the file holds: unknown fields dropped, wrong types replaced by defaults."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return LabRecord(lab_id=lab_id, backend="netns", topology="?", state="corrupt")
    record = LabRecord(lab_id=lab_id, backend="netns", topology="?")
    types: dict[str, type | tuple[type, ...]] = {"backend": str, "topology": str, "created_at": (int, float)}
    types |= {"owner_pid": int, "state": str, "emulation": dict, "topology_file": str}
    types |= {"owner_start": str, "details": dict}  # VM labs: the supervisor's start time; kernel, consoles
    for f in fields(LabRecord):
        value = data.get(f.name)
        if f.name in types and isinstance(value, types[f.name]) and not isinstance(value, bool):
            setattr(record, f.name, value)
    prefix = f"{NETNS_PREFIX}{lab_id}"
    namespaces = data.get("namespaces")
    if isinstance(namespaces, dict):
        record.namespaces = {
            str(h): n for h, n in namespaces.items() if isinstance(n, str) and _ours(n, prefix)
        }
    wire = data.get("wire_netns")
    record.wire_netns = wire if isinstance(wire, str) and _ours(wire, prefix) else None
    hosts = data.get("hosts")
    if isinstance(hosts, list):
        record.hosts = [h for h in hosts if isinstance(h, str)]
    pids = data.get("pids")
    if isinstance(pids, list):
        record.pids = [p for p in pids if isinstance(p, int) and not isinstance(p, bool) and 1 < p <= 1 << 22]
    return record


def _ours(netns: str, prefix: str) -> bool:
    return netns.startswith((prefix + "-", prefix + ".")) and "/" not in netns and netns not in (".", "..")


def remove(lab_id: str) -> None:
    """Forget `lab_id`: its record and a half-written temporary record."""
    if not LAB_ID_RE.fullmatch(lab_id):
        return
    (STATE_DIR / f"{lab_id}.json").unlink(missing_ok=True)
    (STATE_DIR / f".{lab_id}.json.tmp").unlink(missing_ok=True)


def all_records() -> list[LabRecord]:
    """Every recorded lab, oldest first; also a lab whose only trace is a half-written temporary record."""
    if not STATE_DIR.is_dir():
        return []
    records = []
    seen = set()
    for path in STATE_DIR.glob("*.json"):
        record = load(path.stem)
        if record is not None:
            records.append(record)
            seen.add(record.lab_id)
    for path in STATE_DIR.glob(".*.json.tmp"):
        lab_id = path.name[1:].removesuffix(".json.tmp")
        if LAB_ID_RE.fullmatch(lab_id) and lab_id not in seen:
            records.append(
                LabRecord(lab_id=lab_id, backend="netns", topology="?", state="orphan", created_at=0.0)
            )
    return sorted(records, key=lambda r: r.created_at)

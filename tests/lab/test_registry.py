"""`lab down ID` always removes a lab's record, whatever state it is in (issue 15), and nothing that is not the lab's.

Each test uses its own state directory (MPTCPKIT_STATE_DIR) and a fresh lab id, and never runs `lab down --all`
(that would remove other people's labs on a shared machine).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mptcpkit.lab import registry
from mptcpkit.lab.backends import nsutil


def _down(state_dir: Path, lab_id: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPTCPKIT_STATE_DIR": str(state_dir)}
    return subprocess.run(
        [sys.executable, "-m", "mptcpkit", "lab", "down", lab_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture
def lab_id() -> Iterator[str]:
    lab_id = secrets.token_hex(3)
    yield lab_id
    for name in registry.namespaces_on_disk(lab_id):
        nsutil.delete_netns(name)


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe binary",
        b"[1, 2, 3]",
        b'{"lab_id": "x", "namespaces": ["a"], "pids": ["1"], "state": 5, "future_field": true}',
        b'{"namespaces": {"h": 17}, "wire_netns": {"x": 1}, "created_at": "yesterday"}',
        b"",
        '{"namespaces": {"cl\u00efent": "mkl-LABID-cl\u00efent"}, "state": "building"}'.encode(),
    ],
)
@pytest.mark.needs_root
def test_down_removes_any_record_and_its_namespaces(tmp_path: Path, lab_id: str, content: bytes) -> None:
    from pyroute2 import netns

    (tmp_path / f"{lab_id}.json").write_bytes(content.replace(b"LABID", lab_id.encode()))
    ns = f"mkl-{lab_id}-h"
    netns.create(ns)
    status = subprocess.run(
        [sys.executable, "-m", "mptcpkit", "lab", "status", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "MPTCPKIT_STATE_DIR": str(tmp_path)},
        timeout=60,
    )
    assert status.returncode == 0 and lab_id in status.stdout, status.stderr
    proc = _down(tmp_path, lab_id)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / f"{lab_id}.json").exists()
    assert nsutil.netns_inode(ns) is None


@pytest.mark.needs_root
def test_down_removes_orphan_namespaces_without_record(tmp_path: Path, lab_id: str) -> None:
    from pyroute2 import netns

    netns.create(f"mkl-{lab_id}.wire")
    proc = _down(tmp_path, lab_id)
    assert proc.returncode == 0, proc.stderr
    assert registry.namespaces_on_disk(lab_id) == []


@pytest.mark.needs_root
def test_record_cannot_name_foreign_namespaces_or_paths(tmp_path: Path, lab_id: str) -> None:
    from pyroute2 import netns

    victim = f"zzvictim{lab_id}"
    netns.create(victim)
    try:
        record = {
            "lab_id": lab_id,
            "namespaces": {"h": victim, "g": "../../etc"},
            "wire_netns": "/run/x",
            "pids": [1, 0],
        }
        (tmp_path / f"{lab_id}.json").write_text(json.dumps(record))
        proc = _down(tmp_path, lab_id)
        assert proc.returncode == 0, proc.stderr
        assert nsutil.netns_inode(victim) is not None  # not the lab's: left alone
        assert not (tmp_path / f"{lab_id}.json").exists()
    finally:
        nsutil.delete_netns(victim)


def test_lab_ids_are_never_paths(tmp_path: Path) -> None:
    outside = tmp_path / "keep.json"
    outside.write_text("{}")
    state = tmp_path / "state"
    state.mkdir()
    proc = _down(state, "../keep")
    assert proc.returncode == 2 and "is not a lab id" in proc.stderr
    assert outside.exists()
    assert registry.load("../keep") is None


def test_all_records_lists_corrupt_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lab down --all` removes what `all_records` lists: corrupt records must be listed too."""
    monkeypatch.setattr(registry, "STATE_DIR", tmp_path)
    (tmp_path / "abcdef.json").write_text("{oops")
    (tmp_path / "123456.json").write_text(json.dumps({"state": "up", "created_at": 1.0}))
    records = {r.lab_id: r for r in registry.all_records()}
    assert records["abcdef"].state == "corrupt"
    assert records["123456"].state == "up"
    (tmp_path / ".fedcba.json.tmp").write_text("{half")
    records = {r.lab_id: r for r in registry.all_records()}
    assert records["fedcba"].state == "orphan"
    for lab_id in ("abcdef", "fedcba"):
        registry.remove(lab_id)
    assert not (tmp_path / "abcdef.json").exists() and not (tmp_path / ".fedcba.json.tmp").exists()


@pytest.mark.parametrize(
    "content",
    [b"{broken", b"[1, 2]", b'{"backend": "vm", "topology": "t", "owner_pid": 4194303, "owner_start": "1"}'],
)
@pytest.mark.needs_root
def test_down_removes_unreadable_or_stale_vm_lab_record(tmp_path: Path, lab_id: str, content: bytes) -> None:
    """VM labs live in the one registry: an unreadable record, or one whose supervisor is gone, goes too."""
    path = tmp_path / f"{lab_id}.json"
    path.write_bytes(content)
    proc = _down(tmp_path, lab_id)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and not path.exists()

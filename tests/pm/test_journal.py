"""`--log journal` speaks journald's native protocol (through systemd-python), not stderr lines.

No journald runs here, so the test is the journal: a private mount namespace puts the test's own datagram
socket at /run/systemd/journal/socket, and the daemon's records are read from it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.needs_root


def test_log_journal_sends_native_records(pm_ns: str, tmp_path: Path, conf_file: Path) -> None:
    pytest.importorskip("systemd.journal")
    jdir = tmp_path / "journal"
    jdir.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(jdir / "socket"))
    sock.settimeout(10)
    state = tmp_path / "state.json"
    script = (
        "mount -t tmpfs none /run && mkdir -p /run/systemd/journal && "
        f"mount --bind {jdir} /run/systemd/journal && "
        f"exec {sys.executable} -m mptcpkit pm -c {conf_file} --log journal --state-file {state}"
    )
    proc = subprocess.Popen(
        [
            "nsenter",
            f"--net=/run/netns/{pm_ns}",
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    records: list[dict[str, str]] = []
    try:
        while not any("running" in r.get("MESSAGE", "") for r in records):
            data = sock.recv(1 << 16).decode()
            records.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        sock.close()
    running = next(r for r in records if "running" in r["MESSAGE"])
    assert running["PRIORITY"] == "6" and running["SYSLOG_IDENTIFIER"] == "mptcpkit-pm"
    assert "mptcpkit pm running" not in err.decode()  # nothing went to stderr instead

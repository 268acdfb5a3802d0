"""`mptcpkit enable/disable` on a real unit directory: drop-in only, Environment= lines kept, exact undo.

systemd is not PID 1 in CI containers: the unit directory is a temporary one (--unit-dir) and the
daemon-reload is skipped with a logged note; the service's effective environment is computed the way systemd
does (unit, then drop-ins) and the service command is run with it to prove the drop-in makes it use MPTCP.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tl_helpers import MPTCPKIT

from mptcpkit.tools import systemd

PROTO = "import socket; print(socket.socket().getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))"
UNIT = f"""[Unit]
Description=mkt-tl demo service

[Service]
Environment=FOO=1 "BAR=two words"
Environment=GODEBUG=http2client=0
ExecStart={sys.executable} -c "{PROTO}"
"""


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in root.rglob("*")}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MPTCPKIT, *args], capture_output=True, text=True, timeout=30, check=False)


def effective_env(unit_dir: Path, name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for text in systemd.unit_texts(name, unit_dir):
        env.update(systemd.parse_environment(text))
    own = unit_dir / f"{name}.d" / systemd.DROPIN_NAME
    if own.exists():
        env.update(systemd.parse_environment(own.read_text()))
    return env


def run_service(unit_dir: Path, name: str) -> str:
    """Run ExecStart with the environment systemd would give it."""
    exec_start = next(
        line for line in (unit_dir / name).read_text().splitlines() if line.startswith("ExecStart=")
    )
    env = {**os.environ, **effective_env(unit_dir, name)}
    res = subprocess.run(
        shlex.split(exec_start.removeprefix("ExecStart=")),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return res.stdout.strip()


def test_enable_then_disable_round_trip(tmp_path: Path) -> None:
    unit = tmp_path / "mkt-tl-demo.service"
    unit.write_text(UNIT)
    before = snapshot(tmp_path)
    assert run_service(tmp_path, unit.name) == "6"

    res = cli("enable", "mkt-tl-demo", "--unit-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "skipped `systemctl daemon-reload`" in res.stdout or "daemon-reload: done" in res.stdout
    assert unit.read_text() == UNIT  # the unit itself is never rewritten
    env = effective_env(tmp_path, unit.name)
    assert env["FOO"] == "1" and env["BAR"] == "two words"  # existing Environment= lines still apply
    assert env["GODEBUG"] == "http2client=0,multipathtcp=1"
    assert Path(env["LD_PRELOAD"]).is_file()
    assert run_service(tmp_path, unit.name) == "262"  # the service now creates MPTCP sockets

    again = cli("enable", "mkt-tl-demo.service", "--unit-dir", str(tmp_path))  # idempotent
    assert again.returncode == 0
    res = cli("disable", "mkt-tl-demo", "--unit-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert snapshot(tmp_path) == before  # exactly what enable added is gone, nothing else
    assert run_service(tmp_path, unit.name) == "6"


def test_disable_keeps_foreign_dropins_and_directory(tmp_path: Path) -> None:
    (tmp_path / "mkt-tl-web.service").write_text(UNIT)
    ddir = tmp_path / "mkt-tl-web.service.d"
    ddir.mkdir()
    (ddir / "10-admin.conf").write_text('[Service]\nEnvironment="LD_PRELOAD=/usr/lib/libtcmalloc.so"\n')
    before = snapshot(tmp_path)
    assert cli("enable", "mkt-tl-web", "--unit-dir", str(tmp_path)).returncode == 0
    env = effective_env(tmp_path, "mkt-tl-web.service")
    assert env["LD_PRELOAD"].startswith("/usr/lib/libtcmalloc.so:")  # the admin's preload survives
    assert cli("disable", "mkt-tl-web", "--unit-dir", str(tmp_path)).returncode == 0
    assert snapshot(tmp_path) == before


def test_errors_are_clear(tmp_path: Path) -> None:
    res = cli("enable", "mkt-tl-missing", "--unit-dir", str(tmp_path))
    assert res.returncode == 2 and "not found" in res.stderr and "Traceback" not in res.stderr
    res = cli("disable", "mkt-tl-missing", "--unit-dir", str(tmp_path))
    assert res.returncode == 0 and "was not enabled" in res.stdout

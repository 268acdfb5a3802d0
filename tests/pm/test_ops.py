"""Operations: CAP_NET_ADMIN is the only privilege the daemon needs; the systemd unit says so."""

from __future__ import annotations

import configparser
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import addrs, wait_for

UNIT = Path(__file__).resolve().parents[2] / "src" / "mptcpkit" / "pm" / "mptcpkit-pm.service"


def test_unit_file_grants_only_cap_net_admin() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    svc = unit["Service"]
    assert svc["CapabilityBoundingSet"] == "CAP_NET_ADMIN"
    assert svc["AmbientCapabilities"] == "CAP_NET_ADMIN"
    assert svc["DynamicUser"] == "yes"
    assert " pm " in svc["ExecStart"] and "--log=journal" in svc["ExecStart"]
    assert unit["Unit"]["Conflicts"] == "mptcp.service"


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="mkt-pm-ops-"))
    d.chmod(0o755)
    (d / "state").mkdir(mode=0o777)
    (d / "state").chmod(0o777)
    conf = d / "mptcpd.conf"
    conf.write_text("[core]\n")
    conf.chmod(0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.needs_root
def test_runs_as_nobody_with_only_cap_net_admin(pm_ns: str, world_dir: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing")
    log = world_dir / "log"
    argv = [
        "ip",
        "netns",
        "exec",
        pm_ns,
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=+net_admin",
        "--ambient-caps=+net_admin",
        "--bounding-set=-all,+net_admin",
        sys.executable,
        "-m",
        "mptcpkit.pm",
        "-c",
        str(world_dir / "mptcpd.conf"),
        "--state-file",
        str(world_dir / "state" / "pm.json"),
        "--addr-flags=subflow",
        "--notify-flags=existing,skip_link_local",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: addrs(pm_ns) == {"10.1.0.1"} or proc.poll() is not None, 20, "endpoint as nobody")
        assert proc.poll() is None, log.read_text()
        status = (Path("/proc") / str(proc.pid) / "status").read_text()
        assert "Uid:\t65534" in status
        cap_eff = int(next(ln for ln in status.splitlines() if ln.startswith("CapEff:")).split()[1], 16)
        assert cap_eff == 1 << 12  # CAP_NET_ADMIN only
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, log.read_text()
        assert addrs(pm_ns) == set(), "cleaned up without root"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

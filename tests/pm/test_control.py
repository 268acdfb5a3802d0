"""The control API on a real D-Bus (a dbus-daemon the test starts): list, events with filters, commands,
and refusal of callers that are neither root nor in the control group."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mptcpkit.mptcp_socket import mptcp_info

from .conftest import Daemon, mptcp_connect, mptcp_listener, wait_for
from .test_sspi import two_paths  # noqa: F401 - fixture

pytestmark = pytest.mark.needs_root
BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def bus() -> Iterator[str]:
    """A private dbus-daemon that any local user may connect to (the daemon itself must refuse them)."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon not installed")
    d = Path(tempfile.mkdtemp(prefix="mkt-bus-"))
    d.chmod(0o755)
    conf = d / "bus.conf"
    conf.write_text(BUS_CONF.format(path=d / "socket"))
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    (d / "socket").chmod(0o777)
    try:
        yield address
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(d, ignore_errors=True)


def pm(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "mptcpkit", "pm", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env={**os.environ, "HOME": "/"})


def test_control_api(two_paths: tuple[str, str], run_pm: Callable[..., Daemon], bus: str) -> None:  # noqa: F811
    cli, srv = two_paths
    d = run_pm(cli, "--path-manager=sspi", "--load-plugins=sspi", f"--control={bus}")
    follow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mptcpkit",
            "pm",
            "events",
            "--bus",
            bus,
            "--netns",
            cli,
            "--type",
            "established",
            "--count",
            "1",
            "--timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follow.stderr is not None
    assert "following events" in follow.stderr.readline()
    with mptcp_listener(srv, "0.0.0.0", 9310):
        c = mptcp_connect(cli, "10.10.1.2", 9310, b"x")
        try:
            check_control(d, bus, cli, c, follow)
        finally:
            c.close()
            follow.kill()


def check_control(d: Daemon, bus: str, cli: str, c: socket.socket, follow: subprocess.Popen[str]) -> None:
    """What the control API does with one real connection."""
    info = mptcp_info(c)
    assert info is not None
    token = info.token
    out, err = follow.communicate(timeout=30)
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 1, (out, err, d.output())
    (event,) = events
    assert event["type"] == "established" and event["token"] == token, (out, err)

    def listed() -> list[dict[str, object]]:
        r = pm("connections", "--bus", bus, "--netns", cli, "--json")
        assert r.returncode == 0, r.stderr
        return list(json.loads(r.stdout))

    wait_for(lambda: any(x["token"] == token for x in listed()), 5, "connection listed")
    # a command: mark the initial subflow backup (MP_PRIO), through the daemon's handle
    lport = c.getsockname()[1]
    r = pm(
        "set-backup",
        f"{token:x}",
        "10.10.1.1",
        str(lport),
        "10.10.1.2",
        "9310",
        "--bus",
        bus,
        "--netns",
        cli,
    )
    assert r.returncode == 0, r.stderr + d.output()
    bad = pm("set-backup", f"{token:x}", "10.10.9.9", "1", "10.10.1.2", "9310", "--bus", bus, "--netns", cli)
    assert bad.returncode == 2 and "SetBackup" in bad.stderr and "Traceback" not in bad.stderr
    # nobody (uid 65534) reaches the bus but not the daemon
    denied = pm("connections", "--bus", bus, "--netns", cli, user=65534)
    assert denied.returncode == 2 and "not root nor in the control group" in denied.stderr, denied.stderr
    assert d.alive()

"""mptcpize parity of `enable`/`disable`: a unit file path, template units, `help`.

systemd is not PID 1 on this machine (nor in CI containers), so `systemctl show` cannot answer here. The
offline lookup (used when systemd is not running) is tested for real on unit directories. The systemd
lookup is tested with a stand-in `systemctl` (MPTCPKIT_SYSTEMCTL) that records how it is asked and answers
like systemd 252 does for a template instance; only `systemd_running()` is patched for that test.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tl_helpers import MPTCPKIT

from mptcpkit.tools import systemd

PROTO = "import socket; print(socket.socket().getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))"
TEMPLATE = f"""[Unit]
Description=mkt-tl templated %i

[Service]
Environment="LD_PRELOAD=/usr/lib/libfirst.so"
ExecStart={sys.executable} -c "{PROTO}"
"""


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MPTCPKIT, *args], capture_output=True, text=True, timeout=30, check=False, env=env)


def dropin_env(path: Path) -> dict[str, str]:
    return systemd.parse_environment(path.read_text())


def test_enable_given_a_unit_file_path(tmp_path: Path) -> None:
    units, elsewhere = tmp_path / "units", tmp_path / "srv"
    units.mkdir()
    elsewhere.mkdir()
    unit = elsewhere / "mkt-tl-path.service"
    unit.write_text(TEMPLATE.replace("%i", ""))
    res = cli("enable", str(unit), "--unit-dir", str(units))
    assert res.returncode == 0, res.stderr
    assert f"unit file: {unit} (unit file given)" in res.stdout
    dropin = units / "mkt-tl-path.service.d" / systemd.DROPIN_NAME
    env = dropin_env(dropin)
    assert env["LD_PRELOAD"].startswith("/usr/lib/libfirst.so:")  # composed from the given file
    assert unit.read_text() == TEMPLATE.replace("%i", "")  # never rewritten (mptcpize rewrites it)
    res = cli("disable", str(unit), "--unit-dir", str(units))
    assert res.returncode == 0 and not (units / "mkt-tl-path.service.d").exists()


def test_template_instance_found_offline_and_composed_with_template_dropins(tmp_path: Path) -> None:
    (tmp_path / "mkt-tl-t@.service").write_text(TEMPLATE)
    tdir = tmp_path / "mkt-tl-t@.service.d"
    tdir.mkdir()
    (tdir / "10-admin.conf").write_text('[Service]\nEnvironment="GODEBUG=madvdontneed=1"\n')
    res = cli("enable", "mkt-tl-t@eth1", "--unit-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert f"unit file: {tmp_path / 'mkt-tl-t@.service'}" in res.stdout
    env = dropin_env(tmp_path / "mkt-tl-t@eth1.service.d" / systemd.DROPIN_NAME)
    assert env["LD_PRELOAD"].startswith("/usr/lib/libfirst.so:")
    assert env["GODEBUG"] == "madvdontneed=1,multipathtcp=1"  # the template's drop-in applies too
    # the whole template: a drop-in every instance gets
    assert cli("enable", "mkt-tl-t@.service", "--unit-dir", str(tmp_path)).returncode == 0
    assert (tmp_path / "mkt-tl-t@.service.d" / systemd.DROPIN_NAME).is_file()
    for unit in ("mkt-tl-t@eth1", "mkt-tl-t@.service"):
        assert cli("disable", unit, "--unit-dir", str(tmp_path)).returncode == 0
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "10-admin.conf",
        "mkt-tl-t@.service",
        "mkt-tl-t@.service.d",
    ]


def test_the_service_then_uses_mptcp(tmp_path: Path) -> None:
    """Run the template's ExecStart with the environment of the instance: 262 = IPPROTO_MPTCP."""
    (tmp_path / "mkt-tl-t@.service").write_text(TEMPLATE.replace("libfirst.so", "libnothere.so"))
    assert cli("enable", "mkt-tl-t@x.service", "--unit-dir", str(tmp_path)).returncode == 0
    env = dict(os.environ)
    for text in systemd.unit_texts("mkt-tl-t@x.service", tmp_path):
        env.update(systemd.parse_environment(text))
    env.update(dropin_env(tmp_path / "mkt-tl-t@x.service.d" / systemd.DROPIN_NAME))
    out = subprocess.run([sys.executable, "-c", PROTO], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "262"


FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  "show -P FragmentPath -- mkt-tl-sd@a.service") echo "{fragment}" ;;
  "show -P FragmentPath -- mkt-tl-none.service") echo "" ;;
  "daemon-reload") ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"""


def test_systemd_is_asked_where_the_unit_file_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vendor, admin = tmp_path / "vendor", tmp_path / "etc"
    vendor.mkdir()
    admin.mkdir()
    fragment = vendor / "mkt-tl-sd@.service"  # a name the offline search would never find
    fragment.write_text(TEMPLATE)
    log = tmp_path / "calls"
    fake = tmp_path / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(log=log, fragment=fragment))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("MPTCPKIT_SYSTEMCTL", str(fake))
    monkeypatch.setattr(systemd, "systemd_running", lambda: True)
    monkeypatch.setattr(systemd, "DEFAULT_UNIT_DIR", admin)
    msgs = systemd.enable("mkt-tl-sd@a", shim="/opt/shim.so")
    assert msgs[0] == f"unit file: {fragment} (systemctl show -P FragmentPath)"
    assert "systemctl daemon-reload: done" in msgs
    env = dropin_env(admin / "mkt-tl-sd@a.service.d" / systemd.DROPIN_NAME)
    assert env["LD_PRELOAD"] == "/usr/lib/libfirst.so:/opt/shim.so"
    assert log.read_text().splitlines() == ["show -P FragmentPath -- mkt-tl-sd@a.service", "daemon-reload"]
    with pytest.raises(systemd.UsageError, match=r"mkt-tl-none.service not found"):
        systemd.enable("mkt-tl-none", shim="/opt/shim.so")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enable", "/nonexistent/x.service"], "no such unit file"),
        (["enable", "mkt-tl.socket"], "not a service unit"),
        (["enable", "../etc/passwd"], "no such unit file"),
        (["enable", "-"], "not found"),
        (["enable", "/etc/hostname"], "not a service unit file"),
    ],
)
def test_bad_units_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    res = cli(*args, "--unit-dir", str(tmp_path))
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_help_like_mptcpize() -> None:
    res = cli("run", "help")
    assert res.returncode == 0 and "Usage: mptcpkit run" in res.stdout
    assert "mptcpkit run help" in res.stdout
    res = cli("help")
    assert res.returncode == 0 and "Usage: mptcpkit [OPTIONS] COMMAND" in res.stdout
    for words in (["pm"], ["check", "serve"], ["enable"], ["lab", "run"]):
        res = cli("help", *words)
        assert res.returncode == 0 and f"Usage: mptcpkit {' '.join(words)}" in res.stdout, res.stdout
    res = cli("help", "nope")
    assert res.returncode == 2 and "no command 'nope'" in res.stderr
    res = cli("run")
    assert res.returncode == 2 and "Usage: mptcpkit run" in res.stdout

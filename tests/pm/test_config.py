"""mptcpd.conf compatibility: keys, flags, precedence, refusals."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.netlink import EndpointFlags
from mptcpkit.pm.config import NotifyFlags, load, require_mptcp_enabled

from .conftest import Daemon


def write(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    p = tmp_path / "mptcpd.conf"
    p.write_text(text)
    p.chmod(mode)
    return p


def test_file_keys_and_command_line_override(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        "# mptcpd.conf\n[core]\nlog=journal\nplugin-dir=/nonexistent\npath-manager=addr_adv\n"
        "addr-flags=subflow,backup\nnotify-flags=existing,skip_link_local\nload-plugins=addr_adv,sspi\n",
    )
    cfg = load(conf, {})
    assert cfg.log == "journal" and cfg.path_manager == "addr_adv"
    assert cfg.addr_flags == EndpointFlags.SUBFLOW | EndpointFlags.BACKUP
    assert cfg.notify_flags == NotifyFlags.EXISTING | NotifyFlags.SKIP_LINK_LOCAL
    assert cfg.load_plugins == ("addr_adv", "sspi")
    cfg = load(
        conf, {"path-manager": "sspi", "addr-flags": "signal", "notify-flags": "check_route", "log": None}
    )
    assert cfg.path_manager == "sspi" and cfg.addr_flags == EndpointFlags.SIGNAL
    assert cfg.notify_flags == NotifyFlags.CHECK_ROUTE and cfg.log == "journal"


def test_debian_default_config_parses() -> None:
    debian = Path("/etc/mptcpd/mptcpd.conf")
    if not debian.exists():
        pytest.skip("mptcpd not installed")
    cfg = load(debian, {})
    assert cfg.path_manager == "addr_adv"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[core]\naddr-flags=signal,fullmesh\n", "cannot be combined"),
        ("[core]\naddr-flags=bogus\n", "unknown flag 'bogus'"),
        ("[core]\nnotify-flags=existing,nope\n", "unknown flag 'nope'"),
        ("[core]\nlog=file\n", "not one of"),
        ("not an ini file", "cannot parse"),
    ],
)
def test_bad_values_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        load(write(tmp_path, text), {})
    assert "mptcpd.conf" in str(info.value) or "cannot parse" in str(info.value)


def test_world_writable_config_refused(tmp_path: Path) -> None:
    conf = write(tmp_path, "[core]\n", 0o666)
    with pytest.raises(UsageError, match="world-writable"):
        load(conf, {})


@pytest.mark.needs_root
def test_daemon_refuses_world_writable_config(
    pm_ns: str, run_pm: Callable[..., Daemon], tmp_path: Path
) -> None:
    conf = write(tmp_path, "[core]\n", 0o666)
    d = run_pm(pm_ns, conf=conf, ready=False)
    assert d.proc.wait(15) == 2
    out = d.output()
    assert "world-writable" in out and "chmod o-w" in out and "Traceback" not in out


@pytest.mark.needs_root
def test_refuses_to_start_with_mptcp_disabled(
    make_netns: Callable[[str], str], run_pm: Callable[..., Daemon]
) -> None:
    ns = make_netns("off")
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.mptcp.enabled=0"], check=True)
    with pytest.raises(EnvironmentProblem, match=r"net\.mptcp\.enabled"):
        require_mptcp_enabled(ns)
    d = run_pm(ns, ready=False)
    assert d.proc.wait(15) == 2
    assert "sysctl -w net.mptcp.enabled=1" in d.output()


def test_cli_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mptcpkit", "pm", "-V"], capture_output=True, text=True, check=True
    )
    assert "mptcpd 0.13 compatible" in out.stdout

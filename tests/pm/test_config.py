"""mptcpd.conf compatibility: keys, flags, precedence, refusals."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.netlink import EndpointFlags
from mptcpkit.pm.config import DEFAULT_PLUGIN_DIR, NotifyFlags, load, require_mptcp_enabled

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
    ("text", "warning", "check"),
    [
        ("[core]\naddr-flags=bogus,subflow\n", ":2: addr-flags: unknown flag 'bogus'", "addr_flags"),
        ("[core]\nnotify-flags=existing,nope\n", ":2: notify-flags: unknown flag 'nope'", "notify_flags"),
        ("[core]\n\nlog=file\n", ":3: log: 'file' is not one of", "log"),
        ("[core]\nfrobnicate=1\n", ":2: frobnicate: unknown key ignored", None),
        ("not an ini file\n", ":1: not a key=value line", None),
        ("x=1\n[core]\n", ":1: key 'x' outside [core]", None),
        ("[other]\nlog=stderr\n", ":1: group [other] ignored", None),
    ],
)
def test_unknown_values_warn_and_fall_back_like_mptcpd(
    tmp_path: Path, text: str, warning: str, check: str | None
) -> None:
    """mptcpd warns and goes on; so do we, naming file:line (check-config turns these into errors)."""
    cfg = load(write(tmp_path, text), {})
    assert any(warning in w and "mptcpd.conf" in w for w in cfg.warnings), cfg.warnings
    if check == "addr_flags":
        assert cfg.addr_flags == EndpointFlags.SUBFLOW  # the known flag is kept
    elif check == "notify_flags":
        assert cfg.notify_flags == NotifyFlags.EXISTING
    elif check == "log":
        assert cfg.log == "stderr"


def test_command_line_errors_are_refused_like_mptcpd_argp(tmp_path: Path) -> None:
    conf = write(tmp_path, "[core]\n")
    with pytest.raises(UsageError, match="not one of"):
        load(conf, {"log": "file"})
    for key in ("plugin-dir", "path-manager", "load-plugins"):
        with pytest.raises(UsageError, match="needs a value"):
            load(conf, {key: ""})


def test_signal_with_fullmesh_is_refused(tmp_path: Path) -> None:
    """Deliberate difference: mptcpd accepts it and then every endpoint add fails in the kernel."""
    with pytest.raises(UsageError, match="cannot be combined"):
        load(write(tmp_path, "[core]\naddr-flags=signal,fullmesh\n"), {})


def test_empty_plugin_dir_means_the_default_never_the_cwd(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "[core]\nplugin-dir=\n"), {})
    assert cfg.plugin_dir == DEFAULT_PLUGIN_DIR and not cfg.plugin_dir_explicit


def test_missing_plugin_dir_warns(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, f"[core]\nplugin-dir={tmp_path}/nope\n"), {})
    assert any("does not exist" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    ("data", "match"),
    [(b"[core]\nlog=\xff\n", "not UTF-8"), (b"[core]\x00\n", "NUL"), (b"#" * (2 << 20), "larger than")],
)
def test_unreadable_files_are_one_clear_error(tmp_path: Path, data: bytes, match: str) -> None:
    p = tmp_path / "mptcpd.conf"
    p.write_bytes(data)
    with pytest.raises(UsageError, match=match):
        load(p, {})


def test_interface_globs_and_per_interface_flags(tmp_path: Path) -> None:
    cfg = load(
        write(
            tmp_path,
            "[core]\naddr-flags=subflow\ndeny-interfaces=docker* veth*\n"
            "interface-flags=wlan*=subflow+backup eth0=signal\naddress-flags=10.9.0.0/16=subflow+fullmesh\n",
        ),
        {},
    )
    assert cfg.warnings == ()
    assert not cfg.interface_allowed("docker0") and not cfg.interface_allowed("veth12")
    assert cfg.interface_allowed("eth0")
    assert cfg.flags_for("wlan0", "192.168.1.2") == EndpointFlags.SUBFLOW | EndpointFlags.BACKUP
    assert cfg.flags_for("eth0", "192.168.1.2") == EndpointFlags.SIGNAL
    assert cfg.flags_for("eth0", "10.9.1.1") == EndpointFlags.SUBFLOW | EndpointFlags.FULLMESH
    assert cfg.flags_for("eth1", "192.168.1.2") == EndpointFlags.SUBFLOW


def test_check_config_is_strict(tmp_path: Path) -> None:
    def run(conf: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mptcpkit", "pm", "-c", str(conf), "check-config"],
            capture_output=True,
            text=True,
        )

    bad = run(write(tmp_path, "[core]\naddr-flags=subflow,bogus\nfrob=1\npath-manager=nope\n"))
    assert bad.returncode == 2, bad.stderr
    assert "unknown flag 'bogus'" in bad.stderr and "frob" in bad.stderr and "'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr
    good = run(write(tmp_path, "[core]\naddr-flags=subflow\npath-manager=addr_adv\n"))
    assert good.returncode == 0, good.stderr
    assert "configuration ok" in good.stdout


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

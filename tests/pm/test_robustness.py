"""What an operator replacing mptcpd hits on day one: endpoints already there, lost events, mptcpd's CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mptcpkit.mptcp_socket import mptcp_info
from mptcpkit.netlink import MptcpPmClient

from .conftest import Daemon, ip, mptcp_connect, mptcp_listener, table, wait_for


@pytest.mark.needs_root
def test_ids_of_endpoints_present_at_start_are_not_reused(pm_ns: str, run_pm: Callable[..., Daemon]) -> None:
    """mptcpd 0.13 syncs its id manager with the kernel; without it the first address gets id 1, which the
    kernel refuses (EBUSY) and the address never becomes an endpoint."""
    with MptcpPmClient(netns=pm_ns) as pm:
        pm.add_endpoint("10.99.0.1", id=1, flags="signal")  # someone else's endpoint, on no interface
    run_pm(pm_ns, "--addr-flags=subflow")
    ip(pm_ns, "addr", "add", "10.1.1.1/24", "dev", "v1")
    wait_for(lambda: ("10.1.1.1", 2, ("subflow",)) in table(pm_ns), 5, "endpoint with the next free id")
    assert ("10.99.0.1", 1, ("signal",)) in table(pm_ns)


@pytest.mark.needs_root
def test_connection_list_rebuilt_after_event_overrun(pm_ns: str, run_pm: Callable[..., Daemon]) -> None:
    d = run_pm(pm_ns, env={"MPTCPKIT_PM_EVENT_RCVBUF": "2048"})
    with mptcp_listener(pm_ns, "127.0.0.1", 9400):
        d.proc.send_signal(signal.SIGSTOP)  # the daemon does not read: the kernel drops events
        try:
            for s in [mptcp_connect(pm_ns, "127.0.0.1", 9400) for _ in range(30)]:
                s.close()
            kept = [mptcp_connect(pm_ns, "127.0.0.1", 9400) for _ in range(3)]
            time.sleep(0.3)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        try:
            tokens = {i.token for s in kept if (i := mptcp_info(s)) is not None}
            assert len(tokens) == 3

            def state() -> dict[str, Any]:
                return dict(json.loads(d.state_file.read_text()))

            wait_for(lambda: state()["events"].get("lost", 0) >= 1, 5, "an overrun")
            wait_for(lambda: tokens <= {c["token"] for c in state()["connections"]}, 5, "connections listed")
            assert "rebuilding the connection list" in d.output() and d.alive()
        finally:
            for s in kept:
                s.close()


def pm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mptcpkit", "pm", *args], capture_output=True, text=True)


@pytest.mark.parametrize("flag", ["-?", "-h", "--help"])
def test_help_flags_like_mptcpd(flag: str) -> None:
    out = pm(flag)
    assert out.returncode == 0 and "--path-manager" in out.stdout and "check-config" in out.stdout


def test_usage_prints_one_usage_line() -> None:
    out = pm("--usage")
    assert out.returncode == 0 and out.stdout.lower().startswith("usage:") and len(out.stdout) < 2000


def test_bad_flags_are_one_line_exit_2() -> None:
    out = pm("--log", "file")
    assert out.returncode == 2 and "not one of" in out.stderr and "Traceback" not in out.stderr
    out = pm("-c", str(Path(__file__).parent))
    assert out.returncode == 2 and "is a directory" in out.stderr


def test_lean_and_typer_daemon_flags_match() -> None:
    """The daemon's flags are declared twice (argparse for the lean entry, typer for --help/man pages)."""
    from typer.main import get_command

    from mptcpkit.pm.cli import app
    from mptcpkit.pm.daemon_args import make_parser

    lean = {o for a in make_parser()._actions for o in a.option_strings}
    typer_opts = {o for p in get_command(app).params for o in (*p.opts, *p.secondary_opts)}
    assert lean == typer_opts | {"-h", "--help", "-?"}


def test_daemon_run_path_imports_no_cli_libraries() -> None:
    code = (
        "import sys; sys.argv=['mptcpkit','pm','--version']; import mptcpkit.launch as l; l.main(); "
        "print(sorted(m for m in ('typer','click','rich','numpy','pyroute2','asyncio','importlib.metadata') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "['importlib.metadata']"  # --version reads the version only


@pytest.mark.needs_root
def test_interface_globs_and_per_interface_flags_in_a_real_daemon(
    pm_ns: str, run_pm: Callable[..., Daemon], tmp_path: Path
) -> None:
    ip(pm_ns, "link", "add", "veth9", "type", "veth", "peer", "name", "veth9p")
    for dev in ("veth9", "veth9p"):
        ip(pm_ns, "link", "set", dev, "up")
    conf = tmp_path / "globs.conf"
    conf.write_text(
        "[core]\naddr-flags=subflow\ndeny-interfaces=veth*\ninterface-flags=v1=subflow+backup\n"
        "address-flags=10.1.7.0/24=signal\n"
    )
    run_pm(pm_ns, conf=conf)
    ip(pm_ns, "addr", "add", "10.1.9.1/24", "dev", "veth9")
    ip(pm_ns, "addr", "add", "10.1.1.1/24", "dev", "v1")
    ip(pm_ns, "addr", "add", "10.1.7.1/24", "dev", "v1")
    ip(pm_ns, "addr", "add", "10.1.2.1/24", "dev", "v0")
    want = {
        ("10.1.1.1", ("subflow", "backup")),
        ("10.1.7.1", ("signal",)),
        ("10.1.2.1", ("subflow",)),
    }
    wait_for(lambda: want <= {(a, f) for a, _, f in table(pm_ns)}, 5, "per-interface flags")
    time.sleep(0.2)
    assert "10.1.9.1" not in {a for a, _, _ in table(pm_ns)}  # veth* denied


@pytest.mark.needs_root
def test_kernel_endpoint_with_a_port_gets_the_signal_flag(pm_ns: str) -> None:
    """mptcpd 0.13's kpm_add_addr takes a port; the kernel needs `signal` with it, so it is added."""
    import ipaddress

    from mptcpkit.pm.config import Config
    from mptcpkit.pm.handle import PathManager
    from mptcpkit.pm.netmon import NetworkMonitor
    from mptcpkit.pm.plugin import SockAddr

    with MptcpPmClient(netns=pm_ns) as client:
        handle = PathManager(client, Config(), NetworkMonitor(), pm_ns)
        ep = handle.kpm_add_addr(SockAddr(ipaddress.ip_address("10.1.0.1"), 10100), 5, 0)
        assert (ep.port, ep.flags.names()) == (10100, ["signal"])
        handle.cleanup()
        assert client.dump_endpoints() == []


def test_waits_for_the_mptcp_pm_family_and_stops_on_a_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The family is built into this kernel, so its absence (a module still loading) is simulated: the only
    stand-in in these tests, for a state the machine cannot reach."""
    from mptcpkit.netlink.errors import FamilyNotFound
    from mptcpkit.pm import daemon as daemon_mod
    from mptcpkit.pm.config import Config, mptcp_enabled_value

    if mptcp_enabled_value() != "1":
        pytest.skip("MPTCP disabled here")
    attempts: list[float] = []

    class LateFamily:
        def __init__(self, netns: str | None) -> None:
            attempts.append(time.monotonic())
            if len(attempts) < 3:
                raise FamilyNotFound("generic netlink family 'mptcp_pm' not found")

    monkeypatch.setattr(daemon_mod, "MptcpPmClient", LateFamily)
    d = daemon_mod.Daemon(Config())
    assert isinstance(d._connect(), LateFamily)
    assert len(attempts) == 3 and attempts[2] - attempts[0] >= 0.35  # polled every 0.2 s
    attempts.clear()
    d._wake_w.send(b"x")  # SIGTERM while waiting (what the signal wake-up fd does)
    monkeypatch.setattr(daemon_mod, "MptcpPmClient", lambda netns: (_ for _ in ()).throw(FamilyNotFound("x")))
    assert d._connect() is None


DENY_PLUGIN = """
import json, os
from mptcpkit.pm.plugin import Plugin

class Deny(Plugin):
    name = "deny"

    def connection_established(self, token, laddr, raddr, server_side, deny_join_id0=False):
        with open(os.environ["DENY_OUT"], "a") as f:
            f.write(json.dumps({"token": token, "deny_join_id0": deny_join_id0}) + "\\n")
"""


@pytest.mark.needs_root
def test_deny_join_id0_reaches_plugins(
    make_netns: Callable[[str], str], run_pm: Callable[..., Daemon], tmp_path: Path
) -> None:
    """The server sets RFC 8684's C bit (allow_join_initial_addr_port=0); the client's plugin sees it."""
    cli, srv = make_netns("djc"), make_netns("djs")
    subprocess.run(
        ["ip", "link", "add", "mktdj0", "netns", cli, "type", "veth", "peer", "mktdj1", "netns", srv],
        check=True,
    )
    ip(cli, "addr", "add", "10.20.0.1/24", "dev", "mktdj0")
    ip(srv, "addr", "add", "10.20.0.2/24", "dev", "mktdj1")
    ip(cli, "link", "set", "mktdj0", "up")
    ip(srv, "link", "set", "mktdj1", "up")
    subprocess.run(
        ["ip", "netns", "exec", srv, "sysctl", "-qw", "net.mptcp.allow_join_initial_addr_port=0"], check=True
    )
    pdir = tmp_path / "plugins"
    pdir.mkdir(mode=0o755)
    (pdir / "deny.py").write_text(DENY_PLUGIN)
    (pdir / "deny.py").chmod(0o644)
    out = tmp_path / "deny.jsonl"
    run_pm(
        cli, f"--plugin-dir={pdir}", "--path-manager=deny", "--load-plugins=deny", env={"DENY_OUT": str(out)}
    )
    with mptcp_listener(srv, "10.20.0.2", 9320):
        c = mptcp_connect(cli, "10.20.0.2", 9320, b"x")
        try:
            wait_for(lambda: out.exists() and out.read_text().strip() != "", 5, "connection_established")
            (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
            assert rec["deny_join_id0"] is True
        finally:
            c.close()

"""`mptcpkit pm monitor`, `pm status` and the Prometheus endpoint, as a user runs them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from mptcpkit.netlink import MptcpPmClient

from .conftest import Daemon, ip, wait_for
from .test_plugins import real_connection

pytestmark = pytest.mark.needs_root


def mptcpkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mptcpkit", *args], capture_output=True, text=True, timeout=60
    )


def start_monitor(*args: str) -> subprocess.Popen[str]:
    mon = subprocess.Popen(
        [sys.executable, "-m", "mptcpkit", "pm", "monitor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert mon.stderr is not None
    assert "monitoring mptcp_pm events" in mon.stderr.readline()  # subscribed
    return mon


def test_monitor_json_decodes_listener_events(pm_ns: str) -> None:
    mon = start_monitor("--json", "--netns", pm_ns, "--timeout", "4")
    try:
        real_connection(pm_ns)
        out, err = mon.communicate(timeout=20)
    finally:
        mon.kill()
    events = [json.loads(line) for line in out.splitlines()]
    types = {e["type"] for e in events}
    assert {
        "listener_created",
        "listener_closed",
        "created",
        "established",
        "announced",
        "removed",
        "sub_established",
        "sub_closed",
        "sub_priority",
        "closed",
    } <= types, (types, err)
    lc = [e for e in events if e["type"] == "listener_created"]
    assert {"saddr": "127.0.0.1", "sport": 9200, "family": 2, "type": "listener_created"} in lc


def test_monitor_text(pm_ns: str) -> None:
    mon = start_monitor("--netns", pm_ns, "--timeout", "2")
    with MptcpPmClient(netns=pm_ns) as pm:
        pm.add_endpoint("10.1.0.1", flags="signal", port=10010)
        pm.flush_endpoints()
    out, _ = mon.communicate(timeout=20)
    assert "[LISTENER_CREATED] family=2 saddr=10.1.0.1 sport=10010" in out
    assert "[ LISTENER_CLOSED]" in out


def test_status_and_metrics(pm_ns: str, run_pm: Callable[..., Daemon]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = run_pm(
        pm_ns, "--addr-flags=subflow", "--notify-flags=existing,skip_link_local", f"--metrics-port={port}"
    )
    ip(pm_ns, "addr", "add", "10.2.0.1/24", "dev", "v1")
    real_connection(pm_ns, signal_addr="127.0.0.3")
    res = mptcpkit("pm", "status", "--json", "--netns", pm_ns, "--state-file", str(d.state_file))
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert st["running"] and st["plugins"][0]["name"] == "addr_adv"
    wait_for(
        lambda: (
            {"10.1.0.1", "10.2.0.1"}
            <= {
                a["addr"]
                for a in json.loads(
                    mptcpkit(
                        "pm", "status", "--json", "--netns", pm_ns, "--state-file", str(d.state_file)
                    ).stdout
                )["addresses"]
            }
        ),
        what="addresses in status",
    )
    st = json.loads(
        mptcpkit("pm", "status", "--json", "--netns", pm_ns, "--state-file", str(d.state_file)).stdout
    )
    assert st["events"].get("created") == 2
    text = mptcpkit("pm", "status", "--netns", pm_ns, "--state-file", str(d.state_file))
    assert text.returncode == 0 and "kernel endpoints" in text.stdout and "addr_adv (default)" in text.stdout
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'mptcpkit_pm_events_total{type="created"} 2.0' in metrics
    assert "mptcpkit_pm_endpoints 2.0" in metrics
    d.stop()
    res = mptcpkit("pm", "status", "--netns", pm_ns, "--state-file", str(d.state_file))
    assert res.returncode == 2 and "no mptcpkit pm running" in res.stderr

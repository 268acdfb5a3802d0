"""Plugins in a real daemon: the documented example receives every event of a real MPTCP connection."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mptcpkit.mptcp_socket import IPPROTO_MPTCP
from mptcpkit.netlink import MptcpPmClient
from mptcpkit.netlink.socket import run_in_netns

from .conftest import Daemon, wait_for

pytestmark = pytest.mark.needs_root
DOC = Path(__file__).resolve().parents[2] / "docs" / "pm-plugins.md"


def example_plugin_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    (src,) = [str(b) for b in blocks if "class EventLogPlugin" in b]
    return src


def records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def real_connection(ns: str, signal_addr: str = "10.1.0.1") -> None:
    """One MPTCP connection over loopback with an announced address, an extra subflow, a priority change
    and an address removal: every kind of mptcp_pm event."""
    with MptcpPmClient(netns=ns) as pm:
        pm.set_limits(subflows=4, add_addr_accepted=4)
        pm.add_endpoint(signal_addr, id=20, flags="signal", port=10002)  # a PM listener: listener_created
        pm.add_endpoint("127.0.0.2", id=21, flags="subflow")
        ready = threading.Event()

        def server() -> None:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 9200))
            s.listen()
            ready.set()
            conn, _ = s.accept()
            conn.recv(10)
            time.sleep(0.8)
            conn.close()
            s.close()

        t = threading.Thread(target=run_in_netns, args=(ns, server))
        t.start()
        assert ready.wait(5)

        def client() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
            s.connect(("127.0.0.1", 9200))
            s.send(b"hello")
            return s

        c = run_in_netns(ns, client)
        time.sleep(0.4)
        pm.set_flags(id=21, flags="backup")
        time.sleep(0.1)
        pm.del_endpoint(20)
        time.sleep(0.2)
        c.close()
        t.join(5)
        pm.del_endpoint(21)


def test_example_plugin_gets_every_event(pm_ns: str, run_pm: Callable[..., Daemon], tmp_path: Path) -> None:
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir(mode=0o755)
    (plugin_dir / "event_log.py").write_text(example_plugin_source())
    (plugin_dir / "event_log.py").chmod(0o644)
    out = tmp_path / "events.jsonl"
    d = run_pm(
        pm_ns,
        f"--plugin-dir={plugin_dir}",
        "--path-manager=event_log",
        "--load-plugins=event_log",
        "--notify-flags=existing",
        env={"EVENT_LOG_FILE": str(out)},
    )
    real_connection(pm_ns)
    want = {
        "listener_created",
        "listener_closed",
        "new_connection",
        "connection_established",
        "connection_closed",
        "new_address",
        "address_removed",
        "new_subflow",
        "subflow_closed",
        "subflow_priority",
        "new_interface",
        "new_local_address",
    }
    try:
        wait_for(
            lambda: sum(r["callback"] == "connection_closed" for r in records(out)) == 2, 10, "both closes"
        )
        wait_for(lambda: want <= {str(r["callback"]) for r in records(out)}, 5, "every callback")
    except AssertionError:
        raise AssertionError(f"{records(out)}\n{d.output()}") from None
    recs = records(out)
    listener = [r for r in recs if r["callback"] == "listener_created"]
    assert {"10.1.0.1:10002", "127.0.0.1:9200"} <= {str(r["laddr"]) for r in listener}
    server_side = {r["server_side"] for r in recs if r["callback"] == "new_connection"}
    assert server_side == {True, False}
    (prio,) = [r for r in recs if r["callback"] == "subflow_priority"]
    assert prio["backup"] is True
    # the network monitor reported v0's address to the plugin
    assert any(r["callback"] == "new_local_address" and r["addr"] == "10.1.0.1" for r in recs)
    assert d.alive()


def test_unknown_path_manager_warns_and_falls_back(pm_ns: str, run_pm: Callable[..., Daemon]) -> None:
    """mptcpd logs 'does not exist' and falls back on the plugin of lowest priority; so do we."""
    d = run_pm(pm_ns, "--path-manager=nope", "--load-plugins=addr_adv,nada")
    st = json.loads(d.state_file.read_text())
    assert [p["name"] for p in st["plugins"] if p["default"]] == ["addr_adv"]
    out = d.output()
    assert "'nope' is not loaded" in out and "no plugin named nada" in out and "Traceback" not in out

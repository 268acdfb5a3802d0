"""sspi with a real two-interface client: one subflow per interface, a second one on an interface closed."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable

import pytest

from mptcpkit.mptcp_socket import IPPROTO_MPTCP, subflow_addrs
from mptcpkit.netlink import ConnectionEstablished, MptcpPmClient
from mptcpkit.netlink.socket import run_in_netns

from .conftest import Daemon, ip, wait_for

pytestmark = pytest.mark.needs_root


def sysctl(ns: str, setting: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", setting], check=True)


@pytest.fixture
def two_paths(make_netns: Callable[[str], str]) -> tuple[str, str]:
    """Client with c0 (10.10.1.1) and c1 (10.10.2.1), each a veth to the server's s0 / s1."""
    cli, srv = make_netns("sspic"), make_netns("sspis")
    for n in (0, 1):
        subprocess.run(
            ["ip", "link", "add", f"mktc{n}", "netns", cli, "type", "veth", "peer", f"mkts{n}", "netns", srv],
            check=True,
        )
        ip(cli, "link", "set", f"mktc{n}", "name", f"c{n}")
        ip(srv, "link", "set", f"mkts{n}", "name", f"s{n}")
        ip(cli, "addr", "add", f"10.10.{n + 1}.1/24", "dev", f"c{n}")
        ip(srv, "addr", "add", f"10.10.{n + 1}.2/24", "dev", f"s{n}")
        ip(cli, "link", "set", f"c{n}", "up")
        ip(srv, "link", "set", f"s{n}", "up")
    ip(cli, "addr", "add", "10.10.1.11/24", "dev", "c0")
    sysctl(cli, "net.mptcp.path_manager=userspace")
    with MptcpPmClient(netns=srv) as pm:
        pm.set_limits(subflows=4, add_addr_accepted=4)
    return cli, srv


def test_one_subflow_per_interface(two_paths: tuple[str, str], run_pm: Callable[..., Daemon]) -> None:
    cli, srv = two_paths
    d = run_pm(cli, "--path-manager=sspi", "--load-plugins=sspi")
    ready = threading.Event()
    stop = threading.Event()

    def server() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 9300))
        s.listen()
        ready.set()
        conn, _ = s.accept()
        stop.wait(15)
        conn.close()
        s.close()

    t = threading.Thread(target=run_in_netns, args=(srv, server), daemon=True)
    t.start()
    assert ready.wait(5)
    watcher = MptcpPmClient(netns=cli)
    watcher.subscribe()

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.connect(("10.10.1.2", 9300))
        s.send(b"x")
        return s

    c = run_in_netns(cli, connect)
    try:

        def locals_() -> list[str]:
            c.send(b"x")  # keep packets flowing: the announcement rides on them
            return sorted(a.local[0] for a in subflow_addrs(c))

        try:
            wait_for(lambda: locals_() == ["10.10.1.1", "10.10.2.1"], 10, "a subflow on c1")
        except AssertionError:
            raise AssertionError(f"{locals_()}\n{d.output()}") from None
        token = next(e.token for e in watcher.read_events() if isinstance(e, ConnectionEstablished))
        # a second subflow on c0 (from c0's second address) is closed by sspi
        watcher.subflow_create(token, "10.10.1.11", "10.10.1.2", 9300, local_id=7)
        try:
            wait_for(lambda: locals_() == ["10.10.1.1", "10.10.2.1"], 5, "the extra c0 subflow closed")
        except AssertionError:
            raise AssertionError(
                f"{locals_()} {[e.to_dict() for e in watcher.read_events()]}\n{d.output()}"
            ) from None
        assert "Closing new subflow" in d.output() or "closing new subflow" in d.output()
        assert d.alive()
    finally:
        stop.set()
        c.close()
        watcher.close()
        t.join(5)

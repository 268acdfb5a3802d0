"""sspi with a real two-interface client: one subflow per interface, a second one on an interface closed."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable

import pytest

from mptcpkit.mptcp_socket import IPPROTO_MPTCP, subflow_addrs
from mptcpkit.netlink import AddressAnnounced, ConnectionEstablished, MptcpEvent, MptcpPmClient
from mptcpkit.netlink.socket import run_in_netns

from .conftest import Daemon, ip, wait_for

pytestmark = pytest.mark.needs_root


def mptcp_counters(ns: str) -> str:
    """The namespace's non-zero MPTcpExt counters (what the kernel did with announcements and joins)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz"], capture_output=True, text=True).stdout
    return " ".join(
        f"{f[0].removeprefix('MPTcpExt')}={f[1]}"
        for f in (line.split() for line in out.splitlines())
        if len(f) >= 2 and f[0].startswith("MPTcpExt") and f[1] != "0"
    )


def sysctl(ns: str, setting: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", setting], check=True)


@pytest.fixture
def two_paths(make_netns: Callable[[str], str]) -> tuple[str, str]:
    """Client with c0 (10.10.1.1) and c1 (10.10.2.1), each a veth to the server's s0 / s1.

    The server uses the user-space path manager and the test acts as its path manager: an in-kernel server
    PM opens its subflow the moment the ADD_ADDR arrives, and if the server application has not accept()ed
    the connection yet (a loaded CPU) the kernel cannot create the subflow socket (MPJoinSynTxCreatSkErr)
    and never tries again. Here the join starts only once the server has accepted, so the test is
    deterministic and still sees sspi's announcement (address and listener port) as the server got it."""
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
    sysctl(srv, "net.mptcp.path_manager=userspace")
    return cli, srv


def collect(pm: MptcpPmClient, seen: list[MptcpEvent]) -> list[MptcpEvent]:
    seen.extend(pm.read_events())
    return seen


def test_one_subflow_per_interface(two_paths: tuple[str, str], run_pm: Callable[..., Daemon]) -> None:
    cli, srv = two_paths
    d = run_pm(cli, "--path-manager=sspi", "--load-plugins=sspi")
    ready, accepted, stop = threading.Event(), threading.Event(), threading.Event()

    def server() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 9300))
        s.listen()
        ready.set()
        conn, _ = s.accept()
        accepted.set()
        stop.wait(15)
        conn.close()
        s.close()

    # the server's path manager (this test) listens before the connection: a user-space PM without a
    # listener drops ADD_ADDRs and refuses joins
    server_pm = MptcpPmClient(netns=srv)
    server_pm.subscribe()
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
    cli_events: list[MptcpEvent] = []
    srv_events: list[MptcpEvent] = []
    try:

        def locals_() -> list[str]:
            c.send(b"x")  # keep packets flowing: the announcement rides on them
            return sorted(a.local[0] for a in subflow_addrs(c))

        def announced() -> AddressAnnounced | None:
            c.send(b"x")  # the client only sends: sspi must not rely on it ever sending a pure ACK
            collect(server_pm, srv_events)
            return next(
                (e for e in srv_events if isinstance(e, AddressAnnounced) and str(e.daddr) == "10.10.2.1"),
                None,
            )

        def counters() -> str:
            return f"client: {mptcp_counters(cli)}\nserver: {mptcp_counters(srv)}\n{d.output()}"

        # sspi announces c1's address (the other interface) behind a listener once the connection is
        # established (announced earlier, the kernel would hold the ADD_ADDR back for a pure ACK)
        try:
            wait_for(lambda: announced() is not None, 10, "sspi's announcement of 10.10.2.1 at the server")
            wait_for(lambda: accepted.is_set(), 5, "the server to accept")
            wait_for(
                lambda: any(isinstance(e, ConnectionEstablished) for e in collect(watcher, cli_events)),
                5,
                "the client's connection established",
            )
            wait_for(
                lambda: any(isinstance(e, ConnectionEstablished) for e in collect(server_pm, srv_events)),
                5,
                "the server's connection established",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{counters()}") from None
        adv = announced()
        assert adv is not None and adv.dport, f"announced without the listener's port: {adv}"
        srv_token = next(e.token for e in srv_events if isinstance(e, ConnectionEstablished))
        server_pm.subflow_create(srv_token, "10.10.2.2", "10.10.2.1", adv.dport, local_id=2)
        try:
            wait_for(lambda: locals_() == ["10.10.1.1", "10.10.2.1"], 10, "a subflow on c1")
        except AssertionError:
            raise AssertionError(f"{locals_()}\n{counters()}") from None
        token = next(e.token for e in cli_events if isinstance(e, ConnectionEstablished))
        # a second subflow on c0 (from c0's second address) is closed by sspi
        watcher.subflow_create(token, "10.10.1.11", "10.10.1.2", 9300, local_id=7)
        try:
            wait_for(lambda: locals_() == ["10.10.1.1", "10.10.2.1"], 5, "the extra c0 subflow closed")
        except AssertionError:
            raise AssertionError(
                f"{locals_()} {[e.to_dict() for e in watcher.read_events()]}\n{counters()}"
            ) from None
        assert "Closing new subflow" in d.output() or "closing new subflow" in d.output()
        assert d.alive()
    finally:
        stop.set()
        c.close()
        watcher.close()
        server_pm.close()
        t.join(5)

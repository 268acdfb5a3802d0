"""MptcpPmClient against the real kernel, inside a fresh network namespace."""

from __future__ import annotations

import errno
import ipaddress
import socket
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from mptcpkit.errors import UsageError
from mptcpkit.mptcp_socket import IPPROTO_MPTCP
from mptcpkit.netlink import (
    ConnectionClosed,
    ConnectionCreated,
    EndpointFlags,
    KernelError,
    Limits,
    ListenerClosed,
    ListenerCreated,
    MptcpPmClient,
)
from mptcpkit.netlink.socket import run_in_netns

pytestmark = pytest.mark.needs_root


@pytest.fixture
def ns(make_netns: Callable[[str], str]) -> str:
    name = make_netns("pmc")
    subprocess.run(["ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "v0", "up"], check=True)
    subprocess.run(["ip", "-n", name, "addr", "add", "10.7.0.1/24", "dev", "v0"], check=True)
    return name


def test_endpoints_and_limits(ns: str) -> None:
    with MptcpPmClient(netns=ns) as pm:
        assert pm.dump_endpoints() == []
        pm.set_limits(subflows=3, add_addr_accepted=1)
        assert pm.get_limits() == Limits(3, 1)
        pm.set_limits(add_addr_accepted=5)  # subflows unchanged
        assert pm.get_limits() == Limits(3, 5)
        ep = pm.add_endpoint("10.7.0.1", flags="subflow,backup", dev="v0")
        assert ep.flags == EndpointFlags.SUBFLOW | EndpointFlags.BACKUP and ep.ifindex > 0
        ep6 = pm.add_endpoint("2001:db8::1", id=9, flags=EndpointFlags.SIGNAL)
        assert ep6.id == 9 and pm.get_endpoint(9) == ep6
        pm.set_flags(id=ep.id, flags="")
        assert pm.get_endpoint(ep.id).flags == EndpointFlags.SUBFLOW  # only backup/fullmesh can change
        with pytest.raises(KernelError) as info:
            pm.add_endpoint("10.7.0.1")
        assert info.value.errno == errno.EEXIST
        pm.del_endpoint(9)
        assert [e.addr for e in pm.dump_endpoints()] == [ipaddress.ip_address("10.7.0.1")]
        pm.flush_endpoints()
        assert pm.dump_endpoints() == []
    # the namespace's table is separate from the host's
    out = subprocess.run(
        ["ip", "-n", ns, "mptcp", "limits"], capture_output=True, text=True, check=True
    ).stdout
    assert "subflows 3" in out


def test_kernel_error_has_extack(ns: str) -> None:
    with MptcpPmClient(netns=ns) as pm:
        with pytest.raises(KernelError) as info:
            pm.set_limits(subflows=100)
        assert info.value.errno == errno.EINVAL and "maximum" in str(info.value)
        with pytest.raises(KernelError, match="invalid token"):
            pm.announce(12345, "10.7.0.1", 3)
        with pytest.raises(UsageError):
            pm.add_endpoint("10.7.0.1", dev="nope0")


def test_missing_namespace_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not found"):
        MptcpPmClient(netns="mkt-pm-does-not-exist")


def test_events_of_a_real_connection(ns: str) -> None:
    with MptcpPmClient(netns=ns) as pm:
        pm.subscribe()
        port = 9100

        def server() -> None:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
            ready.set()
            c, _ = s.accept()
            c.recv(10)
            c.close()
            s.close()

        ready = threading.Event()
        t = threading.Thread(target=run_in_netns, args=(ns, server))
        t.start()
        ready.wait(5)

        def client() -> None:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
            s.connect(("127.0.0.1", port))
            s.send(b"hi")
            time.sleep(0.1)
            s.close()

        run_in_netns(ns, client)
        t.join(5)
        seen: list[object] = []
        for ev in pm.events(timeout=2):
            seen.append(ev)
            if sum(isinstance(e, ConnectionClosed) for e in seen) == 2 and any(
                isinstance(e, ListenerClosed) for e in seen
            ):
                break
    kinds = {type(e) for e in seen}
    assert {ListenerCreated, ConnectionCreated, ConnectionClosed, ListenerClosed} <= kinds
    lc = next(e for e in seen if isinstance(e, ListenerCreated))
    assert lc.sport == port and str(lc.saddr) == "127.0.0.1"


def test_async_events(ns: str) -> None:
    import asyncio

    async def main() -> list[str]:
        with MptcpPmClient(netns=ns) as pm:
            agen = pm.aevents()
            first = asyncio.ensure_future(agen.__anext__())
            await asyncio.sleep(0.1)
            with MptcpPmClient(netns=ns) as other:
                other.add_endpoint("10.7.0.1", flags="signal", port=10020)
                other.flush_endpoints()
            got = [await asyncio.wait_for(first, 5)]
            got.append(await asyncio.wait_for(agen.__anext__(), 5))
            await agen.aclose()
            return [e.name() for e in got]

    assert asyncio.run(main()) == ["listener_created", "listener_closed"]

"""The sans-IO core's decisions, without root or sockets: routing by token, route-check retries and
their timing, reconciliation after lost events, ids and limits (time is passed in, as in aioquic)."""

from __future__ import annotations

import ipaddress

from mptcpkit.netlink import mptcp_pm as ev
from mptcpkit.netlink.rtnetlink import IFF_RUNNING, IFF_UP, Interface, KernelRoute, LocalAddress, RtnlChange
from mptcpkit.pm.config import NotifyFlags
from mptcpkit.pm.core import Connection, PathManagerCore, PluginCall, RouteLookup
from mptcpkit.pm.handle import IdManager
from mptcpkit.pm.netmon import NetworkMonitor
from mptcpkit.pm.plugins.addr_adv import limits_for

UP = IFF_UP | IFF_RUNNING
ETH0 = Interface(2, "eth0", UP)
A1 = LocalAddress(2, ipaddress.ip_address("10.0.0.1"))
V4 = ipaddress.IPv4Address


def effects(core: PathManagerCore) -> list[PluginCall | RouteLookup]:
    out = []
    while (e := core.next_effect()) is not None:
        out.append(e)
    return out


def calls(core: PathManagerCore) -> list[tuple[str, str]]:
    return [(e.plugin, e.method) for e in effects(core) if isinstance(e, PluginCall)]


def make(notify: NotifyFlags = NotifyFlags.EXISTING) -> PathManagerCore:
    return PathManagerCore(NetworkMonitor(notify), ["addr_adv", "logger"], "addr_adv")


def created(token: int, flags: int = 0) -> ev.ConnectionCreated:
    return ev.ConnectionCreated(
        token=token, family=2, saddr=V4("10.0.0.1"), daddr=V4("10.0.0.2"), sport=1, dport=80, flags=flags
    )  # type: ignore[call-arg]


def test_start_broadcasts_in_priority_order_then_reconciles() -> None:
    core = make()
    core.start([ETH0], [A1], now=0.0)
    got = calls(core)
    assert got[:2] == [("addr_adv", "new_interface"), ("logger", "new_interface")]
    assert ("addr_adv", "new_local_address") in got
    assert got[-2:] == [("addr_adv", "reconcile"), ("logger", "reconcile")]


def test_connection_events_go_to_the_plugin_that_owns_the_token() -> None:
    core = make()
    core.handle_pm_event(created(7, int(ev.EventFlags.DENY_JOIN_ID0)), now=0.0)
    (call,) = [e for e in effects(core) if isinstance(e, PluginCall)]
    assert (call.plugin, call.method, call.kwargs) == ("addr_adv", "new_connection", {"deny_join_id0": True})
    core.default = "logger"  # later connections go elsewhere; token 7 stays with addr_adv
    core.handle_pm_event(ev.ConnectionClosed(token=7), now=1.0)  # type: ignore[call-arg]
    assert calls(core) == [("addr_adv", "connection_closed")]
    assert core.connections == {}


def test_a_plugin_that_failed_to_start_gets_nothing() -> None:
    core = make()
    core.remove_plugin("addr_adv")
    assert core.default == "logger"
    core.handle_pm_event(created(9), now=0.0)
    assert calls(core) == [("logger", "new_connection")]


def test_route_check_retries_at_1_4_8_16_ms_then_gives_up() -> None:
    core = make(NotifyFlags.CHECK_ROUTE)
    core.start([ETH0], [], now=0.0)
    effects(core)
    core.handle_rtnl([RtnlChange(False, A1)], now=10.0)
    assert effects(core) == [RouteLookup(A1)]  # looked up at once
    due = []
    t = 10.0
    for _ in range(4):
        core.route_answer(A1, False, now=t)
        timer = core.get_timer()
        assert timer is not None
        due.append(round((timer - t) * 1000, 3))
        t = timer
        core.handle_timer(now=t)
        assert effects(core) == [RouteLookup(A1)]
    assert due == [1.0, 4.0, 8.0, 16.0]
    core.route_answer(A1, False, now=t)  # the 4th retry failed: given up, no timer left
    assert core.get_timer() is None and calls(core) == []
    # beyond mptcpd: a new route re-checks the abandoned address
    core.handle_rtnl([RtnlChange(False, KernelRoute(2, None, 0, 2))], now=t + 1)
    assert effects(core) == [RouteLookup(A1)]
    core.route_answer(A1, True, now=t + 1)
    assert ("addr_adv", "new_local_address") in calls(core)


def test_address_removed_while_route_check_pending_cancels_the_timer() -> None:
    core = make(NotifyFlags.CHECK_ROUTE)
    core.start([ETH0], [], now=0.0)
    core.handle_rtnl([RtnlChange(False, A1)], now=0.0)
    effects(core)
    core.route_answer(A1, False, now=0.0)
    assert core.get_timer() is not None
    core.handle_rtnl([RtnlChange(True, A1)], now=0.0005)
    assert core.get_timer() is None
    core.route_answer(A1, True, now=0.002)  # a late answer is ignored
    assert calls(core) == []


def test_reconciliation_after_lost_events() -> None:
    core = make()
    for token in (1, 2):
        core.handle_pm_event(created(token), now=0.0)
    effects(core)
    core.resync_connections([Connection(2, "", "10.0.0.1:1", "10.0.0.2:80"), Connection(3, "", "a", "b")])
    assert calls(core) == [("addr_adv", "connection_closed")]  # token 1 closed while events were lost
    assert sorted(core.connections) == [2, 3] and core.connections[3].plugin == "addr_adv"


def test_resync_of_the_network_reports_the_difference() -> None:
    core = make()
    core.start([ETH0], [A1], now=0.0)
    effects(core)
    a2 = LocalAddress(2, ipaddress.ip_address("10.0.0.2"))
    core.resync_network([ETH0], [a2], now=1.0)
    got = calls(core)
    assert ("addr_adv", "delete_local_address") in got and ("addr_adv", "new_local_address") in got


def test_ids_lowest_free_stable_and_reserved_at_start() -> None:
    idm = IdManager()
    idm.reserve(ipaddress.ip_address("10.9.9.9"), 1)  # an endpoint that existed before the daemon
    a, b = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2")
    assert idm.get_id(a) == 2 and idm.get_id(b) == 3 and idm.get_id(a) == 2
    assert idm.remove_id(a) == 2 and idm.get_id(ipaddress.ip_address("10.0.0.3")) == 2
    for i in range(300):
        idm.get_id(ipaddress.ip_address(f"10.1.{i // 250}.{i % 250}"))
    assert idm.get_id(ipaddress.ip_address("10.2.0.0")) == 0  # all 255 taken


def test_limits_follow_mptcpd() -> None:
    subflow = int(ev.EndpointFlags.SUBFLOW)
    assert limits_for(2, subflow) == (2, 2)
    assert limits_for(5, subflow) == (5, 5)
    assert limits_for(5, int(ev.EndpointFlags.SIGNAL)) == (5, 0)
    assert limits_for(1, subflow) is None and limits_for(9, subflow) is None


def test_a_malformed_notification_is_skipped_not_fatal() -> None:
    """The daemon's rtnetlink reader on a datagram socket pair: garbage is counted, the next message counts."""
    import json
    import socket
    from pathlib import Path

    from mptcpkit.netlink.rtnetlink import Interface as Link
    from mptcpkit.pm.rtnl_socket import RtnlSocket

    fixtures = json.loads(
        (Path(__file__).parents[1] / "netlink" / "fixtures" / "kernel_messages.json").read_text()
    )
    link = next(bytes.fromhex(r["hex"]) for r in fixtures if r["name"].startswith("rtnl_links"))
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        b.setblocking(False)
        reader = RtnlSocket.__new__(RtnlSocket)  # the reader only, without opening netlink sockets
        reader.events, reader.decode_errors = b, 0
        a.send(b"\x30\x00\x00\x00garbage that claims 48 bytes")
        a.send(link)
        changes = reader.read()
    assert reader.decode_errors == 1
    assert [type(c.fact) for c in changes] == [Link]

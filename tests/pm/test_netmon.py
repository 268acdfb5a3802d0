"""The sans-IO network monitor: which addresses reach plugins, and when."""

from __future__ import annotations

import ipaddress

from mptcpkit.netlink.rtnetlink import IFF_LOOPBACK, IFF_RUNNING, IFF_UP, Interface, LocalAddress
from mptcpkit.pm import netmon
from mptcpkit.pm.config import NotifyFlags
from mptcpkit.pm.netmon import NetworkMonitor

UP = IFF_UP | IFF_RUNNING


def addr(ifindex: int, a: str, scope: int = 0) -> LocalAddress:
    return LocalAddress(ifindex, ipaddress.ip_address(a), scope)


def new_addrs(actions: list[netmon.Action]) -> list[str]:
    return [str(a.addr.addr) for a in actions if isinstance(a, netmon.NewLocalAddress)]


def gone_addrs(actions: list[netmon.Action]) -> list[str]:
    return [str(a.addr.addr) for a in actions if isinstance(a, netmon.DeleteLocalAddress)]


def test_existing_loopback_and_scopes() -> None:
    links = [Interface(1, "lo", UP | IFF_LOOPBACK), Interface(2, "eth0", UP), Interface(3, "eth1", IFF_UP)]
    addrs = [addr(1, "127.0.0.1", 254), addr(2, "10.0.0.1"), addr(2, "fe80::1", 253), addr(3, "10.0.1.1")]
    m = NetworkMonitor(NotifyFlags.EXISTING | NotifyFlags.SKIP_LINK_LOCAL)
    acts = m.load_initial(links, addrs)
    assert new_addrs(acts) == ["10.0.0.1"]  # lo never, link-local skipped, eth1 not running
    assert [a.iface.name for a in acts if isinstance(a, netmon.NewInterface)] == ["eth0"]
    assert isinstance(acts[0], netmon.NewInterface)  # interface before its addresses
    assert new_addrs(m.address_added(addr(2, "10.9.9.9", 254))) == ["10.9.9.9"]
    m2 = NetworkMonitor(NotifyFlags.SKIP_LOOPBACK)
    assert new_addrs(m2.load_initial(links, addrs)) == []  # no 'existing'
    assert new_addrs(m2.address_added(addr(2, "10.9.9.9", 254))) == []  # host scope skipped
    assert new_addrs(m2.address_added(addr(2, "10.2.2.2"))) == ["10.2.2.2"]


def test_link_flap_withdraws_and_restores() -> None:
    m = NetworkMonitor(NotifyFlags.EXISTING)
    m.load_initial([Interface(2, "eth0", UP)], [addr(2, "10.0.0.1")])
    acts = m.link_changed(Interface(2, "eth0", IFF_UP))
    assert gone_addrs(acts) == ["10.0.0.1"]
    assert any(isinstance(a, netmon.DeleteInterface) for a in acts)
    assert m.address_added(addr(2, "10.0.0.2")) == []  # link down: nothing yet
    acts = m.link_changed(Interface(2, "eth0", UP))
    assert sorted(new_addrs(acts)) == ["10.0.0.1", "10.0.0.2"]
    assert gone_addrs(m.link_removed(2)) == ["10.0.0.1", "10.0.0.2"]


def test_route_check_flow() -> None:
    m = NetworkMonitor(NotifyFlags.CHECK_ROUTE)
    m.load_initial([Interface(2, "eth0", UP)], [])
    acts = m.address_added(addr(2, "10.0.0.1"))
    assert [type(a) for a in acts] == [netmon.RouteCheck]
    a = addr(2, "10.0.0.1")
    assert m.route_result(a, False) == []
    acts = m.routes_changed()
    assert [type(x) for x in acts] == [netmon.RouteCheck]
    assert new_addrs(m.route_result(a, True)) == ["10.0.0.1"]
    assert m.routes_changed() == []  # an address already in use is not re-checked
    assert netmon.ROUTE_RETRY_DELAYS_MS == (1, 4, 8, 16)


def test_resync_after_lost_notifications() -> None:
    m = NetworkMonitor(NotifyFlags.EXISTING)
    m.load_initial([Interface(2, "eth0", UP)], [addr(2, "10.0.0.1")])
    acts = m.resync([Interface(2, "eth0", UP)], [addr(2, "10.0.0.2")])
    assert gone_addrs(acts) == ["10.0.0.1"] and new_addrs(acts) == ["10.0.0.2"]


def test_loopback_monitoring_as_mptcpd_nm_monitor_loopback() -> None:
    m = NetworkMonitor(NotifyFlags.EXISTING)
    m.load_initial([Interface(1, "lo", UP | IFF_LOOPBACK)], [addr(1, "127.0.0.1", 254)])
    assert m.reported_addresses() == []
    acts = m.set_monitor_loopback(True)
    assert new_addrs(acts) == ["127.0.0.1"]
    assert gone_addrs(m.set_monitor_loopback(False)) == ["127.0.0.1"]


def test_interface_globs_keep_virtual_links_out() -> None:
    m = NetworkMonitor(NotifyFlags.EXISTING, deny=("docker*", "veth*"))
    links = [Interface(2, "eth0", UP), Interface(3, "docker0", UP), Interface(4, "veth1a", UP)]
    acts = m.load_initial(links, [addr(2, "10.0.0.1"), addr(3, "172.17.0.1"), addr(4, "10.7.0.1")])
    assert new_addrs(acts) == ["10.0.0.1"]
    only = NetworkMonitor(NotifyFlags.EXISTING, allow=("wlan*",))
    assert new_addrs(only.load_initial([*links, Interface(5, "wlan0", UP)], [addr(5, "10.5.0.1")])) == [
        "10.5.0.1"
    ]

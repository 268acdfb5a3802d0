"""Network monitor core, sans-IO: rtnetlink link/address facts in, plugin-level network events out.

The kernel's view is kept for *every* link and address (also links that are down), and the set of
addresses reported to plugins is recomputed after each change as a diff against what was reported before.
That makes the daemon right where mptcpd 0.12 is not: a link flap withdraws and re-reports its addresses,
an address added while its link is down is reported when the link comes up, and IPv6 addresses flushed on
link-down are withdrawn.

Rules matching mptcpd: only links that are IFF_UP|IFF_RUNNING and not IFF_LOOPBACK (unless loopback
monitoring is on) are used; beyond mptcpd, interface-name globs can allow or deny links;
`skip_link_local` drops link-scope addresses, `skip_loopback` host-scope ones; without `existing`,
addresses present at start are never reported (until removed and added again); with `check_route`, an
address is reported once the IO layer confirms a default route out of its interface (see `RouteCheck`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from mptcpkit.netlink.mptcp_pm import IPAddress
from mptcpkit.netlink.rtnetlink import (
    RT_SCOPE_HOST,
    RT_SCOPE_LINK,
    Interface,
    KernelRoute,
    LocalAddress,
    RtnlChange,
)
from mptcpkit.pm.config import NotifyFlags

# mptcpd's route check: look up at once; on failure retry after 1 ms, then 2^attempt ms (4, 8, 16), and give
# up when the 4th retry fails (lib/network_monitor.c: `attempts++ > MPTCPD_MAX_ROUTE_CHECK (3)`)
ROUTE_RETRY_DELAYS_MS = (1, 4, 8, 16)


# --- what the core asks of the daemon / plugins -------------------------------------------------------


@dataclass(frozen=True)
class NewInterface:
    iface: Interface


@dataclass(frozen=True)
class UpdateInterface:
    iface: Interface


@dataclass(frozen=True)
class DeleteInterface:
    iface: Interface


@dataclass(frozen=True)
class NewLocalAddress:
    iface: Interface
    addr: LocalAddress


@dataclass(frozen=True)
class DeleteLocalAddress:
    iface: Interface
    addr: LocalAddress


@dataclass(frozen=True)
class RouteCheck:
    """Ask the IO layer to look up a default route out of `addr.ifindex` (answer with `route_result`)."""

    addr: LocalAddress


NetworkEvent = NewInterface | UpdateInterface | DeleteInterface | NewLocalAddress | DeleteLocalAddress
Action = NetworkEvent | RouteCheck


@dataclass
class NetworkMonitor:
    """Pure state: feed link/address facts, get back the events to dispatch and route checks to run."""

    notify: NotifyFlags = NotifyFlags(0)  # noqa: RUF009
    monitor_loopback: bool = False
    """mptcpd's mptcpd_nm_monitor_loopback(): also use loopback links (off by default, as in mptcpd)."""
    allow: tuple[str, ...] = ()
    """Interface-name globs that may be used (empty: all); beyond mptcpd."""
    deny: tuple[str, ...] = ()
    """Interface-name globs that are never used (e.g. docker*, veth*); beyond mptcpd."""
    links: dict[int, Interface] = field(default_factory=dict)
    addrs: dict[tuple[int, IPAddress], LocalAddress] = field(default_factory=dict)
    reported: dict[tuple[int, IPAddress], LocalAddress] = field(default_factory=dict)
    reported_links: dict[int, Interface] = field(default_factory=dict)
    preexisting: set[tuple[int, IPAddress]] = field(default_factory=set)
    route_ok: set[tuple[int, IPAddress]] = field(default_factory=set)
    route_pending: set[tuple[int, IPAddress]] = field(default_factory=set)
    route_failed: set[tuple[int, IPAddress]] = field(default_factory=set)

    # -- start-up: the initial dumps (no events are produced until `started`)
    def load_initial(self, links: list[Interface], addrs: list[LocalAddress]) -> list[Action]:
        for link in links:
            self.links[link.index] = link
        for a in addrs:
            self.addrs[(a.ifindex, a.addr)] = a
            if not self.notify & NotifyFlags.EXISTING:
                self.preexisting.add((a.ifindex, a.addr))
        return self._reconcile()

    def resync(self, links: list[Interface], addrs: list[LocalAddress]) -> list[Action]:
        """Replace the kernel view after lost notifications (ENOBUFS) and report the difference."""
        self.links = {link.index: link for link in links}
        fresh = {(a.ifindex, a.addr): a for a in addrs}
        for key in [k for k in self.addrs if k not in fresh]:
            self._forget(key)
        self.addrs = fresh
        return self._reconcile()

    # -- incremental facts
    def handle(self, change: RtnlChange) -> list[Action]:
        """One rtnetlink change in, the events it causes out (the only entry point the daemon needs)."""
        fact = change.fact
        if isinstance(fact, Interface):
            return self.link_removed(fact.index) if change.removed else self.link_changed(fact)
        if isinstance(fact, LocalAddress):
            if change.removed:
                return self.address_removed(fact.ifindex, fact.addr)
            return self.address_added(fact)
        assert isinstance(fact, KernelRoute)
        return self.routes_changed() if self.notify & NotifyFlags.CHECK_ROUTE else []

    def usable(self, link: Interface) -> bool:
        """Up and running, not loopback (unless monitored), and allowed by the name globs."""
        if not link.up or (link.loopback and not self.monitor_loopback):
            return False
        if self.allow and not any(fnmatch.fnmatchcase(link.name, g) for g in self.allow):
            return False
        return not any(fnmatch.fnmatchcase(link.name, g) for g in self.deny)

    def set_monitor_loopback(self, on: bool) -> list[Action]:
        self.monitor_loopback = on
        return self._reconcile()

    def link_changed(self, link: Interface) -> list[Action]:
        self.links[link.index] = link
        return self._reconcile()

    def link_removed(self, index: int) -> list[Action]:
        self.links.pop(index, None)
        for key in [k for k in self.addrs if k[0] == index]:
            self._forget(key)
        return self._reconcile()

    def address_added(self, a: LocalAddress) -> list[Action]:
        key = (a.ifindex, a.addr)
        self.addrs[key] = a
        return self._reconcile()

    def address_removed(self, ifindex: int, addr: IPAddress) -> list[Action]:
        self._forget((ifindex, addr))
        return self._reconcile()

    def route_result(self, a: LocalAddress, ok: bool) -> list[Action]:
        """Outcome of a RouteCheck after mptcpd's retries; a failure is re-tried on `routes_changed`."""
        key = (a.ifindex, a.addr)
        self.route_pending.discard(key)
        if ok:
            self.route_ok.add(key)
            self.route_failed.discard(key)
        else:
            self.route_failed.add(key)
        return self._reconcile()

    def routes_changed(self) -> list[Action]:
        """A route appeared or vanished: re-check the addresses that failed (mptcpd never does)."""
        self.route_failed.clear()
        return self._reconcile()

    def _forget(self, key: tuple[int, IPAddress]) -> None:
        self.addrs.pop(key, None)
        self.preexisting.discard(key)
        self.route_ok.discard(key)
        self.route_failed.discard(key)
        self.route_pending.discard(key)

    # -- the one rule
    def _eligible(self, a: LocalAddress) -> bool:
        link = self.links.get(a.ifindex)
        if link is None or not self.usable(link):
            return False
        if (a.ifindex, a.addr) in self.preexisting:
            return False
        if self.notify & NotifyFlags.SKIP_LINK_LOCAL and a.scope == RT_SCOPE_LINK:
            return False
        return not (self.notify & NotifyFlags.SKIP_LOOPBACK and a.scope == RT_SCOPE_HOST)

    def _reconcile(self) -> list[Action]:
        out: list[Action] = []
        ready_links = {i: link for i, link in self.links.items() if self.usable(link)}
        # links first, so plugins see new_interface before that interface's addresses
        for i, link in ready_links.items():
            if i not in self.reported_links:
                out.append(NewInterface(link))
            elif self.reported_links[i] != link:
                out.append(UpdateInterface(link))
        wanted: dict[tuple[int, IPAddress], LocalAddress] = {}
        for key, a in self.addrs.items():
            if not self._eligible(a):
                continue
            if self.notify & NotifyFlags.CHECK_ROUTE and key not in self.route_ok:
                if key not in self.route_pending and key not in self.route_failed:
                    self.route_pending.add(key)
                    out.append(RouteCheck(a))
                continue
            wanted[key] = a
        for key, a in list(self.reported.items()):
            if key not in wanted:
                del self.reported[key]
                link = self.links.get(key[0]) or self.reported_links.get(key[0]) or Interface(key[0], "?", 0)
                out.append(DeleteLocalAddress(link, a))
        for key, a in wanted.items():
            if key not in self.reported:
                self.reported[key] = a
                out.append(NewLocalAddress(ready_links[key[0]], a))
        for i, link in list(self.reported_links.items()):
            if i not in ready_links:
                out.append(DeleteInterface(link))
        self.reported_links = dict(ready_links)
        return out

    def interface_of(self, addr: IPAddress) -> Interface | None:
        """The ready link carrying `addr` (sspi maps subflows to interfaces with this)."""
        for ifindex, a in self.addrs:
            link = self.links.get(ifindex)
            if a == addr and link is not None and self.usable(link):
                return link
        return None

    def reported_addresses(self) -> list[LocalAddress]:
        return list(self.reported.values())

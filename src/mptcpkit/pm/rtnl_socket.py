"""rtnetlink I/O for the daemon: the notification socket, dumps, and mptcpd's default-route lookup.

The codec is `mptcpkit.netlink.rtnetlink`; request matching is `netlink.session.transact`. The sockets are
ours (non-blocking, usable with `loop.add_reader`), so a namespace can be chosen per socket and lost
notifications (ENOBUFS) are visible.
"""

from __future__ import annotations

import ipaddress
import itertools

from mptcpkit.netlink import rtnetlink as rt
from mptcpkit.netlink.errors import DecodeError, KernelError
from mptcpkit.netlink.session import Overrun, pending_datagrams, transact
from mptcpkit.netlink.socket import NETLINK_ROUTE, add_membership, open_netlink

ROUTE_TEST_V4 = ipaddress.IPv4Address("192.0.2.1")
ROUTE_TEST_V6 = ipaddress.IPv6Address("2001:db8::")


class ResyncNeeded(Exception):
    """Notifications were lost (ENOBUFS): dump everything again."""


class RtnlSocket:
    """Two rtnetlink sockets in one namespace: one for notifications, one for dumps and route lookups."""

    GROUPS = (rt.RTNLGRP_LINK, rt.RTNLGRP_IPV4_IFADDR, rt.RTNLGRP_IPV6_IFADDR)
    ROUTE_GROUPS = (rt.RTNLGRP_IPV4_ROUTE, rt.RTNLGRP_IPV6_ROUTE)

    def __init__(self, netns: str | None = None, *, routes: bool = False) -> None:
        """`routes`: also follow route changes (only check_route needs them; every address change brings
        a few local-route messages the daemon would otherwise wake up for)."""
        self.events = open_netlink(NETLINK_ROUTE, netns)
        for group in self.GROUPS + (self.ROUTE_GROUPS if routes else ()):
            add_membership(self.events, group)
        self.events.setblocking(False)
        self.req = open_netlink(NETLINK_ROUTE, netns)
        self.req.settimeout(2.0)
        self._seq = itertools.count(1)
        self.decode_errors = 0

    def close(self) -> None:
        self.events.close()
        self.req.close()

    def fileno(self) -> int:
        return self.events.fileno()

    def read(self) -> list[rt.RtnlChange]:
        """Every notification queued now; ResyncNeeded if the kernel dropped some. A datagram that does
        not decode is counted and skipped (the next resync repairs what it carried)."""
        out: list[rt.RtnlChange] = []
        try:
            datagrams = pending_datagrams(self.events)
        except Overrun:
            raise ResyncNeeded() from None
        for data in datagrams:
            try:
                out.extend(rt.decode(data))
            except DecodeError:
                self.decode_errors += 1
        return out

    def _request(self, msg_type: int, body: bytes, *, dump: bool) -> list[rt.RtnlChange]:
        replies = transact(self.req, msg_type, body, next(self._seq), f"rtnetlink {msg_type}", dump=dump)
        out = []
        for m in replies:
            try:
                c = rt.decode_message(m)
            except DecodeError:
                self.decode_errors += 1
                continue
            if c is not None:
                out.append(c)
        return out

    def dump(self) -> tuple[list[rt.Interface], list[rt.LocalAddress]]:
        links = [
            c.fact
            for c in self._request(rt.RTM_GETLINK, rt.req_dump_links(), dump=True)
            if isinstance(c.fact, rt.Interface)
        ]
        addrs = [
            c.fact
            for c in self._request(rt.RTM_GETADDR, rt.req_dump_addrs(), dump=True)
            if isinstance(c.fact, rt.LocalAddress)
        ]
        return links, addrs

    def default_route_via(self, a: rt.LocalAddress) -> bool:
        """mptcpd's check: the FIB entry matched by a documentation address (192.0.2.1 / 2001:db8::) out of
        this link has no destination (a default route) and leaves through the address's own interface."""
        target = ROUTE_TEST_V4 if a.addr.version == 4 else ROUTE_TEST_V6
        try:
            replies = self._request(rt.RTM_GETROUTE, rt.req_route_lookup(target, a.ifindex), dump=False)
        except (KernelError, TimeoutError, OSError):
            return False
        for c in replies:
            if isinstance(c.fact, rt.KernelRoute) and not c.removed:
                return c.fact.dst is None and c.fact.dst_len == 0 and c.fact.oif == a.ifindex
        return False

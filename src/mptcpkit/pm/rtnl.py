"""rtnetlink I/O for the network monitor: dumps, notifications and mptcpd's default-route check.

The codec is `mptcpkit.netlink.rtnl`; the sockets are ours (non-blocking, usable with `loop.add_reader`), so a
namespace can be chosen per socket and lost notifications (ENOBUFS) are visible.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from mptcpkit.netlink import rtnl, wire
from mptcpkit.netlink.errors import KernelError
from mptcpkit.netlink.socket import NETLINK_ROUTE, add_membership, open_netlink
from mptcpkit.pm.netmon import ROUTE_TEST_V4, ROUTE_TEST_V6, Interface, LocalAddress


@dataclass(frozen=True)
class LinkFact:
    link: Interface
    removed: bool


@dataclass(frozen=True)
class AddrFact:
    addr: LocalAddress
    removed: bool


@dataclass(frozen=True)
class RouteFact:
    """Some route was added or removed (only used to re-run failed route checks)."""


Fact = LinkFact | AddrFact | RouteFact


class ResyncNeeded(Exception):
    """Notifications were lost (ENOBUFS): dump everything again."""


def to_fact(m: rtnl.RtnlMsg) -> Fact:
    if isinstance(m, rtnl.LinkMsg):
        return LinkFact(Interface(m.index, m.name, m.flags, m.type), m.removed)
    if isinstance(m, rtnl.AddrMsg):
        return AddrFact(LocalAddress(m.index, m.addr, m.scope), m.removed)
    return RouteFact()


def decode(data: bytes) -> list[Fact]:
    return [to_fact(m) for m in rtnl.decode(data)]


class RtnlMonitor:
    """Two rtnetlink sockets in one namespace: one for notifications, one for dumps and route lookups."""

    GROUPS = (
        rtnl.RTNLGRP_LINK,
        rtnl.RTNLGRP_IPV4_IFADDR,
        rtnl.RTNLGRP_IPV6_IFADDR,
        rtnl.RTNLGRP_IPV4_ROUTE,
        rtnl.RTNLGRP_IPV6_ROUTE,
    )

    def __init__(self, netns: str | None = None) -> None:
        self.events = open_netlink(NETLINK_ROUTE, netns)
        for group in self.GROUPS:
            add_membership(self.events, group)
        self.events.setblocking(False)
        self.req = open_netlink(NETLINK_ROUTE, netns)
        self.req.settimeout(2.0)
        self._seq = 0

    def close(self) -> None:
        self.events.close()
        self.req.close()

    def fileno(self) -> int:
        return self.events.fileno()

    def read(self) -> list[Fact]:
        """Every notification queued now; ResyncNeeded if the kernel dropped some."""
        out: list[Fact] = []
        while True:
            try:
                data = self.events.recv(1 << 20)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise ResyncNeeded() from None
                raise
            out.extend(decode(data))

    def _request(self, msg_type: int, body: bytes, *, dump: bool) -> list[rtnl.RtnlMsg]:
        self._seq += 1
        seq = self._seq
        flags = wire.NLM_F_REQUEST | (wire.NLM_F_DUMP if dump else 0)
        self.req.send(wire.pack_nlmsg(msg_type, flags, seq, body))
        out: list[rtnl.RtnlMsg] = []
        while True:
            done = False
            for m in wire.iter_nlmsgs(self.req.recv(1 << 20)):
                if m.seq != seq:
                    continue
                if m.type == wire.NLMSG_ERROR:
                    err = wire.parse_error(m)
                    if err.errno:
                        raise KernelError(err.errno, err.extack, request=f"rtnetlink {msg_type}")
                    done = True
                elif m.type == wire.NLMSG_DONE:
                    done = True
                else:
                    r = rtnl.decode_message(m)
                    if r is not None:
                        out.append(r)
                    done = done or not dump
            if done:
                return out

    def dump(self) -> tuple[list[Interface], list[LocalAddress]]:
        links = [
            f.link
            for m in self._request(rtnl.RTM_GETLINK, rtnl.req_dump_links(), dump=True)
            if isinstance(f := to_fact(m), LinkFact)
        ]
        addrs = [
            f.addr
            for m in self._request(rtnl.RTM_GETADDR, rtnl.req_dump_addrs(), dump=True)
            if isinstance(f := to_fact(m), AddrFact)
        ]
        return links, addrs

    def default_route_via(self, a: LocalAddress) -> bool:
        """mptcpd's check: the FIB entry matched by a documentation address (192.0.2.1 / 2001:db8::) out of
        this link has no destination (a default route) and leaves through the address's own interface."""
        target = ROUTE_TEST_V4 if a.addr.version == 4 else ROUTE_TEST_V6
        try:
            replies = self._request(rtnl.RTM_GETROUTE, rtnl.req_route_lookup(target, a.ifindex), dump=False)
        except (KernelError, TimeoutError):
            return False
        for r in replies:
            if isinstance(r, rtnl.RouteMsg) and not r.removed:
                return r.dst is None and r.dst_len == 0 and r.oif == a.ifindex
        return False

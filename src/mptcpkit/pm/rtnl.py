"""rtnetlink I/O for the network monitor: dumps, notifications and mptcpd's default-route check.

Messages are decoded with pyroute2's rtnetlink marshal; the socket is ours (non-blocking, usable from asyncio
with `loop.add_reader`) so a namespace can be chosen per socket and lost notifications (ENOBUFS) are visible.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from mptcpkit.netlink import wire
from mptcpkit.netlink.errors import KernelError
from mptcpkit.netlink.socket import NETLINK_ROUTE, add_membership, open_netlink
from mptcpkit.pm.netmon import ROUTE_TEST_V4, ROUTE_TEST_V6, Interface, LocalAddress

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_ROUTE = (
    1,
    5,
    7,
    9,
    11,
)
RTM_F_LOOKUP_TABLE = 0x1000
RTM_F_FIB_MATCH = 0x2000
RTA_DST, RTA_OIF = 1, 4


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


def decode(data: bytes) -> Iterator[Fact]:
    """rtnetlink bytes -> link/address/route facts (other messages are skipped)."""
    for msg in MarshalRtnl().parse(data):
        fact = _fact(msg)
        if fact is not None:
            yield fact


def _fact(msg: Any) -> Fact | None:
    mtype = msg["header"]["type"]
    if mtype in (RTM_NEWLINK, RTM_DELLINK):
        link = Interface(
            index=int(msg["index"]),
            name=str(msg.get_attr("IFLA_IFNAME") or f"if{msg['index']}"),
            flags=int(msg["flags"]),
            type=int(msg["ifi_type"]),
        )
        return LinkFact(link, removed=mtype == RTM_DELLINK)
    if mtype in (RTM_NEWADDR, RTM_DELADDR):
        if msg["family"] not in (socket.AF_INET, socket.AF_INET6):
            return None
        # IFA_LOCAL is the local address on point-to-point links; IFA_ADDRESS otherwise
        raw = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if raw is None:
            return None
        addr = LocalAddress(
            ifindex=int(msg["index"]), addr=ipaddress.ip_address(raw), scope=int(msg["scope"])
        )
        return AddrFact(addr, removed=mtype == RTM_DELADDR)
    if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
        return RouteFact()
    return None


class RtnlMonitor:
    """Two rtnetlink sockets in one namespace: one for notifications, one for dumps and route lookups."""

    def __init__(self, netns: str | None = None) -> None:
        self.events = open_netlink(NETLINK_ROUTE, netns)
        for group in (
            RTNLGRP_LINK,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV6_IFADDR,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_ROUTE,
        ):
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

    def _request(self, msg_type: int, flags: int, body: bytes) -> list[bytes]:
        self._seq += 1
        seq = self._seq
        self.req.send(wire.pack_nlmsg(msg_type, wire.NLM_F_REQUEST | flags, seq, body))
        chunks: list[bytes] = []
        while True:
            data = self.req.recv(1 << 20)
            done = False
            for m in wire.iter_nlmsgs(data):
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
                    chunks.append(wire.pack_nlmsg(m.type, m.flags, m.seq, m.payload, m.pid))
                    if not flags & wire.NLM_F_DUMP:
                        done = True
            if done:
                return chunks

    def dump(self) -> tuple[list[Interface], list[LocalAddress]]:
        links = [
            f.link
            for c in self._request(RTM_GETLINK, wire.NLM_F_DUMP, struct.pack("=BxHiII", 0, 0, 0, 0, 0))
            for f in decode(c)
            if isinstance(f, LinkFact)
        ]
        addrs = [
            f.addr
            for c in self._request(RTM_GETADDR, wire.NLM_F_DUMP, struct.pack("=BBBBI", 0, 0, 0, 0, 0))
            for f in decode(c)
            if isinstance(f, AddrFact)
        ]
        return links, addrs

    def default_route_via(self, a: LocalAddress) -> bool:
        """mptcpd's check: the FIB entry matching a documentation address out of this link has no destination
        (it is a default route) and leaves through the address's own interface."""
        v4 = a.addr.version == 4
        target = ROUTE_TEST_V4 if v4 else ROUTE_TEST_V6
        body = struct.pack(
            "=BBBBBBBBI",
            socket.AF_INET if v4 else socket.AF_INET6,
            32 if v4 else 128,
            0,
            0,
            0,
            0,
            0,
            0,
            RTM_F_LOOKUP_TABLE | RTM_F_FIB_MATCH,
        )
        body += wire.pack_attr(RTA_OIF, wire.u32(a.ifindex)) + wire.pack_attr(RTA_DST, target.packed)
        try:
            replies = self._request(RTM_GETROUTE, 0, body)
        except (KernelError, TimeoutError):
            return False
        for chunk in replies:
            for msg in MarshalRtnl().parse(chunk):
                if msg["header"]["type"] != RTM_NEWROUTE:
                    continue
                if msg.get_attr("RTA_DST") is not None or msg["dst_len"] != 0:
                    return False
                return int(msg.get_attr("RTA_OIF") or -1) == a.ifindex
        return False

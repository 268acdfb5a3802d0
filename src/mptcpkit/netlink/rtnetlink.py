"""The small rtnetlink subset the path-manager daemon needs (links, addresses, route lookups). Pure codec.

Every message decodes to one shape, `RtnlChange(removed, fact)` with `fact` an `Interface`, `LocalAddress`
or `KernelRoute`; the network monitor consumes exactly these, and plugins see the same `Interface`. Only the
fixed headers and the handful of attributes the network monitor reads are decoded; everything else is
skipped. (pyroute2 decodes all of rtnetlink, but importing it costs the daemon about 23 MB of RSS.)
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from mptcpkit.netlink import nlmsg
from mptcpkit.netlink.errors import DecodeError

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
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF = 1, 4
RTM_F_LOOKUP_TABLE = 0x1000
RTM_F_FIB_MATCH = 0x2000

_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254


@dataclass(frozen=True, slots=True)
class Interface:
    """A network link as the kernel reports it (mptcpd's `struct mptcpd_interface`)."""

    index: int
    name: str
    flags: int
    type: int = 0

    @property
    def up(self) -> bool:
        """IFF_UP and IFF_RUNNING: the link can carry traffic."""
        return (self.flags & (IFF_UP | IFF_RUNNING)) == (IFF_UP | IFF_RUNNING)

    @property
    def loopback(self) -> bool:
        return bool(self.flags & IFF_LOOPBACK)

    @property
    def ready(self) -> bool:
        """Up and not loopback: what mptcpd monitors by default."""
        return self.up and not self.loopback

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "name": self.name, "flags": self.flags, "ready": self.ready}


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """One address on one link."""

    ifindex: int
    addr: IPAddress
    scope: int = RT_SCOPE_UNIVERSE
    prefixlen: int = 0


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """A route message (only used to re-run route checks and to answer them)."""

    family: int
    dst: IPAddress | None
    dst_len: int
    oif: int | None


Fact = Interface | LocalAddress | KernelRoute


@dataclass(frozen=True, slots=True)
class RtnlChange:
    """The one shape of an rtnetlink fact: what the kernel said, and whether it was added or removed."""

    removed: bool
    fact: Fact


def _ip(family: int, raw: bytes) -> IPAddress:
    if family == socket.AF_INET and len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    if family == socket.AF_INET6 and len(raw) == 16:
        return ipaddress.IPv6Address(raw)
    raise DecodeError(f"bad address of {len(raw)} bytes for family {family}")


def decode_message(msg: nlmsg.Nlmsg) -> RtnlChange | None:
    """Decode one link/address/route message; None for other types and non-IP address families."""
    p = msg.payload
    if msg.type in (RTM_NEWLINK, RTM_DELLINK):
        if len(p) < _IFINFOMSG.size:
            raise DecodeError("truncated ifinfomsg")
        _, itype, index, flags, _ = _IFINFOMSG.unpack_from(p)
        attrs = nlmsg.attr_map(p[_IFINFOMSG.size :])
        name = nlmsg.get_string(attrs[IFLA_IFNAME]) if IFLA_IFNAME in attrs else f"if{index}"
        return RtnlChange(msg.type == RTM_DELLINK, Interface(index, name, flags, itype))
    if msg.type in (RTM_NEWADDR, RTM_DELADDR):
        if len(p) < _IFADDRMSG.size:
            raise DecodeError("truncated ifaddrmsg")
        family, prefixlen, _, scope, index = _IFADDRMSG.unpack_from(p)
        if family not in (socket.AF_INET, socket.AF_INET6):
            return None
        attrs = nlmsg.attr_map(p[_IFADDRMSG.size :])
        # IFA_LOCAL is the local address on point-to-point links; IFA_ADDRESS is the peer there
        raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
        if raw is None:
            return None
        addr = LocalAddress(index, _ip(family, raw), scope, prefixlen)
        return RtnlChange(msg.type == RTM_DELADDR, addr)
    if msg.type in (RTM_NEWROUTE, RTM_DELROUTE):
        if len(p) < _RTMSG.size:
            raise DecodeError("truncated rtmsg")
        family, dst_len = p[0], p[1]
        attrs = nlmsg.attr_map(p[_RTMSG.size :])
        dst = _ip(family, attrs[RTA_DST]) if RTA_DST in attrs and family in (2, 10) else None
        oif = nlmsg.get_u32(attrs[RTA_OIF]) if RTA_OIF in attrs else None
        return RtnlChange(msg.type == RTM_DELROUTE, KernelRoute(family, dst, dst_len, oif))
    return None


def decode(data: bytes) -> list[RtnlChange]:
    out: list[RtnlChange] = []
    for m in nlmsg.iter_nlmsgs(data):
        r = decode_message(m)
        if r is not None:
            out.append(r)
    return out


def req_dump_links() -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def req_dump_addrs() -> bytes:
    return _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def req_route_lookup(dst: IPAddress, oif: int) -> bytes:
    """RTM_GETROUTE body returning the FIB entry (not a cloned route) that `dst` out of `oif` matches."""
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    body = _RTMSG.pack(family, dst.max_prefixlen, 0, 0, 0, 0, 0, 0, RTM_F_LOOKUP_TABLE | RTM_F_FIB_MATCH)
    return body + nlmsg.pack_attr(RTA_OIF, nlmsg.u32(oif)) + nlmsg.pack_attr(RTA_DST, dst.packed)

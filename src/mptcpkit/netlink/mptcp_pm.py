"""The `mptcp_pm` generic-netlink family: commands, attributes, endpoints, limits, typed events. Pure codec.

Ids are written out explicitly (never tuple positions) because the kernel's enums are gapped: events jump
from CLOSED=3 to ANNOUNCED=6, SUB_ESTABLISHED=10, SUB_PRIORITY=13, LISTENER_CREATED=15. Checked against
include/uapi/linux/mptcp_pm.h (generated from Documentation/netlink/specs/mptcp_pm.yaml) and mptcp.h.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mptcpkit.netlink import nlmsg
from mptcpkit.netlink.errors import DecodeError

FAMILY_NAME = "mptcp_pm"
FAMILY_VERSION = 1
GROUP_CMDS = "mptcp_pm_cmds"
GROUP_EVENTS = "mptcp_pm_events"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Cmd(enum.IntEnum):
    ADD_ADDR = 1
    DEL_ADDR = 2
    GET_ADDR = 3
    FLUSH_ADDRS = 4
    SET_LIMITS = 5
    GET_LIMITS = 6
    SET_FLAGS = 7
    ANNOUNCE = 8
    REMOVE = 9
    SUBFLOW_CREATE = 10
    SUBFLOW_DESTROY = 11


class Attr(enum.IntEnum):
    """Top-level command attributes (MPTCP_PM_ATTR_*)."""

    ADDR = 1
    RCV_ADD_ADDRS = 2
    SUBFLOWS = 3
    TOKEN = 4
    LOC_ID = 5
    ADDR_REMOTE = 6


class AddrAttr(enum.IntEnum):
    """Attributes nested in ADDR / ADDR_REMOTE (MPTCP_PM_ADDR_ATTR_*)."""

    FAMILY = 1
    ID = 2
    ADDR4 = 3
    ADDR6 = 4
    PORT = 5
    FLAGS = 6
    IF_IDX = 7


class EndpointFlags(enum.IntFlag):
    """MPTCP_PM_ADDR_FLAG_*; LAMINAR is new in Linux 6.18."""

    SIGNAL = 1 << 0
    SUBFLOW = 1 << 1
    BACKUP = 1 << 2
    FULLMESH = 1 << 3
    IMPLICIT = 1 << 4
    LAMINAR = 1 << 5

    @classmethod
    def parse(cls, spec: str | Iterable[str] | int | EndpointFlags) -> EndpointFlags:
        """Accept 'signal,subflow', ['signal'], an int or flags; unknown names raise ValueError."""
        if isinstance(spec, int):
            return cls(spec)
        names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
        out = cls(0)
        for n in names:
            try:
                out |= cls[n.upper()]
            except KeyError:
                raise ValueError(f"unknown endpoint flag {n!r}") from None
        return out

    def names(self) -> list[str]:
        return [f.name.lower() for f in type(self) if f in self and f.name is not None]


NO_FLAGS = EndpointFlags(0)


class EventType(enum.IntEnum):
    CREATED = 1
    ESTABLISHED = 2
    CLOSED = 3
    ANNOUNCED = 6
    REMOVED = 7
    SUB_ESTABLISHED = 10
    SUB_CLOSED = 11
    SUB_PRIORITY = 13
    LISTENER_CREATED = 15
    LISTENER_CLOSED = 16


class EventAttr(enum.IntEnum):
    """Event attributes (enum mptcp_event_attr) with the kernel's put types noted."""

    TOKEN = 1  # u32
    FAMILY = 2  # u16
    LOC_ID = 3  # u8
    REM_ID = 4  # u8
    SADDR4 = 5  # be32
    SADDR6 = 6  # in6_addr
    DADDR4 = 7  # be32
    DADDR6 = 8  # in6_addr
    SPORT = 9  # be16
    DPORT = 10  # be16
    BACKUP = 11  # u8
    ERROR = 12  # u8
    FLAGS = 13  # u16
    TIMEOUT = 14  # u32
    IF_IDX = 15  # s32
    RESET_REASON = 16  # u32
    RESET_FLAGS = 17  # u32
    SERVER_SIDE = 18  # u8


class EventFlags(enum.IntFlag):
    """MPTCP_PM_EV_FLAG_* carried in the FLAGS attribute of created/established."""

    DENY_JOIN_ID0 = 1 << 0
    SERVER_SIDE = 1 << 1


# --- addresses ---------------------------------------------------------------------------------------------


def parse_ip(addr: str | IPAddress) -> IPAddress:
    if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return addr
    return ipaddress.ip_address(addr)


def _family_of(addr: IPAddress) -> int:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def encode_addr(
    addr: IPAddress | None = None,
    *,
    id: int | None = None,
    port: int | None = None,
    flags: int | None = None,
    ifindex: int | None = None,
    family: int | None = None,
) -> bytes:
    """Attributes of a nested MPTCP_PM_ATTR_ADDR / ADDR_REMOTE."""
    out = b""
    fam = _family_of(addr) if addr is not None else family
    if fam is not None:
        out += nlmsg.pack_attr(AddrAttr.FAMILY, nlmsg.u16(fam))
    if id is not None:
        out += nlmsg.pack_attr(AddrAttr.ID, nlmsg.u8(id))
    if addr is not None:
        out += nlmsg.pack_attr(AddrAttr.ADDR4 if addr.version == 4 else AddrAttr.ADDR6, addr.packed)
    if port is not None:
        out += nlmsg.pack_attr(AddrAttr.PORT, nlmsg.u16(port))
    if flags is not None:
        out += nlmsg.pack_attr(AddrAttr.FLAGS, nlmsg.u32(int(flags)))
    if ifindex is not None:
        out += nlmsg.pack_attr(AddrAttr.IF_IDX, nlmsg.s32(ifindex))
    return out


def _ip4(value: bytes) -> ipaddress.IPv4Address:
    if len(value) != 4:
        raise DecodeError(f"IPv4 address: expected 4 bytes, got {len(value)}")
    return ipaddress.IPv4Address(value)


def _ip6(value: bytes) -> ipaddress.IPv6Address:
    if len(value) != 16:
        raise DecodeError(f"IPv6 address: expected 16 bytes, got {len(value)}")
    return ipaddress.IPv6Address(value)


@dataclass(frozen=True, slots=True)
class KernelEndpoint:
    """One in-kernel PM endpoint (`ip mptcp endpoint show` line)."""

    id: int
    addr: IPAddress | None
    flags: EndpointFlags = NO_FLAGS
    port: int = 0
    ifindex: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "addr": str(self.addr) if self.addr is not None else None,
            "flags": self.flags.names(),
            "port": self.port,
            "ifindex": self.ifindex,
        }


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-namespace in-kernel PM limits."""

    subflows: int
    add_addr_accepted: int

    def to_dict(self) -> dict[str, Any]:
        return {"subflows": self.subflows, "add_addr_accepted": self.add_addr_accepted}


def decode_endpoint_attrs(nested: bytes) -> KernelEndpoint:
    a = nlmsg.attr_map(nested)
    if AddrAttr.ID not in a:
        raise DecodeError("endpoint without id")
    addr: IPAddress | None = None
    if AddrAttr.ADDR4 in a:
        addr = _ip4(a[AddrAttr.ADDR4])
    elif AddrAttr.ADDR6 in a:
        addr = _ip6(a[AddrAttr.ADDR6])
    return KernelEndpoint(
        id=nlmsg.get_u8(a[AddrAttr.ID]),
        addr=addr,
        flags=EndpointFlags(nlmsg.get_u32(a[AddrAttr.FLAGS])) if AddrAttr.FLAGS in a else EndpointFlags(0),
        port=nlmsg.get_u16(a[AddrAttr.PORT]) if AddrAttr.PORT in a else 0,
        ifindex=nlmsg.get_s32(a[AddrAttr.IF_IDX]) if AddrAttr.IF_IDX in a else 0,
    )


def decode_endpoint(payload: bytes) -> KernelEndpoint:
    """Decode a GET_ADDR reply (do or one dump part) from its genl payload."""
    genl = nlmsg.unpack_genl(payload)
    a = nlmsg.attr_map(genl.attrs)
    if Attr.ADDR not in a:
        raise DecodeError("GET_ADDR reply without ADDR")
    return decode_endpoint_attrs(a[Attr.ADDR])


def decode_limits(payload: bytes) -> Limits:
    genl = nlmsg.unpack_genl(payload)
    a = nlmsg.attr_map(genl.attrs)
    return Limits(
        subflows=nlmsg.get_u32(a[Attr.SUBFLOWS]) if Attr.SUBFLOWS in a else 0,
        add_addr_accepted=nlmsg.get_u32(a[Attr.RCV_ADD_ADDRS]) if Attr.RCV_ADD_ADDRS in a else 0,
    )


# --- requests: each returns the genl payload (genlmsghdr + attributes) ----------------------------------


def _req(cmd: Cmd, attrs: bytes = b"") -> bytes:
    return nlmsg.pack_genl(cmd, FAMILY_VERSION, attrs)


def _nest(attr: Attr, inner: bytes) -> bytes:
    return nlmsg.pack_attr(attr, inner, nested=True)


def _token(token: int | None) -> bytes:
    return nlmsg.pack_attr(Attr.TOKEN, nlmsg.u32(token)) if token is not None else b""


def req_add_addr(
    addr: IPAddress, *, id: int | None, flags: int, ifindex: int | None, port: int | None
) -> bytes:
    return _req(
        Cmd.ADD_ADDR, _nest(Attr.ADDR, encode_addr(addr, id=id, flags=flags, ifindex=ifindex, port=port))
    )


def req_del_addr(id: int, addr: IPAddress | None = None) -> bytes:
    return _req(Cmd.DEL_ADDR, _nest(Attr.ADDR, encode_addr(addr, id=id)))


def req_get_addr(id: int | None = None, token: int | None = None) -> bytes:
    """With id: GET_ADDR do; without: the payload of a GET_ADDR dump."""
    inner = _nest(Attr.ADDR, encode_addr(None, id=id)) if id is not None else b""
    return _req(Cmd.GET_ADDR, inner + _token(token))


def req_flush_addrs() -> bytes:
    return _req(Cmd.FLUSH_ADDRS, _nest(Attr.ADDR, b""))


def req_set_limits(subflows: int | None, add_addr_accepted: int | None) -> bytes:
    """Absent limits are left unchanged by the kernel."""
    attrs = b""
    if add_addr_accepted is not None:
        attrs += nlmsg.pack_attr(Attr.RCV_ADD_ADDRS, nlmsg.u32(add_addr_accepted))
    if subflows is not None:
        attrs += nlmsg.pack_attr(Attr.SUBFLOWS, nlmsg.u32(subflows))
    return _req(Cmd.SET_LIMITS, attrs)


def req_get_limits() -> bytes:
    return _req(Cmd.GET_LIMITS)


def req_set_flags(
    *,
    id: int | None,
    addr: IPAddress | None,
    flags: int,
    token: int | None = None,
    port: int | None = None,
    remote: IPAddress | None = None,
    remote_port: int | None = None,
) -> bytes:
    """In-kernel PM: id or addr + flags. User-space PM: token, local addr(+port), remote addr(+port)."""
    attrs = _nest(Attr.ADDR, encode_addr(addr, id=id, flags=flags, port=port))
    attrs += _token(token)
    if remote is not None:
        attrs += _nest(Attr.ADDR_REMOTE, encode_addr(remote, port=remote_port))
    return _req(Cmd.SET_FLAGS, attrs)


def req_announce(
    token: int, addr: IPAddress, id: int, *, port: int | None, flags: int, ifindex: int | None
) -> bytes:
    inner = encode_addr(addr, id=id, port=port, flags=flags, ifindex=ifindex)
    return _req(Cmd.ANNOUNCE, _token(token) + _nest(Attr.ADDR, inner))


def req_remove(token: int, loc_id: int) -> bytes:
    return _req(Cmd.REMOVE, _token(token) + nlmsg.pack_attr(Attr.LOC_ID, nlmsg.u8(loc_id)))


def req_subflow_create(
    token: int,
    local: IPAddress,
    remote: IPAddress,
    remote_port: int,
    *,
    local_id: int | None,
    flags: int | None,
    ifindex: int | None,
) -> bytes:
    attrs = _token(token)
    attrs += _nest(Attr.ADDR, encode_addr(local, id=local_id, flags=flags, ifindex=ifindex))
    attrs += _nest(Attr.ADDR_REMOTE, encode_addr(remote, port=remote_port))
    return _req(Cmd.SUBFLOW_CREATE, attrs)


def req_subflow_destroy(
    token: int, local: IPAddress, local_port: int, remote: IPAddress, remote_port: int
) -> bytes:
    attrs = _token(token)
    attrs += _nest(Attr.ADDR, encode_addr(local, port=local_port))
    attrs += _nest(Attr.ADDR_REMOTE, encode_addr(remote, port=remote_port))
    return _req(Cmd.SUBFLOW_DESTROY, attrs)


# Events live in mptcp_events.py (this module stays under 600 lines); the names stay importable from here.
def __getattr__(name: str) -> Any:
    from mptcpkit.netlink import mptcp_events

    if name in mptcp_events.__all__:
        return getattr(mptcp_events, name)
    raise AttributeError(name)


__all__ = [
    "FAMILY_NAME",
    "GROUP_CMDS",
    "GROUP_EVENTS",
    "AddrAttr",
    "Attr",
    "Cmd",
    "EndpointFlags",
    "EventAttr",
    "EventFlags",
    "EventType",
    "KernelEndpoint",
    "Limits",
    "decode_endpoint",
    "decode_limits",
]

"""Typed `mptcp_pm` events (the `mptcp_pm_events` multicast group) and their decoder. Pure codec.

Event ids and attributes are the family's (`mptcp_pm.EventType`, `EventAttr`, `EventFlags`); the kernel's gapped
ids are written out there.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from mptcpkit.netlink import nlmsg
from mptcpkit.netlink.errors import DecodeError
from mptcpkit.netlink.mptcp_pm import EventAttr, EventType, IPAddress, _ip4, _ip6


def _jsonable(v: Any) -> Any:
    if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(v)
    if isinstance(v, enum.Enum):
        return v.name.lower() if v.name else int(v.value)
    return v


@dataclass(frozen=True, slots=True)
class MptcpEvent:
    """Base of every decoded `mptcp_pm_events` message."""

    type: ClassVar[EventType | None] = None

    def name(self) -> str:
        return self.type.name.lower() if self.type is not None else "unknown"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.name()}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                d[f.name] = _jsonable(v)
        return d


@dataclass(frozen=True, slots=True)
class _ConnectionEvent(MptcpEvent):
    token: int
    family: int
    saddr: IPAddress | None
    daddr: IPAddress | None
    sport: int | None
    dport: int | None
    server_side: bool | None = None
    """Present since Linux 5.19; newer kernels (6.18) also carry it as EventFlags.SERVER_SIDE in `flags`."""
    flags: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectionCreated(_ConnectionEvent):
    type = EventType.CREATED


@dataclass(frozen=True, slots=True)
class ConnectionEstablished(_ConnectionEvent):
    type = EventType.ESTABLISHED


@dataclass(frozen=True, slots=True)
class ConnectionClosed(MptcpEvent):
    type = EventType.CLOSED
    token: int


@dataclass(frozen=True, slots=True)
class AddressAnnounced(MptcpEvent):
    """The peer announced an address (ADD_ADDR received)."""

    type = EventType.ANNOUNCED
    token: int
    rem_id: int
    family: int
    daddr: IPAddress | None
    dport: int | None = None


@dataclass(frozen=True, slots=True)
class AddressRemoved(MptcpEvent):
    type = EventType.REMOVED
    token: int
    rem_id: int


@dataclass(frozen=True, slots=True)
class _SubflowEvent(MptcpEvent):
    token: int
    family: int
    loc_id: int
    rem_id: int
    saddr: IPAddress | None
    daddr: IPAddress | None
    sport: int | None
    dport: int | None
    backup: bool
    if_idx: int | None = None
    error: int | None = None
    reset_reason: int | None = None
    reset_flags: int | None = None


@dataclass(frozen=True, slots=True)
class SubflowEstablished(_SubflowEvent):
    type = EventType.SUB_ESTABLISHED


@dataclass(frozen=True, slots=True)
class SubflowClosed(_SubflowEvent):
    type = EventType.SUB_CLOSED


@dataclass(frozen=True, slots=True)
class SubflowPriority(_SubflowEvent):
    type = EventType.SUB_PRIORITY


@dataclass(frozen=True, slots=True)
class _ListenerEvent(MptcpEvent):
    family: int
    saddr: IPAddress | None
    sport: int | None


@dataclass(frozen=True, slots=True)
class ListenerCreated(_ListenerEvent):
    """A PM listening socket appeared (e.g. for a `signal` endpoint with a port, or any MPTCP listen())."""

    type = EventType.LISTENER_CREATED


@dataclass(frozen=True, slots=True)
class ListenerClosed(_ListenerEvent):
    type = EventType.LISTENER_CLOSED


@dataclass(frozen=True, slots=True)
class UnknownEvent(MptcpEvent):
    """An event id this code does not know (a newer kernel); raw attributes kept for logging."""

    cmd: int
    attrs: dict[int, bytes]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "unknown", "cmd": self.cmd, "attrs": {str(k): v.hex() for k, v in self.attrs.items()}}


EVENT_CLASSES: dict[EventType, type[MptcpEvent]] = {
    EventType.CREATED: ConnectionCreated,
    EventType.ESTABLISHED: ConnectionEstablished,
    EventType.CLOSED: ConnectionClosed,
    EventType.ANNOUNCED: AddressAnnounced,
    EventType.REMOVED: AddressRemoved,
    EventType.SUB_ESTABLISHED: SubflowEstablished,
    EventType.SUB_CLOSED: SubflowClosed,
    EventType.SUB_PRIORITY: SubflowPriority,
    EventType.LISTENER_CREATED: ListenerCreated,
    EventType.LISTENER_CLOSED: ListenerClosed,
}


class _Attrs:
    """Typed accessors over one event's attributes; a missing required attribute is a DecodeError."""

    def __init__(self, raw: dict[int, bytes], what: str) -> None:
        self.raw = raw
        self.what = what

    def need(self, a: EventAttr) -> bytes:
        if a not in self.raw:
            raise DecodeError(f"{self.what} event lacks {a.name}")
        return self.raw[a]

    def token(self) -> int:
        return nlmsg.get_u32(self.need(EventAttr.TOKEN))

    def family(self) -> int:
        """FAMILY, or (announced events omit it) the family of whichever address attribute is present."""
        if EventAttr.FAMILY in self.raw:
            return nlmsg.get_u16(self.raw[EventAttr.FAMILY])
        if EventAttr.SADDR4 in self.raw or EventAttr.DADDR4 in self.raw:
            return int(socket.AF_INET)
        if EventAttr.SADDR6 in self.raw or EventAttr.DADDR6 in self.raw:
            return int(socket.AF_INET6)
        raise DecodeError(f"{self.what} event has neither FAMILY nor an address")

    def u8(self, a: EventAttr) -> int | None:
        return nlmsg.get_u8(self.raw[a]) if a in self.raw else None

    def u32(self, a: EventAttr) -> int | None:
        return nlmsg.get_u32(self.raw[a]) if a in self.raw else None

    def port(self, a: EventAttr) -> int | None:
        return nlmsg.get_be16(self.raw[a]) if a in self.raw else None

    def flags(self) -> int | None:
        if EventAttr.FLAGS not in self.raw:
            return None
        v = self.raw[EventAttr.FLAGS]
        return nlmsg.get_u16(v) if len(v) == 2 else nlmsg.get_u32(v)

    def ifidx(self) -> int | None:
        return nlmsg.get_s32(self.raw[EventAttr.IF_IDX]) if EventAttr.IF_IDX in self.raw else None

    def addr(self, v4: EventAttr, v6: EventAttr) -> IPAddress | None:
        if v4 in self.raw:
            return _ip4(self.raw[v4])
        if v6 in self.raw:
            return _ip6(self.raw[v6])
        return None


def decode_event(payload: bytes) -> MptcpEvent:
    """Decode one genl payload from the `mptcp_pm_events` group into its typed event."""
    genl = nlmsg.unpack_genl(payload)
    raw = nlmsg.attr_map(genl.attrs)
    try:
        etype = EventType(genl.cmd)
    except ValueError:
        return UnknownEvent(cmd=genl.cmd, attrs=raw)
    a = _Attrs(raw, etype.name.lower())
    cls = EVENT_CLASSES[etype]
    if etype in (EventType.CREATED, EventType.ESTABLISHED):
        side = a.u8(EventAttr.SERVER_SIDE)
        return cls(  # type: ignore[call-arg]
            token=a.token(),
            family=a.family(),
            saddr=a.addr(EventAttr.SADDR4, EventAttr.SADDR6),
            daddr=a.addr(EventAttr.DADDR4, EventAttr.DADDR6),
            sport=a.port(EventAttr.SPORT),
            dport=a.port(EventAttr.DPORT),
            server_side=None if side is None else bool(side),
            flags=a.flags(),
        )
    if etype is EventType.CLOSED:
        return ConnectionClosed(token=a.token())
    if etype is EventType.ANNOUNCED:
        return AddressAnnounced(
            token=a.token(),
            rem_id=nlmsg.get_u8(a.need(EventAttr.REM_ID)),
            family=a.family(),
            daddr=a.addr(EventAttr.DADDR4, EventAttr.DADDR6),
            dport=a.port(EventAttr.DPORT),
        )
    if etype is EventType.REMOVED:
        return AddressRemoved(token=a.token(), rem_id=nlmsg.get_u8(a.need(EventAttr.REM_ID)))
    if etype in (EventType.LISTENER_CREATED, EventType.LISTENER_CLOSED):
        return cls(  # type: ignore[call-arg]
            family=a.family(), saddr=a.addr(EventAttr.SADDR4, EventAttr.SADDR6), sport=a.port(EventAttr.SPORT)
        )
    error = a.u8(EventAttr.ERROR)
    return cls(  # type: ignore[call-arg]
        token=a.token(),
        family=a.family(),
        loc_id=nlmsg.get_u8(a.need(EventAttr.LOC_ID)),
        rem_id=nlmsg.get_u8(a.need(EventAttr.REM_ID)),
        saddr=a.addr(EventAttr.SADDR4, EventAttr.SADDR6),
        daddr=a.addr(EventAttr.DADDR4, EventAttr.DADDR6),
        sport=a.port(EventAttr.SPORT),
        dport=a.port(EventAttr.DPORT),
        backup=bool(a.u8(EventAttr.BACKUP) or 0),
        if_idx=a.ifidx(),
        error=error,
        reset_reason=a.u32(EventAttr.RESET_REASON),
        reset_flags=a.u32(EventAttr.RESET_FLAGS),
    )


def event_to_json_dict(ev: MptcpEvent) -> dict[str, Any]:
    """JSON-ready dict of an event (addresses as strings, `type` as the lower-case kernel name)."""
    return ev.to_dict()


__all__ = [
    "AddressAnnounced",
    "AddressRemoved",
    "ConnectionClosed",
    "ConnectionCreated",
    "ConnectionEstablished",
    "ListenerClosed",
    "ListenerCreated",
    "MptcpEvent",
    "SubflowClosed",
    "SubflowEstablished",
    "SubflowPriority",
    "UnknownEvent",
    "decode_event",
    "event_to_json_dict",
]

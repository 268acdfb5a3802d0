"""Client side of the control API (`mptcpkit pm connections|events|subflow-add|...`), through dbus-fast."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.pm.control import IFACE, PATH, SIGNATURES, bus_daemon_call, bus_name


async def _connect(bus: str) -> Any:
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus

    try:
        if bus == "system":
            return await MessageBus(bus_type=BusType.SYSTEM).connect()
        if bus == "session":
            return await MessageBus(bus_type=BusType.SESSION).connect()
        return await MessageBus(bus_address=bus).connect()
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"cannot reach D-Bus {bus}: {exc}") from None


async def _call(bus: str, netns: str | None, member: str, args: list[Any]) -> Any:
    from dbus_fast import Message, MessageType

    conn = await _connect(bus)
    try:
        reply = await conn.call(
            Message(
                destination=bus_name(netns),
                path=PATH,
                interface=IFACE,
                member=member,
                signature=SIGNATURES[member],
                body=args,
            )
        )
    finally:
        conn.disconnect()
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body else reply.error_name
        if reply.error_name == "org.freedesktop.DBus.Error.ServiceUnknown":
            raise UsageError(f"no mptcpkit pm with a control API on {bus} ({bus_name(netns)})")
        raise UsageError(f"{member}: {text}")
    return json.loads(reply.body[0]) if reply.body else None


def call(bus: str, netns: str | None, member: str, *args: Any) -> Any:
    """Call one control method; returns its decoded JSON result (or None)."""
    return asyncio.run(_call(bus, netns, member, list(args)))


@dataclass(frozen=True)
class EventFilter:
    types: tuple[str, ...] = ()
    """Only these event types (a D-Bus match rule per type: the bus drops the others)."""
    token: int | None = None
    count: int | None = None
    """Stop after this many events."""
    timeout: float | None = None


async def _events(
    bus: str,
    netns: str | None,
    flt: EventFilter,
    out: Callable[[dict[str, Any]], None],
    ready: Callable[[], None],
) -> None:
    from dbus_fast import MessageType

    conn = await _connect(bus)
    done = asyncio.Event()
    seen = 0

    def on_message(msg: Any) -> None:
        nonlocal seen
        if msg.message_type != MessageType.SIGNAL or msg.interface != IFACE or msg.member != "Event":
            return
        kind, tok, payload = msg.body
        if flt.token is not None and tok != flt.token:
            return
        out({"type": kind, "token": tok, **json.loads(payload)})
        seen += 1
        if flt.count is not None and seen >= flt.count:
            done.set()

    # the type filter is a D-Bus match rule (the bus drops other events); the token is checked here
    base = f"type='signal',sender='{bus_name(netns)}',interface='{IFACE}',member='Event',path='{PATH}'"
    rules = [base + f",arg0='{kind}'" for kind in flt.types] or [base]
    conn.add_message_handler(on_message)
    for rule in rules:
        await bus_daemon_call(conn, "AddMatch", "s", [rule])
    ready()  # the match rules are in place: from here on no event is missed
    try:
        await asyncio.wait_for(done.wait(), flt.timeout)
    except TimeoutError:
        pass
    finally:
        conn.disconnect()


def events(
    bus: str,
    netns: str | None,
    flt: EventFilter,
    out: Callable[[dict[str, Any]], None],
    ready: Callable[[], None] = lambda: None,
) -> None:
    """Pass the daemon's mptcp_pm events to `out` until the filter's count or timeout is reached."""
    asyncio.run(_events(bus, netns, flt, out, ready))

"""The path manager's decisions, sans-IO (the aioquic pattern): facts and time in, plugin calls out.

The core opens no socket and reads no clock. The daemon feeds it what it read (`start`, `handle_rtnl`,
`handle_pm_event`, `route_answer`, `resync_*`) with `now`, asks `get_timer()` when to call `handle_timer(now)`,
and drains `next_effect()`:

- `PluginCall(plugin, method, args, kwargs)`: call one plugin's callback (the daemon contains its errors);
- `RouteLookup(addr)`: look up the default route out of `addr`'s link, answer with `route_answer()`.

It holds the network monitor (links, addresses, which were reported), the connection table (token -> the
plugin that owns it, addresses, subflows) and mptcpd's route-check retries (1 ms, then 4, 8, 16 ms).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from mptcpkit.netlink import mptcp_events as ev
from mptcpkit.netlink.mptcp_pm import EventFlags, IPAddress
from mptcpkit.netlink.rtnetlink import Interface, LocalAddress, RtnlChange
from mptcpkit.pm import netmon
from mptcpkit.pm.plugin import SockAddr


@dataclass(frozen=True)
class PluginCall:
    plugin: str
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteLookup:
    addr: LocalAddress


Effect = PluginCall | RouteLookup


@dataclass
class Connection:
    """One MPTCP connection as the events described it."""

    token: int
    plugin: str
    laddr: str = ""
    raddr: str = ""
    server_side: bool = False
    established: bool = False
    deny_join_id0: bool = False
    subflows: set[tuple[str, str]] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "plugin": self.plugin,
            "laddr": self.laddr,
            "raddr": self.raddr,
            "server_side": self.server_side,
            "established": self.established,
            "deny_join_id0": self.deny_join_id0,
            "subflows": [list(s) for s in sorted(self.subflows)],
        }


@dataclass
class _RouteRetry:
    addr: LocalAddress
    attempt: int
    due: float


def sockaddr(addr: IPAddress | None, port: int | None) -> SockAddr:
    return SockAddr(addr if addr is not None else ipaddress.IPv4Address(0), port or 0)


_SUBFLOW_METHOD = {
    ev.SubflowEstablished: "new_subflow",
    ev.SubflowClosed: "subflow_closed",
    ev.SubflowPriority: "subflow_priority",
}


class PathManagerCore:
    """Pure state of the daemon; see the module docstring for the protocol."""

    def __init__(self, network: netmon.NetworkMonitor, plugins: list[str], default: str | None) -> None:
        self.network = network
        self.plugins = list(plugins)
        """Plugin names in dispatch (priority) order."""
        self.default = default
        self.connections: dict[int, Connection] = {}
        self.listeners: set[str] = set()
        self._retries: dict[tuple[int, IPAddress], _RouteRetry] = {}
        self._effects: deque[Effect] = deque()

    # ------------------------------------------------------------------ outputs
    def next_effect(self) -> Effect | None:
        return self._effects.popleft() if self._effects else None

    def get_timer(self) -> float | None:
        """When `handle_timer` must run next (None: no timer pending)."""
        return min((r.due for r in self._retries.values()), default=None)

    def handle_timer(self, now: float) -> None:
        for key, r in list(self._retries.items()):
            if r.due <= now:
                r.due = float("inf")  # waiting for the answer
                self._effects.append(RouteLookup(r.addr))
                self._retries[key] = r

    # ------------------------------------------------------------------ plugins
    def remove_plugin(self, name: str) -> None:
        """A plugin failed to start: no more calls to it; connections fall back on the default."""
        self.plugins = [p for p in self.plugins if p != name]
        if self.default == name:
            self.default = self.plugins[0] if self.plugins else None

    def _broadcast(self, method: str, *args: Any) -> None:
        for p in self.plugins:
            self._effects.append(PluginCall(p, method, args))

    def _reconcile_plugins(self) -> None:
        self._broadcast("reconcile")

    # ------------------------------------------------------------------ network monitor
    def start(self, links: list[Interface], addrs: list[LocalAddress], now: float) -> None:
        """The initial dumps; plugins reconcile with the kernel afterwards."""
        self._network_actions(self.network.load_initial(links, addrs), now)
        self._reconcile_plugins()

    def resync_network(self, links: list[Interface], addrs: list[LocalAddress], now: float) -> None:
        """Notifications were lost: the fresh dumps replace the view and plugins reconcile."""
        self._network_actions(self.network.resync(links, addrs), now)
        self._reconcile_plugins()

    def handle_rtnl(self, changes: list[RtnlChange], now: float) -> None:
        link_change = False
        for c in changes:
            link_change = link_change or isinstance(c.fact, Interface)
            self._network_actions(self.network.handle(c), now)
        if link_change:
            self._reconcile_plugins()

    def set_monitor_loopback(self, on: bool, now: float) -> None:
        self._network_actions(self.network.set_monitor_loopback(on), now)

    def route_answer(self, addr: LocalAddress, ok: bool, now: float) -> None:
        """The answer to a RouteLookup: report the address, retry later, or give up (mptcpd's timing)."""
        key = (addr.ifindex, addr.addr)
        retry = self._retries.pop(key, None)
        if key not in self.network.route_pending:
            return  # the address went away meanwhile
        attempt = retry.attempt if retry is not None else 0
        if not ok and attempt < len(netmon.ROUTE_RETRY_DELAYS_MS):
            due = now + netmon.ROUTE_RETRY_DELAYS_MS[attempt] / 1000
            self._retries[key] = _RouteRetry(addr, attempt + 1, due)
            return
        self._network_actions(self.network.route_result(addr, ok), now)

    def _network_actions(self, actions: list[netmon.Action], now: float) -> None:
        for a in actions:
            if isinstance(a, netmon.RouteCheck):
                self._retries.pop((a.addr.ifindex, a.addr.addr), None)
                self._effects.append(RouteLookup(a.addr))
            elif isinstance(a, netmon.NewInterface):
                self._broadcast("new_interface", a.iface)
            elif isinstance(a, netmon.UpdateInterface):
                self._broadcast("update_interface", a.iface)
            elif isinstance(a, netmon.DeleteInterface):
                self._broadcast("delete_interface", a.iface)
            elif isinstance(a, netmon.NewLocalAddress):
                self._broadcast("new_local_address", a.iface, SockAddr(a.addr.addr))
            elif isinstance(a, netmon.DeleteLocalAddress):
                self._retries.pop((a.addr.ifindex, a.addr.addr), None)
                self._broadcast("delete_local_address", a.iface, SockAddr(a.addr.addr))
        for key in [k for k in self._retries if k not in self.network.route_pending]:
            del self._retries[key]

    # ------------------------------------------------------------------ mptcp_pm events
    def _owner(self, token: int) -> str | None:
        conn = self.connections.get(token)
        if conn is not None and conn.plugin in self.plugins:
            return conn.plugin
        return self.default

    def _to_owner(self, token: int, method: str, *args: Any, **kwargs: Any) -> None:
        p = self._owner(token)
        if p is not None:
            self._effects.append(PluginCall(p, method, args, kwargs))

    def handle_pm_event(self, e: ev.MptcpEvent, now: float) -> None:
        if isinstance(e, ev.ConnectionCreated | ev.ConnectionEstablished):
            laddr, raddr = sockaddr(e.saddr, e.sport), sockaddr(e.daddr, e.dport)
            flags = e.flags or 0
            side = bool(e.server_side) or bool(flags & EventFlags.SERVER_SIDE)
            deny0 = bool(flags & EventFlags.DENY_JOIN_ID0)
            kw = {"deny_join_id0": deny0}
            if isinstance(e, ev.ConnectionCreated):
                plugin = self.default or ""
                self.connections[e.token] = Connection(
                    e.token, plugin, str(laddr), str(raddr), side, deny_join_id0=deny0
                )
                if plugin:
                    self._effects.append(
                        PluginCall(plugin, "new_connection", (e.token, laddr, raddr, side), kw)
                    )
            else:
                conn = self.connections.setdefault(
                    e.token, Connection(e.token, self.default or "", str(laddr), str(raddr), side)
                )
                conn.established = True
                conn.deny_join_id0 = conn.deny_join_id0 or deny0
                self._to_owner(e.token, "connection_established", e.token, laddr, raddr, side, **kw)
        elif isinstance(e, ev.ConnectionClosed):
            self._to_owner(e.token, "connection_closed", e.token)
            self.connections.pop(e.token, None)
        elif isinstance(e, ev.AddressAnnounced):
            self._to_owner(e.token, "new_address", e.token, e.rem_id, sockaddr(e.daddr, e.dport))
        elif isinstance(e, ev.AddressRemoved):
            self._to_owner(e.token, "address_removed", e.token, e.rem_id)
        elif isinstance(e, ev.SubflowEstablished | ev.SubflowClosed | ev.SubflowPriority):
            laddr, raddr = sockaddr(e.saddr, e.sport), sockaddr(e.daddr, e.dport)
            known = self.connections.get(e.token)
            if known is not None:
                if isinstance(e, ev.SubflowEstablished):
                    known.subflows.add((str(laddr), str(raddr)))
                elif isinstance(e, ev.SubflowClosed):
                    known.subflows.discard((str(laddr), str(raddr)))
            self._to_owner(e.token, _SUBFLOW_METHOD[type(e)], e.token, laddr, raddr, bool(e.backup))
        elif isinstance(e, ev.ListenerCreated | ev.ListenerClosed):
            laddr = sockaddr(e.saddr, e.sport)
            created = isinstance(e, ev.ListenerCreated)
            (self.listeners.add if created else self.listeners.discard)(str(laddr))
            if self.default is not None:
                method = "listener_created" if created else "listener_closed"
                self._effects.append(PluginCall(self.default, method, (laddr,)))

    def resync_connections(self, live: list[Connection]) -> None:
        """mptcp_pm events were lost: `live` is the kernel's connection list (sock_diag). Connections that
        closed meanwhile get `connection_closed`; new ones are adopted by the default plugin without a
        `new_connection` (its creation was not seen); known ones keep their plugin and subflows."""
        fresh = {c.token: c for c in live}
        for token in [t for t in self.connections if t not in fresh]:
            self._to_owner(token, "connection_closed", token)
            del self.connections[token]
        for token, c in fresh.items():
            known = self.connections.get(token)
            if known is None:
                c.plugin = self.default or ""
                self.connections[token] = c
            else:
                known.established = known.established or c.established

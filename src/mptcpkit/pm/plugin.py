"""The plugin API: mptcpd's 15 callbacks as methods of `Plugin`, and plugin discovery.

A plugin subclasses `Plugin`, sets `name` (and optionally `priority`: lower wins, as in mptcpd) and overrides
the callbacks it cares about; every callback has a no-op default. The daemon hands each plugin a `PathManager`
handle (`self.pm`) to act on the kernel. Plugins are found through the entry-point group `mptcpkit.pm_plugins`
and in `*.py` files of the plugin directory (each file's `Plugin` subclasses with a `name`); see
plugin_loader.py for the trust rules.

Routing, as in mptcpd: a new connection goes to the default plugin (`path-manager`, else the loaded plugin
with the lowest priority value); every later event of that connection goes to the same plugin (token map);
listener events go to the default plugin; network-monitor events go to every plugin, in priority order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from mptcpkit.netlink.mptcp_pm import IPAddress
from mptcpkit.netlink.rtnetlink import Interface

if TYPE_CHECKING:
    from mptcpkit.pm.handle import PathManager

ENTRY_POINT_GROUP = "mptcpkit.pm_plugins"
PRIORITY_HIGH = -1000
PRIORITY_DEFAULT = 0
PRIORITY_LOW = 1000

log = logging.getLogger("mptcpkit.pm.plugin")


@dataclass(frozen=True)
class SockAddr:
    """An IP address with a port (0 when not meaningful), like the `struct sockaddr` mptcpd passes."""

    addr: IPAddress
    port: int = 0

    def __str__(self) -> str:
        host = f"[{self.addr}]" if self.addr.version == 6 else str(self.addr)
        return f"{host}:{self.port}" if self.port else str(self.addr)


class Plugin:
    """Base class of path-manager plugins. Override what you need; defaults do nothing."""

    name: ClassVar[str] = ""
    priority: ClassVar[int] = PRIORITY_DEFAULT
    description: ClassVar[str] = ""
    needs_userspace_pm: ClassVar[bool] = False
    """True if the plugin drives subflows itself (net.mptcp.path_manager must be 'userspace')."""

    def __init__(self, pm: PathManager) -> None:
        self.pm = pm

    # -- life cycle (mptcpd's plugin init / exit)
    def start(self) -> None:
        """Called once after loading, before any event."""

    def stop(self) -> None:
        """Called once at shutdown, before the daemon removes what it added."""

    def reconcile(self) -> None:
        """Beyond mptcpd: called at start and after link changes to repair the kernel's state."""

    # -- connection events (routed by token). A plugin that adds a `deny_join_id0: bool = False` parameter
    # to these two gets the kernel's flag (the peer refuses MP_JOINs to its initial address, RFC 8684 'C'
    # bit), as mptcpd 0.13 passes it; plugins without the parameter are called as before.
    def new_connection(self, token: int, laddr: SockAddr, raddr: SockAddr, server_side: bool) -> None: ...

    def connection_established(
        self, token: int, laddr: SockAddr, raddr: SockAddr, server_side: bool
    ) -> None: ...

    def connection_closed(self, token: int) -> None: ...

    def new_address(self, token: int, id: int, raddr: SockAddr) -> None:
        """The peer announced `raddr` with address id `id`."""

    def address_removed(self, token: int, id: int) -> None: ...

    def new_subflow(self, token: int, laddr: SockAddr, raddr: SockAddr, backup: bool) -> None: ...

    def subflow_closed(self, token: int, laddr: SockAddr, raddr: SockAddr, backup: bool) -> None: ...

    def subflow_priority(self, token: int, laddr: SockAddr, raddr: SockAddr, backup: bool) -> None: ...

    # -- listener events (default plugin)
    def listener_created(self, laddr: SockAddr) -> None: ...

    def listener_closed(self, laddr: SockAddr) -> None: ...

    # -- network monitor events (every plugin)
    def new_interface(self, iface: Interface) -> None: ...

    def update_interface(self, iface: Interface) -> None: ...

    def delete_interface(self, iface: Interface) -> None: ...

    def new_local_address(self, iface: Interface, addr: SockAddr) -> None: ...

    def delete_local_address(self, iface: Interface, addr: SockAddr) -> None: ...


CALLBACKS = (
    "new_connection",
    "connection_established",
    "connection_closed",
    "new_address",
    "address_removed",
    "new_subflow",
    "subflow_closed",
    "subflow_priority",
    "listener_created",
    "listener_closed",
    "new_interface",
    "update_interface",
    "delete_interface",
    "new_local_address",
    "delete_local_address",
)


def default_plugin(
    plugins: list[Plugin], path_manager: str | None, warn: list[str] | None = None
) -> Plugin | None:
    """The plugin named `path_manager`, else (with a warning, as mptcpd) the one of lowest priority."""
    if path_manager:
        for p in plugins:
            if p.name == path_manager:
                return p
        fallback = plugins[0].name if plugins else "none"
        msg = (
            f"path-manager: plugin {path_manager!r} is not loaded "
            f"(loaded: {', '.join(p.name for p in plugins) or 'none'}); falling back on {fallback}"
        )
        if warn is not None:
            warn.append(msg)
        log.warning("%s", msg)
    return plugins[0] if plugins else None

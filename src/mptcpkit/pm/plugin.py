"""The plugin API: mptcpd's 15 callbacks as methods of `Plugin`, and plugin discovery.

A plugin subclasses `Plugin`, sets `name` (and optionally `priority`: lower wins, as in mptcpd) and overrides
the callbacks it cares about; every callback has a no-op default. The daemon hands each plugin a `PathManager`
handle (`self.pm`) to act on the kernel. Plugins are found through the entry-point group `mptcpkit.pm_plugins`
and in `*.py` files of the plugin directory (each file's `Plugin` subclasses with a `name`).

Routing, as in mptcpd: a new connection goes to the default plugin (`path-manager`, else the loaded plugin
with the lowest priority value); every later event of that connection goes to the same plugin (token map);
listener events go to the default plugin; network-monitor events go to every plugin, in priority order.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mptcpkit.errors import UsageError
from mptcpkit.netlink.mptcp_pm import IPAddress
from mptcpkit.pm.config import check_not_world_writable
from mptcpkit.pm.netmon import Interface

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

    # -- connection events (routed by token)
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


def _plugin_classes(module: Any) -> list[type[Plugin]]:
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Plugin) and obj is not Plugin and obj.name and obj.__module__ == module.__name__
    ]


def from_entry_points() -> dict[str, type[Plugin]]:
    found: dict[str, type[Plugin]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken third-party plugin must not stop the daemon
            log.error("plugin %s (%s) failed to import: %s", ep.name, ep.value, exc)
            continue
        if not (inspect.isclass(cls) and issubclass(cls, Plugin)):
            log.error("entry point %s is not a Plugin subclass", ep.name)
            continue
        found[ep.name] = cls
    return found


def from_directory(directory: Path) -> dict[str, type[Plugin]]:
    """Python plugins in `directory`; mptcpd's C plugins (*.so) there are skipped (built-ins replace them)."""
    check_not_world_writable(directory, "plugin directory")
    found: dict[str, type[Plugin]] = {}
    for so in sorted(directory.glob("*.so")):
        log.debug("skipping C plugin %s (mptcpkit loads Python plugins)", so)
    for path in sorted(directory.glob("*.py")):
        check_not_world_writable(path, "plugin file")
        mod_name = f"mptcpkit_pm_plugin_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise UsageError(f"plugin file {path} failed to load: {exc}") from exc
        for cls in _plugin_classes(module):
            found[cls.name] = cls
    return found


def discover(plugin_dir: Path | None, load: tuple[str, ...] | None) -> list[type[Plugin]]:
    """Plugins to load, sorted by priority then name; `load` limits them (unknown names are an error)."""
    found = from_entry_points()
    if plugin_dir is not None and plugin_dir.is_dir():
        found.update(from_directory(plugin_dir))
    if load is not None:
        missing = [n for n in load if n not in found]
        if missing:
            raise UsageError(
                f"load-plugins: no plugin named {', '.join(missing)}",
                hint=f"available: {', '.join(sorted(found))}",
            )
        found = {n: found[n] for n in load}
    return sorted(found.values(), key=lambda c: (c.priority, c.name))


def default_plugin(plugins: list[Plugin], path_manager: str | None) -> Plugin | None:
    if path_manager:
        for p in plugins:
            if p.name == path_manager:
                return p
        raise UsageError(
            f"path-manager: plugin {path_manager!r} is not loaded",
            hint=f"loaded: {', '.join(p.name for p in plugins) or 'none'}",
        )
    return plugins[0] if plugins else None

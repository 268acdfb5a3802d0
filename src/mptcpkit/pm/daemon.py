"""The daemon: one asyncio loop reading rtnetlink and `mptcp_pm` events and dispatching them to plugins.

Start: refuse if MPTCP is off; subscribe to events *before* dumping links/addresses (nothing slips between);
load plugins; report the initial network; let plugins reconcile with the kernel's endpoint table. Run until
SIGTERM/SIGINT. Stop: plugins stop, then everything the daemon added is removed and the limits restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mptcpkit.errors import EnvironmentProblem
from mptcpkit.netlink import mptcp_pm as ev
from mptcpkit.netlink.client import EventsLost, MptcpPmClient
from mptcpkit.netlink.errors import KernelError
from mptcpkit.pm import netmon
from mptcpkit.pm.config import Config, NotifyFlags, pm_type, require_mptcp_enabled
from mptcpkit.pm.handle import PathManager
from mptcpkit.pm.plugin import CALLBACKS, Plugin, SockAddr, default_plugin, discover
from mptcpkit.pm.rtnl import AddrFact, LinkFact, ResyncNeeded, RouteFact, RtnlMonitor

log = logging.getLogger("mptcpkit.pm")
STATE_DIR = Path("/run/mptcpkit")


def default_state_file(netns: str | None) -> Path:
    return STATE_DIR / (f"pm-{netns}.json" if netns else "pm.json")


@dataclass
class Connection:
    token: int
    plugin: str
    laddr: str = ""
    raddr: str = ""
    server_side: bool = False
    established: bool = False
    subflows: set[tuple[str, str]] = field(default_factory=set)


def _sa(addr: ev.IPAddress | None, port: int | None) -> SockAddr:
    import ipaddress

    return SockAddr(addr if addr is not None else ipaddress.IPv4Address(0), port or 0)


class Daemon:
    """Owns the sockets, the plugins and the dispatch; `run()` blocks until a stop signal."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.netns = config.netns
        self.state_file = config.state_file or default_state_file(config.netns)
        self.plugins: list[Plugin] = []
        self.default: Plugin | None = None
        self.token_map: dict[int, Plugin] = {}
        self.connections: dict[int, Connection] = {}
        self.listeners: set[str] = set()
        self.event_counts: Counter[str] = Counter()
        self.started = time.time()
        self._stop: asyncio.Event | None = None
        self._state_pending = False
        self._metrics: Any = None

    # ---------------------------------------------------------------- start / stop
    def _open(self) -> None:
        require_mptcp_enabled(self.netns)
        self.client = MptcpPmClient(self.netns)
        self.client.subscribe()
        self.rtnl = RtnlMonitor(self.netns)
        self.network = netmon.NetworkMonitor(notify=self.config.notify_flags)
        self.pm = PathManager(self.client, self.config, self.network, self.netns)
        self._adopt_previous_run()
        classes = discover(self.config.plugin_dir, self.config.load_plugins)
        self.plugins = [cls(self.pm) for cls in classes]
        self.default = default_plugin(self.plugins, self.config.path_manager)
        kind = pm_type(self.netns)
        for p in self.plugins:
            if p.needs_userspace_pm and p is self.default and kind != "userspace":
                log.warning(
                    "plugin %s drives the user-space path manager but net.mptcp.path_manager is %r "
                    "(set it with: sysctl -w net.mptcp.path_manager=userspace)",
                    p.name,
                    kind,
                )
        log.info(
            "plugins: %s (default %s)",
            ", ".join(p.name for p in self.plugins) or "none",
            self.default.name if self.default else "none",
        )
        for p in self.plugins:
            p.start()

    def _adopt_previous_run(self) -> None:
        """A previous run that died without cleaning up left a state file: take over its endpoints and
        original limits, so they are removed/restored by this run instead of colliding (mptcpd: EEXIST)."""
        try:
            old = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return
        pid = int(old.get("pid", 0))
        if pid and pid != os.getpid() and _alive(pid):
            raise EnvironmentProblem(
                f"another mptcpkit pm (pid {pid}) is running for this namespace",
                hint=f"stop it, or use another --state-file than {self.state_file}",
            )
        lim = old.get("limits_before")
        if lim:
            self.pm.limits_before = ev.Limits(int(lim["subflows"]), int(lim["add_addr_accepted"]))
        kernel = {e.id: e for e in self.client.dump_endpoints()}
        for item in old.get("owned_endpoints", []):
            e = kernel.get(int(item["id"]))
            if e is not None and str(e.addr) == item["addr"]:
                self.pm.owned[e.id] = e
                if e.addr is not None:
                    self.pm.idm.reserve(e.addr, e.id)
        log.info("took over %d endpoint(s) left by a previous run (pid %d)", len(self.pm.owned), pid)

    def _initial(self) -> None:
        links, addrs = self.rtnl.dump()
        self._apply(self.network.load_initial(links, addrs))
        self._reconcile()

    def _reconcile(self) -> None:
        for p in self.plugins:
            self._call(p, "reconcile")

    def close(self) -> None:
        for p in self.plugins:
            self._call(p, "stop")
        if self.config.restore_on_exit:
            self.pm.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        self.rtnl.close()
        self.client.close()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._open()
        try:
            self._initial()
            self._start_metrics()
            loop.add_reader(self.client.subscribe().fileno(), self._on_pm_events)
            loop.add_reader(self.rtnl.fileno(), self._on_rtnl)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            self._write_state()
            log.info("mptcpkit pm running (pid %d)", os.getpid())
            await self._stop.wait()
            log.info("stopping")
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(self.client.subscribe().fileno())
                loop.remove_reader(self.rtnl.fileno())
            self.close()

    # ---------------------------------------------------------------- dispatch helpers
    def _call(self, plugin: Plugin, name: str, *args: Any) -> None:
        try:
            getattr(plugin, name)(*args)
        except Exception:
            log.exception("plugin %s failed in %s", plugin.name, name)

    def _broadcast(self, name: str, *args: Any) -> None:
        for p in self.plugins:
            self._call(p, name, *args)

    def _schedule_state(self) -> None:
        if not self._state_pending:
            self._state_pending = True
            asyncio.get_running_loop().call_later(0.05, self._write_state)

    # ---------------------------------------------------------------- network monitor
    def _on_rtnl(self) -> None:
        try:
            facts = self.rtnl.read()
        except ResyncNeeded:
            log.warning("rtnetlink notifications lost; resynchronising")
            links, addrs = self.rtnl.dump()
            self._apply(self.network.resync(links, addrs))
            self._reconcile()
            return
        link_change = False
        for f in facts:
            if isinstance(f, LinkFact):
                link_change = True
                acts = (
                    self.network.link_removed(f.link.index)
                    if f.removed
                    else self.network.link_changed(f.link)
                )
            elif isinstance(f, AddrFact):
                if f.removed:
                    acts = self.network.address_removed(f.addr.ifindex, f.addr.addr)
                else:
                    acts = self.network.address_added(f.addr)
            elif isinstance(f, RouteFact):
                if not self.config.notify_flags & NotifyFlags.CHECK_ROUTE:
                    continue
                acts = self.network.routes_changed()
            self._apply(acts)
        if link_change:
            self._reconcile()

    def _apply(self, actions: list[netmon.Action]) -> None:
        for a in actions:
            if isinstance(a, netmon.RouteCheck):
                self._route_check(a.addr, 0)
            elif isinstance(a, netmon.NewInterface):
                self._broadcast("new_interface", a.iface)
            elif isinstance(a, netmon.UpdateInterface):
                self._broadcast("update_interface", a.iface)
            elif isinstance(a, netmon.DeleteInterface):
                self._broadcast("delete_interface", a.iface)
            elif isinstance(a, netmon.NewLocalAddress):
                log.debug("new local address %s on %s", a.addr.addr, a.iface.name)
                self._broadcast("new_local_address", a.iface, SockAddr(a.addr.addr))
            elif isinstance(a, netmon.DeleteLocalAddress):
                log.debug("local address %s gone from %s", a.addr.addr, a.iface.name)
                self._broadcast("delete_local_address", a.iface, SockAddr(a.addr.addr))
        if actions:
            self._schedule_state()

    def _route_check(self, a: netmon.LocalAddress, attempt: int) -> None:
        """mptcpd's timing: look up now; on failure retry after 1, 4, 8, 16 ms, then give up."""
        key = (a.ifindex, a.addr)
        if key not in self.network.route_pending:
            return  # address removed meanwhile
        if self.rtnl.default_route_via(a):
            self._apply(self.network.route_result(a, True))
        elif attempt < len(netmon.ROUTE_RETRY_DELAYS_MS):
            delay = netmon.ROUTE_RETRY_DELAYS_MS[attempt] / 1000
            asyncio.get_running_loop().call_later(delay, self._route_check, a, attempt + 1)
        else:
            log.debug("no default route via %s for %s", a.ifindex, a.addr)
            self._apply(self.network.route_result(a, False))

    # ---------------------------------------------------------------- mptcp_pm events
    def _on_pm_events(self) -> None:
        try:
            events = self.client.read_events()
        except EventsLost as exc:
            log.warning("%s", exc)
            return
        for e in events:
            self.event_counts[e.name()] += 1
            if self._metrics is not None:
                self._metrics["events"].labels(type=e.name()).inc()
            try:
                self._dispatch(e)
            except KernelError as exc:
                log.error("while handling %s: %s", e.name(), exc)
        if events:
            self._update_metrics()
            self._schedule_state()

    def _plugin_for(self, token: int) -> Plugin | None:
        return self.token_map.get(token, self.default)

    def _dispatch(self, e: ev.MptcpEvent) -> None:
        if isinstance(e, ev.ConnectionCreated | ev.ConnectionEstablished):
            laddr, raddr = _sa(e.saddr, e.sport), _sa(e.daddr, e.dport)
            side = bool(e.server_side) or bool((e.flags or 0) & ev.EventFlags.SERVER_SIDE)
            if isinstance(e, ev.ConnectionCreated):
                plugin = self.default
                if plugin is not None:
                    self.token_map[e.token] = plugin
                self.connections[e.token] = Connection(
                    e.token, plugin.name if plugin else "", str(laddr), str(raddr), side
                )
                if plugin is not None:
                    self._call(plugin, "new_connection", e.token, laddr, raddr, side)
            else:
                conn = self.connections.setdefault(
                    e.token, Connection(e.token, "", str(laddr), str(raddr), side)
                )
                conn.established = True
                p = self._plugin_for(e.token)
                if p is not None:
                    self._call(p, "connection_established", e.token, laddr, raddr, side)
        elif isinstance(e, ev.ConnectionClosed):
            p = self._plugin_for(e.token)
            if p is not None:
                self._call(p, "connection_closed", e.token)
            self.token_map.pop(e.token, None)
            self.connections.pop(e.token, None)
        elif isinstance(e, ev.AddressAnnounced):
            p = self._plugin_for(e.token)
            if p is not None:
                self._call(p, "new_address", e.token, e.rem_id, _sa(e.daddr, e.dport))
        elif isinstance(e, ev.AddressRemoved):
            p = self._plugin_for(e.token)
            if p is not None:
                self._call(p, "address_removed", e.token, e.rem_id)
        elif isinstance(e, ev.SubflowEstablished | ev.SubflowClosed | ev.SubflowPriority):
            laddr, raddr = _sa(e.saddr, e.sport), _sa(e.daddr, e.dport)
            sconn = self.connections.get(e.token)
            if sconn is not None:
                if isinstance(e, ev.SubflowEstablished):
                    sconn.subflows.add((str(laddr), str(raddr)))
                elif isinstance(e, ev.SubflowClosed):
                    sconn.subflows.discard((str(laddr), str(raddr)))
            name = {
                ev.SubflowEstablished: "new_subflow",
                ev.SubflowClosed: "subflow_closed",
                ev.SubflowPriority: "subflow_priority",
            }[type(e)]
            p = self._plugin_for(e.token)
            if p is not None:
                self._call(p, name, e.token, laddr, raddr, e.backup)
        elif isinstance(e, ev.ListenerCreated | ev.ListenerClosed):
            laddr = _sa(e.saddr, e.sport)
            if isinstance(e, ev.ListenerCreated):
                self.listeners.add(str(laddr))
            else:
                self.listeners.discard(str(laddr))
            if self.default is not None:
                name = "listener_created" if isinstance(e, ev.ListenerCreated) else "listener_closed"
                self._call(self.default, name, laddr)

    # ---------------------------------------------------------------- status and metrics
    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "netns": self.netns,
            "started": self.started,
            "config": {
                "config_file": str(self.config.config_file) if self.config.config_file else None,
                "path_manager": self.config.path_manager,
                "addr_flags": self.config.addr_flags.names(),
                "notify_flags": [
                    f.name.lower() for f in NotifyFlags if f in self.config.notify_flags and f.name
                ],
            },
            "plugins": [
                {"name": p.name, "priority": p.priority, "default": p is self.default} for p in self.plugins
            ],
            "interfaces": [i.to_dict() for i in self.network.links.values() if i.ready],
            "addresses": [
                {"ifindex": a.ifindex, "addr": str(a.addr)} for a in self.network.reported_addresses()
            ],
            "owned_endpoints": [e.to_dict() for e in self.pm.owned.values()],
            "limits_before": self.pm.limits_before.to_dict() if self.pm.limits_before else None,
            "connections": [
                {
                    "token": c.token,
                    "plugin": c.plugin,
                    "laddr": c.laddr,
                    "raddr": c.raddr,
                    "server_side": c.server_side,
                    "established": c.established,
                    "subflows": [list(s) for s in sorted(c.subflows)],
                }
                for c in self.connections.values()
            ],
            "listeners": sorted(self.listeners),
            "events": dict(self.event_counts),
        }

    def _write_state(self) -> None:
        self._state_pending = False
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status(), indent=1))
            os.chmod(tmp, 0o644)
            tmp.replace(self.state_file)
        except OSError as exc:
            log.warning("cannot write state file %s: %s", self.state_file, exc)

    def _start_metrics(self) -> None:
        if self.config.metrics_port is None:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        reg = CollectorRegistry()
        self._metrics = {
            "connections": Gauge("mptcpkit_pm_connections", "MPTCP connections tracked", registry=reg),
            "subflows": Gauge("mptcpkit_pm_subflows", "Subflows of tracked connections", registry=reg),
            "endpoints": Gauge(
                "mptcpkit_pm_endpoints", "In-kernel endpoints added by the daemon", registry=reg
            ),
            "events": Counter("mptcpkit_pm_events", "mptcp_pm events received", ["type"], registry=reg),
        }
        start_http_server(self.config.metrics_port, registry=reg)
        self._update_metrics()

    def _update_metrics(self) -> None:
        if self._metrics is None:
            return
        self._metrics["connections"].set(len(self.connections))
        self._metrics["subflows"].set(sum(len(c.subflows) + 1 for c in self.connections.values()))
        self._metrics["endpoints"].set(len(self.pm.owned))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def setup_logging(target: str, debug: bool) -> None:
    root = logging.getLogger("mptcpkit")
    root.handlers.clear()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    handler: logging.Handler
    if target == "null":
        handler = logging.NullHandler()
    elif target == "syslog" and Path("/dev/log").exists():
        from logging.handlers import SysLogHandler

        handler = SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("mptcpkit-pm[%(process)d]: %(message)s"))
    else:
        # "journal": systemd's journald collects a service's stderr; priority prefixes keep the levels
        import sys

        handler = logging.StreamHandler(sys.stderr)
        fmt = "<%(levelno)s>%(message)s" if target == "journal" else "%(asctime)s %(levelname)s %(message)s"
        handler.setFormatter(_JournalFormatter(fmt) if target == "journal" else logging.Formatter(fmt))
    root.addHandler(handler)


class _JournalFormatter(logging.Formatter):
    _prio: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._prio.get(record.levelno, 6)}>{record.getMessage()}"


def run_daemon(config: Config) -> None:
    setup_logging(config.log, config.debug)
    asyncio.run(Daemon(config).run())


__all__ = ["CALLBACKS", "Daemon", "default_state_file", "run_daemon"]
